# Unit tests of modules/lib/manifest.nix: the sops-nix field set, the split between the normal and
# the neededForUsers manifest, and sops-nix-identical template placeholders.
let
  m = import ../../modules/lib/manifest.nix;
  h = import ./harness.nix;
  secret = name: extra: {
    inherit name;
    key = name;
    path = "/run/secrets/${name}";
    owner = "root";
    uid = 0;
    group = "root";
    gid = 0;
    mode = "0400";
    format = "yaml";
    sopsFile = "/var/lib/clawdlets/secrets/hosts/h/${name}.yaml";
    restartUnits = [ ];
    reloadUnits = [ ];
    neededForUsers = false;
  } // extra;
  secrets = {
    a = secret "a" { restartUnits = [ "bot-a.service" ]; owner = "bot-a"; };
    pw = secret "pw" { neededForUsers = true; };
  };
  settings = { keepGenerations = 1; ageKeyFile = "/var/lib/sops-nix/key.txt"; ageSshKeyPaths = [ ]; useTmpfs = false; log = [ "keyImport" "secretChanges" ]; };
  tpl = {
    env = { name = "env"; content = "TOKEN=${m.placeholder "a"}"; file = "/nix/store/x-env"; path = "/run/secrets/rendered/env"; mode = "0400"; owner = "bot-a"; uid = 0; group = null; gid = 0; restartUnits = [ ]; reloadUnits = [ ]; };
  };
  main = m.manifestFor { inherit secrets settings; };
  users = m.manifestFor { inherit secrets settings; forUsers = true; };
  withTpl = m.manifestFor { inherit secrets settings; templates = tpl; };
in
{
  topLevelKeys = {
    expr = builtins.attrNames main;
    expected = [ "ageKeyFile" "ageSshKeyPaths" "gnupgHome" "keepGenerations" "logging" "secrets" "secretsMountPoint" "sshKeyPaths" "symlinkPath" "templates" "useTmpfs" "userMode" ];
  };
  secretKeys = {
    expr = builtins.attrNames (builtins.head main.secrets);
    expected = [ "format" "gid" "group" "key" "mode" "name" "neededForUsers" "owner" "path" "reloadUnits" "restartUnits" "sopsFile" "sopsFileHash" "uid" ];
  };
  mainHasOnlyNormalSecrets = { expr = map (s: s.name) main.secrets; expected = [ "a" ]; };
  usersHasOnlyUserSecrets = { expr = map (s: s.name) users.secrets; expected = [ "pw" ]; };
  mainPaths = { expr = [ main.secretsMountPoint main.symlinkPath ]; expected = [ "/run/secrets.d" "/run/secrets" ]; };
  usersPaths = { expr = [ users.secretsMountPoint users.symlinkPath ]; expected = [ "/run/secrets-for-users.d" "/run/secrets-for-users" ]; };
  restartUnitsKept = { expr = (builtins.head main.secrets).restartUnits; expected = [ "bot-a.service" ]; };
  logging = { expr = main.logging; expected = { keyImport = true; secretChanges = true; }; };
  noPlaceholdersWithoutTemplates = !(main ? placeholderBySecretName);
  placeholderMatchesSopsNix = {
    # sops-nix: "<SOPS:" + sha256(name) + ":PLACEHOLDER>"
    expr = m.placeholder "a";
    expected = "<SOPS:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb:PLACEHOLDER>";
  };
  placeholdersForEverySecret = { expr = builtins.attrNames withTpl.placeholderBySecretName; expected = [ "a" "pw" ]; };
  templatesAreAList = { expr = map (t: t.name) withTpl.templates; expected = [ "env" ]; };
  usersManifestHasNoTemplates = { expr = (m.manifestFor { inherit secrets settings; templates = tpl; forUsers = true; }).templates; expected = [ ]; };
  jsonRoundTrip = { expr = builtins.fromJSON (builtins.toJSON withTpl); expected = withTpl; };
}
