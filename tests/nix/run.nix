# Runs every pure-Nix unit test file and returns { passed; failed = [ { file, case, got, expected } ] }.
#   nix-instantiate --eval --strict --json tests/nix/run.nix
# With a nixpkgs lib directory, also the module evaluation (module-eval.nix):
#   nix-instantiate --eval --strict --json tests/nix/run.nix --arg nixpkgsLib /path/to/nixpkgs/lib
{ nixpkgsLib ? null }:
let
  files = [ "firewall" "policy" "manifest" "fleet" "verify" ]
    ++ (if nixpkgsLib == null then [ ] else [ "module-eval" ]);
  load = f:
    let t = import (./. + "/${f}.nix"); in
    if builtins.isFunction t then t { inherit nixpkgsLib; } else t;
  inherit (builtins) attrNames concatLists filter isBool length map;
  results = concatLists (map
    (f:
      let cases = load f; in
      map
        (c:
          let
            v = cases.${c};
            ok = if isBool v then v else v.expr == v.expected;
          in
          { file = f; case = c; inherit ok; }
          // (if ok then { } else if isBool v then { got = false; expected = true; } else { got = v.expr; inherit (v) expected; }))
        (filter (c: builtins.substring 0 2 c != "__") (attrNames cases)))
    files);
  failed = filter (r: !r.ok) results;
in
{
  passed = length results - length failed;
  failed = map (r: removeAttrs r [ "ok" ]) failed;
}
