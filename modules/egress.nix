# Outbound policy for bots.
#   smtp-only       - (default, "anti-spam") TCP and UDP to 25/465/587/2525 are rejected for bot
#                     users and bot unit cgroups, and host-wide unless `smtp.hostWide = false`;
#   proxy-allowlist - additionally, bots reach nothing but loopback: the clawdlets egress proxy
#                     (domain allowlist) on 127.0.0.1/[::1]:<port> is their only way out. Enforced
#                     twice: nft by uid/cgroup (never fails open) and IPAddressDeny=any on the units;
#   none            - no restriction (loud warning).
# The nft rules are rendered by firewall.nix; this module owns the proxy service and the per-unit
# settings of bot services.
{ config, lib, pkgs, ... }:
let
  sandbox = import ./lib/sandbox.nix;
  inherit (lib) mkOption mkIf types;
  cfg = config.clawdlets;
  ecfg = cfg.egress;
  pcfg = ecfg.proxy;
  jsonFormat = pkgs.formats.json { };
  proxyMode = ecfg.mode == "proxy-allowlist";
  proxyUrl = "http://127.0.0.1:${toString pcfg.port}";

  proxyConfig = lib.recursiveUpdate {
    listen = [ "127.0.0.1:${toString pcfg.port}" "[::1]:${toString pcfg.port}" ];
    inherit (pcfg) mode;
    allow = pcfg.allowedDomains;
    bots = lib.mapAttrs (name: b: {
      users = [ (cfg.bots.${name}.user or "bot-${name}") ];
      inherit (b) allow;
    }) pcfg.bots;
  } pcfg.settings;

  # Validated at build time by the proxy's own parser (`--check-config`: unknown keys, patterns,
  # CIDRs, loopback-only listeners).
  proxyConfigFile = pkgs.writeTextFile {
    name = "clawdlets-egress-proxy.json";
    text = builtins.toJSON proxyConfig;
    checkPhase = lib.optionalString pcfg.checkConfig ''
      ${cfg.package}/bin/clawdlets egress-proxy --config "$target" --check-config > /dev/null
    '';
  };

  botUnits = lib.unique (lib.concatMap (b: b.units) (lib.attrValues cfg.bots));
  unitName = u: lib.removeSuffix ".service" u;

  # Per-unit settings for every bot service.
  botUnitConfig = {
    serviceConfig = {
      # systemd adds the unit's cgroup to the nft set; the cgroup rules then cover every process
      # of the unit, whatever its uid.
      NFTSet = [ "cgroup:inet:${cfg.firewall.tableName}:bot_cgroups" ];
    }
    // lib.optionalAttrs proxyMode {
      IPAddressDeny = "any";
      IPAddressAllow = [ "localhost" ];
      RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
    };
    environment = lib.optionalAttrs proxyMode {
      HTTP_PROXY = proxyUrl;
      HTTPS_PROXY = proxyUrl;
      http_proxy = proxyUrl;
      https_proxy = proxyUrl;
      ALL_PROXY = proxyUrl;
      NO_PROXY = "localhost,127.0.0.1,::1";
      no_proxy = "localhost,127.0.0.1,::1";
      # Node's built-in fetch ignores *_PROXY unless told otherwise.
      NODE_USE_ENV_PROXY = "1";
    };
  };
