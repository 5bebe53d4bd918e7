# Pure renderer of the secrets manifest that `clawdlets secrets install --manifest` reads. The
# field set is sops-nix's (modules/sops/manifest-for.nix serialises each secret's options whole),
# so a manifest written for sops-install-secrets and one written here are interchangeable.
#
# It only shapes data: owners are names (resolved by the installer through NSS at activation),
# nothing is read from disk and nothing is decrypted.
let
  inherit (builtins) attrNames attrValues filter hashString listToAttrs map;

  # The placeholder a template uses for a secret, byte-identical to sops-nix's
  # `<SOPS:sha256(name):PLACEHOLDER>` so templates move between the two unchanged.
  placeholder = name: "<SOPS:${hashString "sha256" name}:PLACEHOLDER>";

  secretFields = s: {
    inherit (s) name key path owner uid group gid mode format sopsFile restartUnits reloadUnits
      neededForUsers;
    sopsFileHash = s.sopsFileHash or "";
  };

  templateFields = t: {
    inherit (t) name content file path mode owner uid group gid restartUnits reloadUnits;
  };

  # settings: { keepGenerations, ageKeyFile, ageSshKeyPaths, useTmpfs, log, gnupgHome, sshKeyPaths }
  # secrets / templates: attrsets name -> normalised option values (the modules' submodule config).
  manifestFor = { secrets, templates ? { }, settings, forUsers ? false }:
    let
      selected = filter (s: s.neededForUsers == forUsers) (attrValues secrets);
      tpls = if forUsers then [ ] else map templateFields (attrValues templates);
    in
    {
      secrets = map secretFields selected;
      secretsMountPoint = if forUsers then "/run/secrets-for-users.d" else "/run/secrets.d";
      symlinkPath = if forUsers then "/run/secrets-for-users" else "/run/secrets";
      keepGenerations = settings.keepGenerations;
      gnupgHome = settings.gnupgHome or null;
      sshKeyPaths = settings.sshKeyPaths or [ ];
      ageKeyFile = settings.ageKeyFile;
      ageSshKeyPaths = settings.ageSshKeyPaths;
      useTmpfs = settings.useTmpfs;
      templates = tpls;
      userMode = false;
      logging = {
        keyImport = builtins.elem "keyImport" settings.log;
        secretChanges = builtins.elem "secretChanges" settings.log;
      };
    }
    // (if tpls == [ ] then { } else {
      placeholderBySecretName = listToAttrs (map (n: { name = n; value = placeholder n; })
        (attrNames secrets));
    });
in
{
  inherit placeholder manifestFor;
}
