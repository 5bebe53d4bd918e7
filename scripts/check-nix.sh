#!/usr/bin/env bash
# Nix checks that run without nixpkgs and without network (CI has Nix 2.8 from Debian only):
#   1. `nix-instantiate --parse` on every .nix file in the repository;
#   2. the pure-Nix unit tests (tests/nix/run.nix) of the rule generators, policy checks, manifest
#      and fleet translation, evaluated with `nix-instantiate --eval --strict --json`;
#   3. flake.lock sanity: the nixpkgs node is locked to a full rev with a narHash and matches the
#      branch flake.nix names.
# The NixOS VM tests (flake `checks`) need nixpkgs and KVM; run them with `nix flake check`.
# Works unprivileged: Nix state and logs go to a temp dir and the store is opened read-only.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nix-instantiate >/dev/null 2>&1; then
  echo "check-nix: nix-instantiate not found (scripts/install-test-deps.sh installs nix-bin)" >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ "$(id -u)" -ne 0 ] || [ ! -w /nix/var ] 2>/dev/null; then
  export NIX_STATE_DIR="$tmp/state" NIX_LOG_DIR="$tmp/log"
fi
export NIX_PATH=""
nixi() { nix-instantiate --readonly-mode --option build-users-group "" "$@" 2> >(grep -v "build-users-group" >&2); }

echo "-- parse every .nix file"
n=0
while IFS= read -r -d '' f; do
  nixi --parse "$f" >/dev/null || { echo "check-nix: parse error in $f" >&2; exit 1; }
  n=$((n + 1))
done < <(find . -name '*.nix' -not -path './target/*' -not -path './.git/*' -not -path './sandbox/*' -print0)
echo "   parsed $n files"

echo "-- pure-Nix unit tests (tests/nix)"
lib_args=(--arg nixpkgsLib null)
if [ -n "${CLAWDLETS_NIXPKGS_LIB:-}" ]; then
  # Optional: also evaluate the modules with the real nixpkgs lib module system (module-eval.nix).
  lib_args=(--arg nixpkgsLib "$(realpath "$CLAWDLETS_NIXPKGS_LIB")")
  echo "   with module evaluation against $CLAWDLETS_NIXPKGS_LIB"
fi
out="$(nixi --eval --strict --json tests/nix/run.nix "${lib_args[@]}")"
passed="$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["passed"])')"
failed="$(printf '%s' "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin)["failed"]; [print(json.dumps(x)) for x in d]')"
if [ -n "$failed" ]; then
  echo "check-nix: failing Nix unit tests:" >&2
  printf '%s\n' "$failed" >&2
  exit 1
fi
echo "   $passed cases passed"

if [ -n "${CLAWDLETS_NIXPKGS_LIB:-}" ]; then
  echo "-- VM test scripts byte-compile (tests/nix/vm-scripts.nix)"
  nixi --eval --strict --json tests/nix/vm-scripts.nix "${lib_args[@]}" > "$tmp/vm-scripts.json"
  python3 - "$tmp/vm-scripts.json" "$tmp" <<'PY'
import json, os, py_compile, sys
scripts = json.load(open(sys.argv[1]))
for name, text in sorted(scripts.items()):
    path = os.path.join(sys.argv[2], name + ".py")
    open(path, "w").write(text)
    try:
        py_compile.compile(path, doraise=True)
    except py_compile.PyCompileError as e:
        sys.exit(f"check-nix: VM test {name}: {e}")
print(f"   {len(scripts)} test scripts compile")
PY

  if command -v systemd-analyze >/dev/null 2>&1; then
    echo "-- systemd-analyze security --offline of the rendered units (threshold 2.0)"
    nixi --eval --strict --json tests/nix/units.nix "${lib_args[@]}" > "$tmp/units.json"
    python3 - "$tmp/units.json" "$tmp" <<'PY'
import json, os, sys
units = json.load(open(sys.argv[1]))
for name, sc in units.items():
    lines = ["[Unit]", f"Description={name}", "[Service]"]
    for key, value in sc.items():
        if key == "ExecStart":
            value = "/bin/true"
        # NixOS writes one line per list element.
        for v in value if isinstance(value, list) else [value]:
            lines.append(f"{key}={'yes' if v is True else 'no' if v is False else v}")
    open(os.path.join(sys.argv[2], name + ".service"), "w").write("\n".join(lines) + "\n")
PY
    for unit in clf-orchestrator clawdlets-egress-proxy clawdlets-bot-maren; do
      score="$(systemd-analyze security --offline=true --threshold=20 "$tmp/$unit.service" 2>&1 | tail -1)" \
        || { echo "check-nix: $unit exceeds exposure 2.0: $score" >&2; exit 1; }
      echo "   $score"
    done
  fi
fi

echo "-- flake.lock pins a real nixpkgs revision"
python3 - <<'PY'
import json, re, sys
lock = json.load(open("flake.lock"))
flake = open("flake.nix").read()
node = lock["nodes"][lock["nodes"][lock["root"]]["inputs"]["nixpkgs"]]
locked, orig = node["locked"], node["original"]
errs = []
if not re.fullmatch(r"[0-9a-f]{40}", locked.get("rev", "")): errs.append("nixpkgs rev is not a full 40-hex commit")
if not re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked.get("narHash", "")): errs.append("nixpkgs narHash is not an SRI sha256")
if not isinstance(locked.get("lastModified"), int): errs.append("nixpkgs lastModified missing")
ref = orig.get("ref", "")
if not re.fullmatch(r"nixos-\d\d\.\d\d", ref): errs.append(f"nixpkgs original ref {ref!r} is not a NixOS release branch")
if f"github:NixOS/nixpkgs/{ref}" not in flake: errs.append(f"flake.nix does not name github:NixOS/nixpkgs/{ref}")
if errs:
    print("check-nix: " + "; ".join(errs), file=sys.stderr); sys.exit(1)
print(f"   nixpkgs {ref} @ {locked['rev'][:12]} {locked['narHash']}")
PY
echo "check-nix: ok"
