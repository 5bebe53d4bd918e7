# How SSH is reachable, and sshd hardening. The mode decides the firewall rules (rendered by
# firewall.nix through lib/firewall.nix):
#   tailnet   - port 22 only on the tailnet interface (the steady state);
#   bootstrap - port 22 everywhere for the first install, with real expiry: a known deadline
#               (`bootstrapUntil`) is enforced by the kernel (`meta time`), and otherwise
#               clawdlets-bootstrap-expiry closes it `bootstrapWindow` after first boot;
#   public    - port 22 everywhere for good, only with `acknowledgePublic = true`.
# sshd is key-only in every mode. This module never opens ports itself.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkIf mkDefault mkForce types;
  cfg = config.clawdlets;
  scfg = cfg.sshExposure;
  table = cfg.firewall.tableName;
  deadlineFile = "/var/lib/clawdlets/bootstrap-deadline";

  # Computes (once) and enforces the bootstrap deadline. Idempotent; run by a timer and after
  # every nftables (re)load, because a reload re-creates the bootstrap chain.
  expiryScript = pkgs.writeShellScript "clawdlets-bootstrap-expiry" ''
    set -eu
    PATH=${lib.makeBinPath [ pkgs.coreutils pkgs.gnugrep pkgs.nftables pkgs.util-linux ]}
    mkdir -p "$(dirname ${deadlineFile})"
    ${if scfg.bootstrapUntil != null then ''
      deadline=${toString scfg.bootstrapUntil}
    '' else ''
      if [ ! -s ${deadlineFile} ]; then
        # First boot in bootstrap mode: the window starts now.
        echo $(( $(date +%s) + ${toString scfg.bootstrapWindowSeconds} )) > ${deadlineFile}.tmp
        mv ${deadlineFile}.tmp ${deadlineFile}
      fi
      deadline=$(cat ${deadlineFile})
    ''}
    case "$deadline" in
      ""|*[!0-9]*)
        # Fail closed: an unreadable deadline must not keep bootstrap SSH open for good.
        logger -p auth.warning -t clawdlets "event=ssh_bootstrap_deadline_invalid ${deadlineFile} holds no Unix time; closing bootstrap SSH"
        deadline=0 ;;
    esac
    now=$(date +%s)
    if [ "$now" -ge "$deadline" ]; then
      if nft list chain inet ${table} bootstrap_ssh 2>/dev/null | grep -q accept; then
        nft ${lib.escapeShellArg (cfg.lib.firewall.closeBootstrapCommand table)}
        logger -p auth.warning -t clawdlets "event=ssh_bootstrap_closed bootstrap SSH window expired at $(date -u -d @"$deadline" +%FT%TZ); port ${lib.concatMapStringsSep "," toString scfg.ports} now only via ${cfg.tailnet.interface}"
      fi
    else
      logger -p auth.warning -t clawdlets "event=ssh_bootstrap_open SSH is in BOOTSTRAP mode and open on every interface until $(date -u -d @"$deadline" +%FT%TZ); switch clawdlets.sshExposure.mode to \"tailnet\""
    fi
  '';
