# services.clfOrchestrator: the bot-facing orchestrator daemon (`clawdlets orchestrator serve`).
# systemd owns the socket (0660, group clf-bots) and starts the daemon on demand as a dedicated
# user with a 0700 state directory, Type=notify with a watchdog, and a sandbox aiming at a
# `systemd-analyze security` exposure <= 2.0. Callers are identified by the daemon through
# SO_PEERCRED, which is why PrivateUsers= stays off (it would map every bot uid to nobody).
{ config, lib, pkgs, ... }:
let
  sandbox = import ./lib/sandbox.nix;
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;
  cfg = config.services.clfOrchestrator;
  jsonFormat = pkgs.formats.json { };
  stateDirName = lib.removePrefix "/var/lib/" cfg.stateDir;
  needsNetwork = cfg.cattleListen != null || cfg.allowedAddresses != [ ];

  # Flags shared by `serve` and the build-time `check-config`.
  flags = [
    "--socket" cfg.socket
    "--state" "${cfg.stateDir}/state.sqlite"
    "--group" cfg.group
  ] ++ lib.optionals (cfg.cattleListen != null) [ "--cattle-listen" cfg.cattleListen ];

  # The settings, validated at build time by the daemon's own parser (unknown keys, ranges), so a
  # bad config fails `nixos-rebuild` instead of the service.
  configFile = pkgs.writeTextFile {
    name = "clf-orchestrator.json";
    text = builtins.toJSON cfg.settings;
    checkPhase = lib.optionalString cfg.checkConfig ''
      ${cfg.package}/bin/clawdlets orchestrator check-config ${lib.escapeShellArgs flags} --config "$target" > /dev/null
    '';
  };

  args = [ "orchestrator" "serve" ] ++ flags ++ [ "--config" "${configFile}" ];
in
{
  options.services.clfOrchestrator = {
    enable = mkEnableOption "the clawdlets orchestrator (bot jobs over a unix socket, SQLite state)";

    package = mkOption {
      type = types.package;
      default = config.clawdlets.package;
      defaultText = literalExpression "config.clawdlets.package";
      description = "Package providing `clawdlets`.";
    };

    user = mkOption {
      type = types.str;
      default = "clf-orchestrator";
      description = "Dedicated system user of the daemon (created by this module).";
    };

    group = mkOption {
      type = types.str;
      default = config.clawdlets.botGroup;
      defaultText = literalExpression "config.clawdlets.botGroup (\"clf-bots\")";
      description = "Group owning the socket (mode 0660): only its members (the bots) can connect.";
    };

    socket = mkOption {
      type = types.strMatching "/run/.+";
      default = "/run/clf/orchestrator.sock";
      description = "Path of the unix socket.";
    };

    socketActivation = mkOption {
      type = types.bool;
      default = true;
      description = ''
        systemd creates and owns the socket (clf-orchestrator.socket) and passes it to the daemon
        (LISTEN_FDS). When false the daemon binds `socket` itself and applies `group`.
      '';
    };

    stateDir = mkOption {
      type = types.strMatching "/var/lib/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*";
      default = "/var/lib/clf/orchestrator";
      description = "State directory, mode 0700, owned by `user`; the SQLite database is `<stateDir>/state.sqlite`.";
    };

    cattleListen = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "100.64.0.1:18800";
      description = "Address for cattle callbacks (`--cattle-listen`); null keeps the daemon off the network.";
    };

    allowedAddresses = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "100.64.0.0/10" ];
      description = "Addresses/CIDRs the daemon may talk to besides loopback (IPAddressAllow=), e.g. the tailnet or a cloud API.";
    };

    watchdogSec = mkOption {
      type = types.ints.positive;
      default = 30;
      description = "WatchdogSec= of the service: the daemon must send WATCHDOG=1 within this many seconds.";
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = "Validate `settings` at build time with `clawdlets orchestrator check-config` (turn off when cross-compiling).";
    };

    settings = mkOption {
      type = jsonFormat.type;
      default = { };
      example = literalExpression ''
        {
          adminGroup = "wheel";
          bootstrapTtlSeconds = 600;
          cattle = { backend = "local"; };
        }'';
      description = "Everything else of the daemon's config (docs/INTERFACES.md), rendered verbatim to the `--config` JSON file.";
    };
  };

  config = mkIf cfg.enable {
    users.users.${cfg.user} = {
      isSystemUser = true;
      group = cfg.user;
      description = "clawdlets orchestrator";
    };
    users.groups.${cfg.user} = { };
    users.groups.${cfg.group} = { };

    assertions = [
      {
        assertion = cfg.user != "root";
        message = "services.clfOrchestrator.user must not be root; the daemon runs unprivileged.";
      }
      {
        assertion = !(lib.hasPrefix "/run/clf-orchestrator/" cfg.socket);
        message = "services.clfOrchestrator.socket must not live in /run/clf-orchestrator (the daemon's private runtime directory); use /run/clf/orchestrator.sock.";
      }
    ];

    systemd.sockets.clf-orchestrator = mkIf cfg.socketActivation {
      description = "clawdlets orchestrator socket";
      wantedBy = [ "sockets.target" ];
      listenStreams = [ cfg.socket ];
      socketConfig = {
        SocketUser = cfg.user;
        SocketGroup = cfg.group;
        SocketMode = "0660";
        DirectoryMode = "0755";
        RemoveOnStop = true;
      };
    };

    systemd.services.clf-orchestrator = {
      description = "clawdlets orchestrator";
      wantedBy = lib.optional (!cfg.socketActivation) "multi-user.target";
      requires = lib.optional cfg.socketActivation "clf-orchestrator.socket";
      after = lib.optional cfg.socketActivation "clf-orchestrator.socket" ++ [ "network.target" ];
      restartTriggers = [ configFile ];
      serviceConfig = sandbox // {
        Type = "notify";
        NotifyAccess = "main";
        WatchdogSec = cfg.watchdogSec;
        ExecStart = lib.escapeShellArgs ([ "${cfg.package}/bin/clawdlets" ] ++ args);
        Restart = "on-failure";
        RestartSec = 2;

        User = cfg.user;
        Group = cfg.user;
        # Needed to hand the socket to `group` when the daemon binds it itself.
        SupplementaryGroups = lib.optional (!cfg.socketActivation) cfg.group;
        StateDirectory = stateDirName;
        StateDirectoryMode = "0700";
        # Private runtime files; the socket's own directory belongs to the socket unit (or to
        # this service when it binds the socket itself).
        RuntimeDirectory = if cfg.socketActivation then "clf-orchestrator" else builtins.baseNameOf (builtins.dirOf cfg.socket);
        RuntimeDirectoryMode = if cfg.socketActivation then "0700" else "0755";

        # Sandbox beyond the shared baseline (systemd-analyze security clf-orchestrator.service).
        DevicePolicy = "closed";
        PrivateNetwork = !needsNetwork;
        PrivateIPC = true;
        MemoryDenyWriteExecute = true;
        KeyringMode = "private";
        SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
        SystemCallErrorNumber = "EPERM";
        RestrictAddressFamilies = [ "AF_UNIX" ] ++ lib.optionals needsNetwork [ "AF_INET" "AF_INET6" ];
        IPAddressDeny = "any";
        IPAddressAllow = [ "localhost" ] ++ cfg.allowedAddresses;
      };
    };
  };
}
