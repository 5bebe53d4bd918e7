# Bot identities: one system user `bot-<name>` per bot, its own primary group, and membership of
# the shared bot group (clf-bots) that the orchestrator socket and the egress rules key on.
# Optionally runs the bot as a sandboxed systemd service. Egress restrictions for the bot's units
# are added by egress.nix; the secrets a bot lists restart its units when they change.
{ config, lib, ... }:
let
  sandbox = import ./lib/sandbox.nix;
  inherit (lib) mkOption mkIf types;
  cfg = config.clawdlets;

  botModule = { name, config, ... }: {
    options = {
      user = mkOption {
        type = types.strMatching "[a-z_][a-z0-9_-]{0,30}";
        default = "bot-${name}";
        defaultText = lib.literalExpression ''"bot-<name>"'';
        description = "System user the bot runs as (created by this module).";
      };
      secrets = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "discord_token_maren" ];
        description = "Names of `clawdlets.secrets` this bot uses; a change to any of them restarts the bot's units.";
      };
      command = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = lib.literalExpression ''"''${pkgs.mybot}/bin/mybot --config /run/secrets/rendered/mybot.json"'';
        description = "When set, run the bot as the sandboxed service `clawdlets-bot-<name>.service` with this ExecStart.";
      };
      environment = mkOption {
        type = types.attrsOf types.str;
        default = { };
        description = "Environment of the bot service (no secrets here: they would land in the Nix store).";
      };
      units = mkOption {
        type = types.listOf (types.strMatching ".+[.]service");
        default = lib.optional (config.command != null) "clawdlets-bot-${name}.service";
        defaultText = lib.literalExpression ''[ "clawdlets-bot-<name>.service" ] if command is set, else [ ]'';
        description = "systemd services that run this bot; they get the egress restrictions and secret restarts.";
      };
    };
  };

  botService = name: b: {
    description = "clawdlets bot ${name}";
    wantedBy = [ "multi-user.target" ];
    wants = [ "network-online.target" ];
    after = [ "network-online.target" ];
    inherit (b) environment;
    serviceConfig = sandbox // {
      ExecStart = b.command;
      User = b.user;
      Group = b.user;
      StateDirectory = "clawdlets-bots/${name}";
      StateDirectoryMode = "0700";
      WorkingDirectory = "/var/lib/clawdlets-bots/${name}";
      Restart = "on-failure";
      RestartSec = 5;
      # Kernel uids are unchanged (nft skuid, SO_PEERCRED at the orchestrator, file owners);
      # the bot just cannot see or signal other users' processes by uid.
      PrivateUsers = true;
      # No MemoryDenyWriteExecute: bot runtimes (node, JIT) need W+X mappings.
      RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
    };
  };
in
{
  options.clawdlets = {
    botGroup = mkOption {
      type = types.strMatching "[a-z_][a-z0-9_-]{0,30}";
      default = "clf-bots";
      description = "Group every bot user belongs to; it owns the orchestrator socket (0660).";
    };

    bots = mkOption {
      type = types.attrsOf (types.submodule botModule);
      default = { };
      example = lib.literalExpression ''{ maren = { secrets = [ "discord_token_maren" ]; command = "''${pkgs.mybot}/bin/mybot"; }; }'';
      description = "Bots on this host. Bot `x` runs as `bot-x`, a member of `clawdlets.botGroup`.";
    };
  };

  config = mkIf cfg.enable {
    users.groups = { ${cfg.botGroup} = { }; }
      // lib.mapAttrs' (_: b: lib.nameValuePair b.user { }) cfg.bots;

    users.users = lib.mapAttrs' (name: b: lib.nameValuePair b.user {
      isSystemUser = true;
      group = b.user;
      extraGroups = [ cfg.botGroup ];
      home = "/var/lib/clawdlets-bots/${name}";
      createHome = false;
      description = "clawdlets bot ${name}";
    }) cfg.bots;

    systemd.services = lib.mapAttrs' (name: b: lib.nameValuePair "clawdlets-bot-${name}" (botService name b))
      (lib.filterAttrs (_: b: b.command != null) cfg.bots);

    clawdlets.secrets = lib.mkMerge (lib.mapAttrsToList (_: b:
      lib.genAttrs b.secrets (_: { restartUnits = b.units; })) cfg.bots);

    assertions = lib.mapAttrsToList (name: b: {
      assertion = lib.length (lib.unique (lib.mapAttrsToList (_: o: o.user) cfg.bots)) == lib.length (lib.attrNames cfg.bots);
      message = "two clawdlets.bots share one user (bot ${name} runs as ${b.user}); each bot needs its own user so its files and egress rules stay separate.";
    }) cfg.bots;
  };
}
