#!/usr/bin/env bash
# The whole test suite: installs test dependencies, then format, lint, Nix checks and every test.
# CI (`.ci/run`) calls exactly this. Root-only tests (mounts, users, network namespaces) run when
# this runs as root and print SKIP lines otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
if [ -x scripts/check-nix.sh ]; then
  echo "== nix"
  scripts/check-nix.sh
fi
echo "== cargo test"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