in
{
  options.clawdlets.sshExposure = {
    mode = mkOption {
      type = types.enum [ "bootstrap" "tailnet" "public" ];
      default = "tailnet";
      example = "bootstrap";
      description = ''
        Where sshd is reachable. `tailnet`: only on the tailnet interface (needs
        `clawdlets.tailnet.mode = "tailscale"`). `bootstrap`: on every interface for a first install,
        closing by itself (see `bootstrapUntil`/`bootstrapWindow`), tailnet access stays.
        `public`: on every interface for good; needs `acknowledgePublic = true`.
      '';
    };

    ports = mkOption {
      type = types.nonEmptyListOf types.port;
      default = [ 22 ];
      description = "Ports sshd listens on (also `services.openssh.ports`).";
    };

    bootstrapUntil = mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      example = 1893456000;
      description = ''
        Unix time (seconds) after which bootstrap SSH closes. Enforced by the kernel: the accept
        rule carries `meta time < <deadline>`, so it stops matching even if no unit runs. When
        null, the deadline is first boot + `bootstrapWindow`.
      '';
    };

    bootstrapWindow = mkOption {
      type = types.strMatching "[0-9]+[smhd]";
      default = "24h";
      example = "2h";
      description = "How long bootstrap SSH stays open after first boot when `bootstrapUntil` is null (s, m, h or d).";
    };

    bootstrapWindowSeconds = mkOption {
      type = types.ints.positive;
      readOnly = true;
      internal = true;
      default =
        let
          m = builtins.match "([0-9]+)([smhd])" scfg.bootstrapWindow;
          n = lib.toInt (builtins.elemAt m 0);
          unit = { s = 1; m = 60; h = 3600; d = 86400; }.${builtins.elemAt m 1};
        in
        n * unit;
      description = "`bootstrapWindow` in seconds.";
    };

    acknowledgePublic = mkOption {
      type = types.bool;
      default = false;
      description = "Required for `mode = \"public\"`: you accept that SSH is reachable from the internet for good.";
    };

    sourceRanges = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "198.51.100.0/24" "2001:db8::/32" ];
      description = "In `bootstrap` and `public` mode, accept SSH only from these addresses/CIDRs (empty: from anywhere). Tailnet access is not affected.";
    };

    admin = {
      user = mkOption {
        type = types.str;
        default = "admin";
        description = "Login user created for operators when `authorizedKeys` is not empty (member of wheel).";
      };
      authorizedKeys = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "ssh-ed25519 AAAAC3Nza... alice" ];
        description = "SSH public keys of the operators (the fleet's `hosts.<host>.sshAuthorizedKeys`).";
      };
      passwordlessSudo = mkOption {
        type = types.bool;
        default = true;
        description = "Let wheel use sudo without a password (the admin has no password: SSH is key-only). Needed for `nixos-rebuild --target-host admin@host --use-remote-sudo`.";
      };
    };
  };

  config = mkIf cfg.enable (lib.mkMerge [
    {
      services.openssh = {
        enable = true;
        ports = scfg.ports;
        openFirewall = mkForce false;
        settings = {
          PasswordAuthentication = mkDefault false;
          KbdInteractiveAuthentication = mkDefault false;
          PermitRootLogin = mkDefault "prohibit-password";
          X11Forwarding = mkDefault false;
          AllowAgentForwarding = mkDefault false;
          AllowStreamLocalForwarding = mkDefault false;
          PermitTunnel = mkDefault false;
          MaxAuthTries = mkDefault 3;
          LoginGraceTime = mkDefault 30;
          ClientAliveInterval = mkDefault 300;
          ClientAliveCountMax = mkDefault 2;
          AuthenticationMethods = mkDefault "publickey";
        };
      };
    }
    (mkIf (scfg.admin.authorizedKeys != [ ]) {
      users.users.${scfg.admin.user} = {
        isNormalUser = true;
        extraGroups = [ "wheel" ];
        openssh.authorizedKeys.keys = scfg.admin.authorizedKeys;
      };
      security.sudo.wheelNeedsPassword = mkDefault (!scfg.admin.passwordlessSudo);
    })
    (mkIf (scfg.mode == "bootstrap") {
      systemd.services.clawdlets-bootstrap-expiry = {
        description = "Close bootstrap SSH when its window has expired";
        after = [ "nftables.service" ];
        wantedBy = [ "nftables.service" ];
        serviceConfig = {
          Type = "oneshot";
          ExecStart = expiryScript;
        };
      };
      # A (re)load re-creates the bootstrap chain; close it again right away when expired. The
      # "-" keeps a failing check from failing the firewall unit itself.
      systemd.services.nftables.serviceConfig.ExecStartPost = lib.mkAfter [ "-${expiryScript}" ];
      systemd.services.nftables.serviceConfig.ExecReload = lib.mkAfter [ "-${expiryScript}" ];
      systemd.timers.clawdlets-bootstrap-expiry = {
        description = "Check the bootstrap SSH window";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnBootSec = "1min";
          OnUnitActiveSec = "5min";
          AccuracySec = "30s";
        };
      };
    })
  ]);
}
