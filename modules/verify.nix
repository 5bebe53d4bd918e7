# Tells `clawdlets verify` what this host is supposed to look like: /etc/clawdlets/verify.json
# (docs/INTERFACES.md "verify") rendered from the other clawdlets options, and an optional timer
# that runs the checks and logs failures to the journal.
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.clawdlets;
  vcfg = cfg.verify;
  orch = config.services.clfOrchestrator;
  botUnits = lib.unique (lib.concatMap (b: b.units) (lib.attrValues cfg.bots));

  verifyJson = cfg.lib.verify.render {
    sshExposure = cfg.sshExposure.mode;
    tailnet = cfg.tailnet.mode;
    egress = cfg.egress.mode;
    botUnits = botUnits;
    proxyUnit = if cfg.egress.mode == "proxy-allowlist" then "clawdlets-egress-proxy.service" else null;
    orchestrator =
      if orch.enable then {
        inherit (orch) socket stateDir user group;
      } else null;
    securityThreshold = vcfg.securityThreshold;
    # Optional fields `clawdlets verify` understands (docs/verify.md).
    tailnetInterface = cfg.tailnet.interface;
    botUsers = lib.mapAttrsToList (_: b: b.user) cfg.bots;
    adminUser = if cfg.sshExposure.admin.authorizedKeys != [ ] then cfg.sshExposure.admin.user else null;
    proxyPorts = if cfg.egress.mode == "proxy-allowlist" then [ cfg.egress.proxy.port ] else null;
    secretsManifest =
      if cfg.secrets != { } || cfg.templates != { } then "${cfg.sops.manifest}" else null;
  };
in
{
  options.clawdlets.verify = {
    enable = mkOption {
      type = types.bool;
      default = cfg.enable;
      defaultText = lib.literalExpression "config.clawdlets.enable";
      description = "Install /etc/clawdlets/verify.json so that plain `clawdlets verify` knows the intended policy.";
    };

    securityThreshold = mkOption {
      type = types.nullOr (types.numbers.between 0 10);
      default = 2.0;
      description = "Highest acceptable `systemd-analyze security` exposure for the clawdlets units (null: verify's default).";
    };

    timer = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = "Run `clawdlets verify` periodically; failures are logged (and the unit fails, for alerting on failed units).";
      };
      onCalendar = mkOption {
        type = types.str;
        default = "hourly";
        description = "When the verify timer fires (systemd.time OnCalendar=).";
      };
    };

    settings = mkOption {
      type = types.attrsOf types.anything;
      default = verifyJson;
      readOnly = true;
      description = "The content of /etc/clawdlets/verify.json.";
    };
  };

  config = mkIf vcfg.enable {
    environment.etc."clawdlets/verify.json".text = builtins.toJSON verifyJson;

    systemd.services.clawdlets-verify = mkIf vcfg.timer.enable {
      description = "clawdlets verify: hardening checks of this host";
      after = [ "network.target" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.package}/bin/clawdlets verify --config /etc/clawdlets/verify.json";
        # verify reads nft, sshd -T, unit properties and file modes; the only thing it writes is
        # its cache of store paths already scanned clean (/var/lib/clawdlets/verify, 0700).
        StateDirectory = "clawdlets/verify";
        StateDirectoryMode = "0700";
        ProtectSystem = "strict";
        ProtectHome = "read-only";
        PrivateTmp = true;
        NoNewPrivileges = true;
      };
    };
    systemd.timers.clawdlets-verify = mkIf vcfg.timer.enable {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = vcfg.timer.onCalendar;
        Persistent = true;
        RandomizedDelaySec = "5m";
      };
    };
  };
}
