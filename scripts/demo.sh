#!/usr/bin/env bash
# The main job end to end in a sandbox directory: no root, no NixOS. Builds the agent, then runs
# each stage against ./sandbox (or $1). Later stages are added as the features land.
set -euo pipefail
cd "$(dirname "$0")/.."
SANDBOX="$(realpath -m "${1:-sandbox}")"
rm -rf "$SANDBOX" && mkdir -p "$SANDBOX"
cargo build --release --quiet
BIN="$PWD/target/release/clawdlets"
say() { printf '\n== %s\n' "$*"; }

say "sandbox: $SANDBOX"
# Each stage is a script of its own, sourced in order with $BIN, $SANDBOX and `say` in scope.
for stage in scripts/demo.d/[0-9][0-9]-*.sh; do
  [ -e "$stage" ] || continue
  # shellcheck source=/dev/null
  source "$stage"
done
say "demo finished: everything above ran in $SANDBOX without root"
