# Unit tests of modules/lib/fleet.nix against tests/fleet/clawdlets.json (a copy of the binding
# example in docs/INTERFACES.md plus a second host): host discovery, systems, the mapped options,
# and clear errors for broken files.
let
  fl = import ../../modules/lib/fleet.nix;
  h = import ./harness.nix;
  fleet = builtins.fromJSON (builtins.readFile ../fleet/clawdlets.json);
  # The repository's own example fleet (what `secrets init` and the demo use).
  example = (fl.hostSettings (builtins.fromJSON (builtins.readFile ../../fleet/clawdlets.json)) "fleet-1").clawdlets;
  one = (fl.hostSettings fleet "fleet-1").clawdlets;
  two = (fl.hostSettings fleet "fleet-2").clawdlets;
in
{
  hosts = { expr = fl.hostNames fleet; expected = [ "fleet-1" "fleet-2" ]; };
  systems = { expr = map (fl.system fleet) [ "fleet-1" "fleet-2" ]; expected = [ "x86_64-linux" "aarch64-linux" ]; };
  hostName = { expr = (fl.hostSettings fleet "fleet-1").networking.hostName; expected = "fleet-1"; };
  modes = {
    expr = [ one.tailnet.mode one.sshExposure.mode one.egress.mode two.sshExposure.mode two.egress.mode ];
    expected = [ "tailscale" "bootstrap" "smtp-only" "tailnet" "proxy-allowlist" ];
  };
  keys = { expr = builtins.length one.sshExposure.admin.authorizedKeys; expected = 1; };
  bots = { expr = builtins.attrNames two.bots; expected = [ "ana" "bo" ]; };
  botSecrets = { expr = one.bots.maren.secrets; expected = [ "discord_token_maren" ]; };
  proxyAllow = { expr = [ two.egress.proxy.allowedDomains two.egress.proxy.bots.ana.allow two.egress.proxy.bots.bo.allow ]; expected = [ [ "api.openai.com" ".discord.com" ] [ "api.github.com" ] [ ] ]; };
  secretFile = { expr = one.secrets.discord_token_maren.sopsFile; expected = "/var/lib/clawdlets/secrets/hosts/fleet-1/discord_token_maren.yaml"; };
  secretOwner = { expr = one.secrets.discord_token_maren.owner; expected = "bot-maren"; };
  secretModeAndRestart = { expr = with one.secrets.gateway_token_maren; [ mode restartUnits ]; expected = [ "0440" [ "clawdlets-bot-maren.service" ] ]; };
  secretKeyDefaultsToName = { expr = one.secrets.wg_key.key; expected = "wg_key"; };
  neededForUsersIsRootOwned = { expr = [ one.secrets.admin_password_hash.neededForUsers (one.secrets.admin_password_hash ? owner) ]; expected = [ true false ]; };
  allSecretsMapped = { expr = builtins.length (builtins.attrNames one.secrets); expected = 6; };
  # The example's login password (kind password-hash: the sops file holds a crypt hash) is
  # installed before users, root-owned, from the host's secrets dir.
  examplePasswordHash = {
    expr = with example.secrets.admin_password_hash; [ neededForUsers sopsFile key (example.secrets.admin_password_hash ? owner) ];
    expected = [ true "/var/lib/clawdlets/secrets/hosts/fleet-1/admin_password_hash.yaml" "admin_password_hash" false ];
  };
  exampleSecretsMapped = { expr = builtins.attrNames example.secrets; expected = [ "admin_password_hash" "api_b64" "deploy_key" "discord_token_maren" "gateway_token_maren" "wg_key" ]; };
  wrongSchemaVersion = h.throws (fl.hostNames (fleet // { schemaVersion = 12; }));
  missingHosts = h.throws (fl.hostNames { schemaVersion = 1; });
  undeclaredBotSecret = h.throws (fl.hostSettings (fleet // {
    hosts = fleet.hosts // { fleet-1 = fleet.hosts.fleet-1 // { bots.maren.secrets = [ "nope" ]; }; };
  }) "fleet-1");
  badKeysType = h.throws (fl.hostSettings (fleet // {
    hosts = fleet.hosts // { fleet-1 = fleet.hosts.fleet-1 // { sshAuthorizedKeys = "ssh-ed25519 AAAA"; }; };
  }) "fleet-1");
  defaultsForMinimalHost = {
    expr = let c = (fl.hostSettings { schemaVersion = 1; hosts.x = { }; } "x").clawdlets; in [ c.tailnet.mode c.sshExposure.mode c.egress.mode ];
    expected = [ "tailscale" "bootstrap" "smtp-only" ];
  };
  passesThroughDeadline = { expr = (fl.hostSettings { schemaVersion = 1; hosts.x.sshExposure = { mode = "bootstrap"; bootstrapUntil = 1900000000; }; } "x").clawdlets.sshExposure.bootstrapUntil; expected = 1900000000; };
}