in
{
  options.clawdlets.egress = {
    mode = mkOption {
      type = types.enum [ "smtp-only" "proxy-allowlist" "none" ];
      default = "smtp-only";
      example = "proxy-allowlist";
      description = ''
        Outbound policy. `smtp-only`: mail ports are blocked (bots always, host-wide by default).
        `proxy-allowlist`: bots reach only the loopback egress proxy, which allows the listed
        domains. `none`: no restriction.
      '';
    };

    smtp = {
      ports = mkOption {
        type = types.nonEmptyListOf types.port;
        default = [ 25 465 587 2525 ];
        description = "Mail submission/relay ports blocked (TCP and UDP) in `smtp-only` and `proxy-allowlist` mode.";
      };
      hostWide = mkOption {
        type = types.bool;
        default = true;
        description = "Block the mail ports for every user of the host, not only for bots (bots are always blocked).";
      };
      exemptUsers = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "postfix" ];
        description = "Users (e.g. a local MTA) still allowed to reach the mail ports when `hostWide` is on. Never a bot.";
      };
    };

    proxy = {
      port = mkOption {
        type = types.port;
        default = 3128;
        description = "Loopback port of the egress proxy.";
      };
      mode = mkOption {
        type = types.enum [ "enforce" "report" ];
        default = "enforce";
        description = "`report` logs what would be denied but allows it (for building an allowlist).";
      };
      allowedDomains = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "api.openai.com" ".discord.com" "*.githubusercontent.com" ];
        description = "Domains every bot may reach (squid dstdomain: `.example.com` also matches subdomains).";
      };
      bots = mkOption {
        type = types.attrsOf (types.submodule {
          options.allow = mkOption {
            type = types.listOf types.str;
            default = [ ];
            description = "Extra domains for this bot only.";
          };
        });
        default = { };
        example = { maren.allow = [ "api.github.com" ]; };
        description = "Per-bot allowlists, keyed by bot name (matched by the bot's user).";
      };
      extraBotLoopbackPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
        example = [ 53 18789 ];
        description = "Loopback TCP ports bots may connect to besides the proxy (all others are rejected for bots).";
      };
      settings = mkOption {
        type = jsonFormat.type;
        default = { };
        example = { limits.maxConnsPerBot = 64; allowRanges = [ "10.0.0.0/8" ]; };
        description = "Extra keys of the proxy config (docs/INTERFACES.md), merged over the generated ones.";
      };
      checkConfig = mkOption {
        type = types.bool;
        default = true;
        description = "Validate the proxy config at build time with `clawdlets egress-proxy --check-config`.";
      };
      configFile = mkOption {
        type = types.path;
        readOnly = true;
        default = proxyConfigFile;
        description = "The rendered proxy config passed to `clawdlets egress-proxy --config`.";
      };
    };
  };

  config = mkIf cfg.enable (lib.mkMerge [
    {
      systemd.services = lib.genAttrs (map unitName botUnits) (_: lib.mkIf (ecfg.mode != "none") botUnitConfig);

      assertions = lib.mapAttrsToList (name: _: {
        assertion = cfg.bots ? ${name};
        message = "clawdlets.egress.proxy.bots.${name} names no bot; declare clawdlets.bots.${name} or remove the entry.";
      }) pcfg.bots;
    }
    (mkIf proxyMode {
      users.users.clawdlets-proxy = {
        isSystemUser = true;
        group = "clawdlets-proxy";
        description = "clawdlets egress proxy";
      };
      users.groups.clawdlets-proxy = { };

      systemd.services.clawdlets-egress-proxy = {
        description = "clawdlets egress proxy (domain allowlist for bots)";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        before = botUnits;
        # The config sits at a stable path so a changed allowlist is a SIGHUP reload (open tunnels
        # survive), not a restart.
        reloadTriggers = [ proxyConfigFile ];
        serviceConfig = sandbox // {
          Type = "notify";
          NotifyAccess = "main";
          ExecStart = "${cfg.package}/bin/clawdlets egress-proxy --config /etc/clawdlets/egress-proxy.json";
          ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
          User = "clawdlets-proxy";
          Group = "clawdlets-proxy";
          Restart = "always";
          RestartSec = 2;
          MemoryDenyWriteExecute = true;
          # No PrivateUsers: the proxy maps connections to bot users by uid.
          # AF_NETLINK: the caller's uid comes from the kernel's socket diagnostics (sock_diag).
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
        };
      };
      environment.etc."clawdlets/egress-proxy.json".source = proxyConfigFile;
    })
  ]);
}
