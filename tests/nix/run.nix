# Runs every pure-Nix unit test file and returns { passed; failed = [ { file, case, got, expected } ] }.
#   nix-instantiate --eval --strict --json tests/nix/run.nix
let
  files = [ "firewall" "policy" "manifest" "fleet" "verify" ];
  inherit (builtins) attrNames concatLists filter isAttrs isBool length map;
  results = concatLists (map
    (f:
      let cases = import (./. + "/${f}.nix"); in
      map
        (c:
          let
            v = cases.${c};
            ok = if isBool v then v else v.expr == v.expected;
          in
          { file = f; case = c; inherit ok; }
          // (if ok then { } else if isBool v then { got = false; expected = true; } else { got = v.expr; inherit (v) expected; }))
        (attrNames cases))
    files);
  failed = filter (r: !r.ok) results;
in
{
  passed = length results - length failed;
  failed = map (r: removeAttrs r [ "ok" ]) failed;
}
