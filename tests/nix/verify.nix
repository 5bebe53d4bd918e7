# Unit tests of modules/lib/verify.nix: /etc/clawdlets/verify.json carries exactly the decided
# policy, in the INTERFACES.md field names.
let
  v = import ../../modules/lib/verify.nix;
  h = import ./harness.nix;
  full = v.render {
    sshExposure = "tailnet";
    tailnet = "tailscale";
    egress = "proxy-allowlist";
    botUnits = [ "clawdlets-bot-maren.service" ];
    proxyUnit = "clawdlets-egress-proxy.service";
    orchestrator = { socket = "/run/clf/orchestrator.sock"; stateDir = "/var/lib/clf/orchestrator"; user = "clf-orchestrator"; group = "clf-bots"; };
    securityThreshold = 2.0;
    secretsManifest = "/nix/store/x-manifest.json";
  };
in
{
  keys = { expr = builtins.attrNames full; expected = [ "botUnits" "egress" "orchestrator" "proxyUnit" "secretsManifest" "securityThreshold" "sshExposure" "tailnet" ]; };
  optionalKeys = {
    expr = v.render { tailnetInterface = "tailscale0"; botUsers = [ "bot-a" ]; adminUser = "admin"; proxyPorts = [ 3128 ]; };
    expected = { tailnetInterface = "tailscale0"; botUsers = [ "bot-a" ]; adminUser = "admin"; proxyPorts = [ 3128 ]; };
  };
  nullsDropped = { expr = v.render { sshExposure = "bootstrap"; }; expected = { sshExposure = "bootstrap"; }; };
  orchestratorNullsDropped = { expr = (v.render { orchestrator = { socket = "/s"; user = null; }; }).orchestrator; expected = { socket = "/s"; }; };
  rejectsBadMode = h.throws (v.render { egress = "smtp"; });
  rejectsBadThreshold = h.throws (v.render { securityThreshold = 11; });
}
