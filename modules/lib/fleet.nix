# Pure translation of `fleet/clawdlets.json` (schemaVersion 1, shape in docs/INTERFACES.md and
# docs/fleet.schema.json) into NixOS option values for one host. The flake turns every host into
# a nixosConfiguration with these values plus the clawdlets modules; the module option types
# (enums) then reject anything this function passes through unchecked.
#
# It validates the structure it relies on and throws with the JSON path when that is wrong; it does
# not generate secrets or touch the network (the `clawdlets` CLI owns that).
let
  inherit (builtins) attrNames hasAttr isAttrs isList isString mapAttrs throw toString;

  fail = path: msg: throw "fleet/clawdlets.json: ${path}: ${msg}";

  attrsAt = path: v: if isAttrs v then v else fail path "must be an object";
  listAt = path: v: if isList v then v else fail path "must be an array";
  strAt = path: v: if isString v then v else fail path "must be a string";

  # Where `clawdlets secrets init`/nixos-anywhere --extra-files put a host's encrypted secrets.
  secretsDir = host: "/var/lib/clawdlets/secrets/hosts/${host}";

  load = fleet:
    let f = attrsAt "(top level)" fleet; in
    if (f.schemaVersion or null) != 1
    then fail "schemaVersion" "expected 1, got ${toString (f.schemaVersion or "nothing")}; migrate the file with the clawdlets CLI"
    else f // { hosts = attrsAt "hosts" (f.hosts or (fail "hosts" "is missing")); };

  hostNames = fleet: attrNames (load fleet).hosts;

  system = fleet: name: ((load fleet).hosts.${name}).system or "x86_64-linux";

  # NixOS option values (a module attrset) for host `name`.
  hostSettings = fleet: name:
    let
      f = load fleet;
      p = "hosts.${name}";
      h = attrsAt p f.hosts.${name};
      bots = attrsAt "${p}.bots" (h.bots or { });
      secrets = attrsAt "${p}.secrets" (h.secrets or { });
      ssh = attrsAt "${p}.sshExposure" (h.sshExposure or { });
      egress = attrsAt "${p}.egress" (h.egress or { });
      tailnet = attrsAt "${p}.tailnet" (h.tailnet or { });
      opt = attrs: key: if hasAttr key attrs then { ${key} = attrs.${key}; } else { };
    in
    {
      networking.hostName = name;
      clawdlets = {
        enable = true;
        tailnet = { mode = tailnet.mode or "tailscale"; };
        sshExposure = {
          mode = ssh.mode or "bootstrap";
          admin.authorizedKeys =
            map (k: strAt "${p}.sshAuthorizedKeys[]" k) (listAt "${p}.sshAuthorizedKeys" (h.sshAuthorizedKeys or [ ]));
        }
        // opt ssh "bootstrapUntil" // opt ssh "acknowledgePublic" // opt ssh "sourceRanges";
        egress = {
          mode = egress.mode or "smtp-only";
          proxy.allowedDomains = listAt "${p}.egress.allowedDomains" (egress.allowedDomains or [ ]);
          proxy.bots = mapAttrs (b: v: { allow = listAt "${p}.bots.${b}.egressAllow" (v.egressAllow or [ ]); }) bots;
        };
        bots = mapAttrs
          (b: v: {
            secrets = map (s:
              if hasAttr s secrets then s
              else fail "${p}.bots.${b}.secrets" "secret '${s}' is not declared in ${p}.secrets")
              (listAt "${p}.bots.${b}.secrets" (v.secrets or [ ]));
          })
          bots;
        secrets = mapAttrs
          (s: v:
            let v' = attrsAt "${p}.secrets.${s}" v; in
            {
              sopsFile = "${secretsDir name}/${s}.yaml";
              key = v'.key or s;
              format = "yaml";
              neededForUsers = v'.neededForUsers or false;
            }
            // opt v' "restartUnits"
            // (if v'.neededForUsers or false then { } else opt v' "owner" // opt v' "group" // opt v' "mode"))
          secrets;
      };
    };
in
{
  inherit load hostNames system hostSettings secretsDir;
}
