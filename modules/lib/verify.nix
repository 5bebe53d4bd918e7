# Pure renderer of /etc/clawdlets/verify.json, the intended policy that `clawdlets verify` checks a
# live host against (shape in docs/INTERFACES.md "verify"). Null fields are left out, so the file
# only states what the configuration actually decided.
let
  inherit (builtins) elem filter attrNames listToAttrs map;
  dropNulls = a: listToAttrs (map (n: { name = n; value = a.${n}; }) (filter (n: a.${n} != null) (attrNames a)));
  check = what: allowed: v:
    if v == null || elem v allowed then v
    else throw "clawdlets verify: ${what} '${toString v}' is not one of ${toString allowed}";
in
{
  render =
    { sshExposure ? null
    , tailnet ? null
    , egress ? null
    , botUnits ? null
    , proxyUnit ? null
    , orchestrator ? null
    , securityThreshold ? null
    , secretsManifest ? null
    , tailnetInterface ? null
    , botUsers ? null
    , adminUser ? null
    , proxyPorts ? null
    }:
    dropNulls {
      sshExposure = check "sshExposure" [ "bootstrap" "tailnet" "public" ] sshExposure;
      tailnet = check "tailnet" [ "tailscale" "none" ] tailnet;
      egress = check "egress" [ "smtp-only" "proxy-allowlist" "none" ] egress;
      inherit botUnits proxyUnit secretsManifest tailnetInterface botUsers adminUser proxyPorts;
      orchestrator = if orchestrator == null then null else dropNulls orchestrator;
      securityThreshold =
        if securityThreshold == null || (securityThreshold >= 0 && securityThreshold <= 10)
        then securityThreshold
        else throw "clawdlets verify: securityThreshold must be within 0.0-10.0";
    };
}
