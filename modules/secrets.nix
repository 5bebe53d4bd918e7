# SOPS secrets materialised into /run/secrets at activation, a drop-in for sops-nix: the same
# options (`clawdlets.secrets.<name>`, `clawdlets.templates.<name>`), the same manifest JSON
# (lib/manifest.nix), the same activation ordering. The module never decrypts anything: it
# renders the manifest, checks it at build time with `clawdlets secrets install --check-mode`, and
# runs `clawdlets secrets install --manifest` during activation.
#
# Differences from sops-nix: `sopsFile` may also be a path on the host (the fleet layout keeps
# encrypted files under /var/lib/clawdlets/secrets/hosts/<host>/, shipped by
# `nixos-anywhere --extra-files`), so secrets need not be in the Nix store at all.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkIf types literalExpression;
  cfg = config.clawdlets;
  scfg = cfg.sops;
  users = config.users.users;

  isStorePath = f: builtins.isPath f || lib.hasPrefix builtins.storeDir (toString f);

  secretModule = { name, config, ... }: {
    options = {
      name = mkOption {
        type = types.str;
        default = name;
        description = "Name of the secret; relative path under /run/secrets (a `/` makes subdirectories).";
      };
      key = mkOption {
        type = types.str;
        default = name;
        description = ''Key inside the SOPS file (`a/b` walks nested maps; `""` takes the whole file). Ignored for binary, dotenv and ini.'';
      };
      path = mkOption {
        type = types.str;
        default = if config.neededForUsers then "/run/secrets-for-users/${config.name}" else "/run/secrets/${config.name}";
        defaultText = literalExpression ''"/run/secrets/<name>" (neededForUsers: "/run/secrets-for-users/<name>")'';
        description = "Where the secret is reachable; anything other than the default becomes a symlink to it.";
      };
      format = mkOption {
        type = types.enum [ "yaml" "json" "binary" "dotenv" "ini" ];
        default = scfg.defaultSopsFormat;
        description = "Format of the SOPS file.";
      };
      sopsFile = mkOption {
        type = types.either types.path types.str;
        default = scfg.defaultSopsFile name;
        defaultText = literalExpression ''"/var/lib/clawdlets/secrets/hosts/''${config.networking.hostName}/<name>.yaml"'';
        description = ''
          The SOPS file: a Nix path (copied to the store; checked at build time) or an absolute
          path on the host (never enters the store; checked at activation).
        '';
      };
      mode = mkOption {
        type = types.strMatching "0?[0-7]{3}";
        default = "0400";
        description = "Permissions of the installed file (octal).";
      };
      owner = mkOption {
        type = types.nullOr types.str;
        default = "root";
        description = "Owner (user name, resolved at activation). Set to null to use `uid`.";
      };
      uid = mkOption {
        type = types.ints.unsigned;
        default = 0;
        description = "Owner uid when `owner` is null.";
      };
      group = mkOption {
        type = types.nullOr types.str;
        default = if config.owner != null && users ? ${config.owner} then users.${config.owner}.group else "root";
        defaultText = literalExpression "the owner's primary group";
        description = "Group (name). Set to null to use `gid`.";
      };
      gid = mkOption {
        type = types.ints.unsigned;
        default = 0;
        description = "Group gid when `group` is null.";
      };
      restartUnits = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "clawdlets-bot-maren.service" ];
        description = "Units restarted when this secret changes.";
      };
      reloadUnits = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Units reloaded when this secret changes.";
      };
      neededForUsers = mkOption {
        type = types.bool;
        default = false;
        description = "Install before users are created (to /run/secrets-for-users), e.g. for `hashedPasswordFile`. Root-owned only.";
      };
    };
  };

  templateModule = { name, config, ... }: {
    options = {
      name = mkOption { type = types.str; default = name; description = "Name of the rendered file."; };
      content = mkOption {
        type = types.lines;
        default = "";
        description = "Template text; `config.clawdlets.placeholder.<secret>` marks where a secret goes. Only placeholders, never secrets, are in the store.";
      };
      file = mkOption {
        type = types.path;
        default = pkgs.writeText "clawdlets-template-${lib.replaceStrings [ "/" ] [ "-" ] name}" config.content;
        defaultText = literalExpression "a store file holding content";
        description = "Template file (used when content is empty).";
      };
      path = mkOption { type = types.str; default = "/run/secrets/rendered/${config.name}"; description = "Path of the rendered file."; };
      mode = mkOption { type = types.strMatching "0?[0-7]{3}"; default = "0400"; description = "Permissions (octal)."; };
      owner = mkOption { type = types.nullOr types.str; default = "root"; description = "Owner (user name)."; };
      uid = mkOption { type = types.ints.unsigned; default = 0; description = "Owner uid when owner is null."; };
      group = mkOption {
        type = types.nullOr types.str;
        default = if config.owner != null && users ? ${config.owner} then users.${config.owner}.group else "root";
        defaultText = literalExpression "the owner's primary group";
        description = "Group (name).";
      };
      gid = mkOption { type = types.ints.unsigned; default = 0; description = "Group gid when group is null."; };
      restartUnits = mkOption { type = types.listOf types.str; default = [ ]; description = "Units restarted when the rendered file changes."; };
      reloadUnits = mkOption { type = types.listOf types.str; default = [ ]; description = "Units reloaded when the rendered file changes."; };
    };
  };

  # Normalised values for lib/manifest.nix: store paths as strings, hashes for change tracking.
  # A Nix path is copied to the store by interpolation (like sops-nix's toJSON of a path); a host
  # path stays a plain string and never enters the store.
  forManifest = s: s // {
    sopsFile = if builtins.isPath s.sopsFile then "${s.sopsFile}" else s.sopsFile;
    sopsFileHash = if builtins.isPath s.sopsFile then builtins.hashFile "sha256" s.sopsFile else "";
  };
  templatesForManifest = lib.mapAttrs (_: t: t // { file = "${t.file}"; }) cfg.templates;

  allInStore = lib.all (s: isStorePath s.sopsFile) (lib.attrValues cfg.secrets);
  checkMode = if scfg.validateSopsFiles && allInStore then "sopsfile" else "manifest";

  settings = {
    inherit (scfg) keepGenerations useTmpfs log;
    ageKeyFile = scfg.ageKeyFile;
    ageSshKeyPaths = scfg.ageSshKeyPaths;
  };

  manifestFile = suffix: forUsers:
    pkgs.writeTextFile {
      name = "clawdlets-manifest${suffix}.json";
      text = builtins.toJSON (cfg.lib.manifest.manifestFor {
        secrets = lib.mapAttrs (_: forManifest) cfg.secrets;
        templates = templatesForManifest;
        inherit settings forUsers;
      });
      checkPhase = ''
        ${scfg.validationPackage}/bin/clawdlets secrets install --check-mode ${checkMode} --manifest "$target"
      '';
    };

  manifest = manifestFile "" false;
  manifestForUsers = manifestFile "-for-users" true;

  hasUserSecrets = lib.any (s: s.neededForUsers) (lib.attrValues cfg.secrets);
  hasSecrets = cfg.secrets != { } || cfg.templates != { };

  genKey = lib.optionalString scfg.generateAgeKey " --generate-age-key";
  # Units restart through systemctl when the installer runs as a unit (not from activation).
  systemdEnv = {
    HOME = "/var/empty";
    SOPS_RESTART_UNITS_VIA_SYSTEMCTL = "1";
  };

  # Environment of the installer: no HOME probing (sops >= 3.10 looks at ~/.ssh), no inherited
  # SOPS_* from the activating shell.
  installCmd = extra: ''
    env -u SOPS_AGE_KEY -u SOPS_AGE_KEY_FILE -u SOPS_AGE_KEY_CMD HOME=/var/empty \
      ${cfg.package}/bin/clawdlets secrets install ${extra} \
      ''${NIXOS_ACTION:+$([ "$NIXOS_ACTION" = dry-activate ] && echo --dry-activate)}'';
in
{
  options.clawdlets = {
    secrets = mkOption {
      type = types.attrsOf (types.submodule secretModule);
      default = { };
      example = literalExpression ''
        {
          discord_token_maren = { owner = "bot-maren"; restartUnits = [ "clawdlets-bot-maren.service" ]; };
          admin_password_hash.neededForUsers = true;
        }'';
      description = "Secrets decrypted at activation into /run/secrets/<name> (sops-nix compatible).";
    };

    templates = mkOption {
      type = types.attrsOf (types.submodule templateModule);
      default = { };
      example = literalExpression ''{ "maren.env".content = "DISCORD_TOKEN=''${config.clawdlets.placeholder.discord_token_maren}"; }'';
      description = "Files rendered from secrets at activation into /run/secrets/rendered/<name>.";
    };

    placeholder = mkOption {
      type = types.attrsOf types.str;
      readOnly = true;
      default = lib.mapAttrs (n: _: cfg.lib.manifest.placeholder n) cfg.secrets;
      defaultText = literalExpression "<SOPS:sha256(name):PLACEHOLDER> per secret";
      description = "Placeholder strings for templates (identical to sops-nix's).";
    };

    sops = {
      defaultSopsFile = mkOption {
        type = types.functionTo (types.either types.path types.str);
        default = name: "/var/lib/clawdlets/secrets/hosts/${config.networking.hostName}/${name}.yaml";
        defaultText = literalExpression ''name: "/var/lib/clawdlets/secrets/hosts/''${config.networking.hostName}/''${name}.yaml"'';
        description = "The SOPS file of a secret that sets no `sopsFile`, as a function of its name.";
      };
      defaultSopsFormat = mkOption {
        type = types.enum [ "yaml" "json" "binary" "dotenv" "ini" ];
        default = "yaml";
        description = "Format of secrets that set none.";
      };
      ageKeyFile = mkOption {
        type = types.nullOr types.str;
        default = "/var/lib/sops-nix/key.txt";
        description = "Host age identity file (never in the Nix store). nixos-anywhere --extra-files puts it there on first install.";
      };
      generateAgeKey = mkOption {
        type = types.bool;
        default = false;
        description = "Create `ageKeyFile` at activation when it is missing (then add its recipient to the fleet and rekey).";
      };
      ageSshKeyPaths = mkOption {
        type = types.listOf types.str;
        default = map (k: k.path) (lib.filter (k: k.type == "ed25519") config.services.openssh.hostKeys);
        defaultText = literalExpression "the ed25519 services.openssh.hostKeys";
        description = "SSH ed25519 host keys also used as age identities.";
      };
      keepGenerations = mkOption {
        type = types.ints.unsigned;
        default = 1;
        description = "Secret generations kept in /run/secrets.d (0: never prune).";
      };
      useTmpfs = mkOption {
        type = types.bool;
        default = false;
        description = "Mount tmpfs (noswap) instead of ramfs for /run/secrets.d.";
      };
      log = mkOption {
        type = types.listOf (types.enum [ "keyImport" "secretChanges" ]);
        default = [ "keyImport" "secretChanges" ];
        description = "What the installer logs during activation.";
      };
      validateSopsFiles = mkOption {
        type = types.bool;
        default = true;
        description = "Parse the SOPS files at build time (`--check-mode sopsfile`) when they are all in the store; otherwise only the manifest is checked.";
      };
      validationPackage = mkOption {
        type = types.package;
        default = cfg.package;
        defaultText = literalExpression "config.clawdlets.package";
        description = "clawdlets built for the build machine, for the build-time check (differs when cross-compiling).";
      };
      useSystemdActivation = mkOption {
        type = types.bool;
        default = (config.systemd.sysusers.enable or false) || (config.services.userborn.enable or false);
        defaultText = literalExpression "config.systemd.sysusers.enable || config.services.userborn.enable";
        description = "Install secrets from early-boot systemd units instead of activation snippets (required with systemd-sysusers/userborn, where users are not created by activation).";
      };
      manifest = mkOption {
        type = types.path;
        readOnly = true;
        default = manifest;
        description = "The rendered manifest (for `clawdlets verify --manifest` and debugging).";
      };
    };
  };

  config = mkIf (cfg.enable && hasSecrets) (lib.mkMerge [
    {
      assertions =
        [
          {
            assertion = scfg.ageKeyFile == null || !(lib.hasPrefix builtins.storeDir scfg.ageKeyFile);
            message = "clawdlets.sops.ageKeyFile is inside the world-readable Nix store; point it at a file on the host (default /var/lib/sops-nix/key.txt).";
          }
          {
            assertion = scfg.ageKeyFile != null || scfg.ageSshKeyPaths != [ ];
            message = "clawdlets secrets have no key to decrypt with: set clawdlets.sops.ageKeyFile or clawdlets.sops.ageSshKeyPaths.";
          }
        ]
        ++ lib.concatLists (lib.mapAttrsToList (n: s: [
          {
            assertion = !s.neededForUsers || ((s.owner == null || s.owner == "root") && (s.group == null || s.group == "root") && s.uid == 0 && s.gid == 0);
            message = "clawdlets.secrets.${n} has neededForUsers = true and must be owned by root (it is installed before users exist); remove owner/group.";
          }
          {
            assertion = builtins.isPath s.sopsFile || lib.hasPrefix "/" s.sopsFile;
            message = "clawdlets.secrets.${n}.sopsFile = \"${toString s.sopsFile}\" is neither a Nix path nor an absolute path on the host.";
          }
          {
            assertion = s.owner == null || s.owner == "root" || users ? ${s.owner};
            message = "clawdlets.secrets.${n}.owner = \"${toString s.owner}\" is not a user of this host (users.users); declare it or use `uid`.";
          }
        ]) cfg.secrets);
    }

    # Classic activation: snippets, like sops-nix.
    (mkIf (!scfg.useSystemdActivation) {
      system.activationScripts = {
        setupSecrets = {
          deps = [ "specialfs" "users" "groups" ];
          supportsDryActivation = true;
          text = ''
            [ -e /run/current-system ] || echo "clawdlets: installing secrets..."
            ${installCmd "--manifest ${manifest}${genKey}"} \
              || echo "clawdlets: installing secrets FAILED; /run/secrets keeps the previous generation" >&2
          '';
        };
      }
      // lib.optionalAttrs hasUserSecrets {
        setupSecretsForUsers = {
          deps = [ "specialfs" ];
          supportsDryActivation = true;
          text = ''
            ${installCmd "--manifest ${manifestForUsers} --ignore-passwd${genKey}"} \
              || echo "clawdlets: installing secrets for users FAILED" >&2
          '';
        };
        users.deps = [ "setupSecretsForUsers" ];
      };
    })

    # systemd activation (systemd-sysusers/userborn hosts): oneshot units in early boot, re-run
    # on switch through sysinit-reactivation.target. Unlike sops-nix they are ordered
    # Before=sysinit.target, so no service can start before its secrets exist.
    (mkIf scfg.useSystemdActivation {
      systemd.services.clawdlets-secrets = {
        description = "clawdlets: install secrets into /run/secrets";
        wantedBy = [ "sysinit.target" ];
        requiredBy = [ "sysinit-reactivation.target" ];
        before = [ "sysinit.target" "sysinit-reactivation.target" ];
        after = [ "local-fs.target" "systemd-sysusers.service" "userborn.service" ]
          ++ lib.optional hasUserSecrets "clawdlets-secrets-for-users.service";
        unitConfig = {
          DefaultDependencies = false;
          RequiresMountsFor = lib.optional (scfg.ageKeyFile != null) scfg.ageKeyFile ++ scfg.ageSshKeyPaths;
        };
        environment = systemdEnv;
        restartTriggers = [ manifest ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${cfg.package}/bin/clawdlets secrets install --manifest ${manifest}${genKey}";
        };
      };
      systemd.services.clawdlets-secrets-for-users = mkIf hasUserSecrets {
        description = "clawdlets: install secrets needed to create users";
        wantedBy = [ "sysinit.target" ];
        requiredBy = [ "sysinit-reactivation.target" ];
        before = [ "systemd-sysusers.service" "userborn.service" "sysinit.target" "sysinit-reactivation.target" ];
        after = [ "local-fs.target" ];
        unitConfig = {
          DefaultDependencies = false;
          RequiresMountsFor = lib.optional (scfg.ageKeyFile != null) scfg.ageKeyFile ++ scfg.ageSshKeyPaths;
        };
        environment = systemdEnv;
        restartTriggers = [ manifestForUsers ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${cfg.package}/bin/clawdlets secrets install --manifest ${manifestForUsers} --ignore-passwd${genKey}";
        };
      };
    })
  ]);
}
