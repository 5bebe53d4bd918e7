#!/usr/bin/env bash
# Decryption throughput, counting process start: `clawdlets sops decrypt` vs the real `sops -d`,
# one process per file, over N one-key YAML files and over one 1,000-key YAML file; then the
# in-process criterion bench (clawdlets vs the raw age-unwrap + AES-GCM cost) unless
# SKIP_CRITERION=1.
#
#   scripts/bench/sops.sh                 # N=1000 files, 20 runs of the 1,000-key file
#   N=200 RUNS=10 scripts/bench/sops.sh   # quicker
#   BIN=target/release/clawdlets SKIP_CRITERION=1 scripts/bench/sops.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
N=${N:-1000}
RUNS=${RUNS:-20}
if [ -z "${BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked --quiet --bin clawdlets)
  BIN="$root/target/release/clawdlets"
fi
command -v sops >/dev/null || { echo "sops is not installed (scripts/install-test-deps.sh)" >&2; exit 2; }
export SOPS_DISABLE_VERSION_CHECK=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
"$BIN" sops keygen -o key.txt 2>/dev/null
recipient=$("$BIN" sops keygen -y key.txt)
export SOPS_AGE_KEY_FILE="$tmp/key.txt"
unset SOPS_AGE_KEY SOPS_AGE_SSH_PRIVATE_KEY_FILE
export HOME="$tmp"

mkdir files
printf 'password: correct-horse-battery-staple\n' > one.yaml
for i in $(seq 1 "$N"); do
  "$BIN" sops encrypt --age "$recipient" one.yaml > "files/f$i.yaml"
done
{ for i in $(seq 1 1000); do printf 'secret_%04d: value-%d-0123456789abcdef\n' "$i" "$i"; done; } > big.plain.yaml
"$BIN" sops encrypt --age "$recipient" big.plain.yaml > big.yaml
# Both tools must agree before we time anything.
cmp <("$BIN" sops decrypt big.yaml) <(sops -d big.yaml)
cmp <("$BIN" sops decrypt files/f1.yaml) <(sops -d files/f1.yaml)

now() { date +%s%N; }
per_file() { # tool-label command...
  local label=$1; shift
  local t0 t1
  t0=$(now)
  for f in files/*.yaml; do "$@" "$f" > /dev/null; done
  t1=$(now)
  awk -v l="$label" -v n="$N" -v ns=$((t1 - t0)) \
    'BEGIN { printf "%-34s %8.1f ms total  %8.3f ms/file\n", l, ns/1e6, ns/1e6/n }'
}
big() {
  local label=$1; shift
  local t0 t1
  t0=$(now)
  for _ in $(seq 1 "$RUNS"); do "$@" big.yaml > /dev/null; done
  t1=$(now)
  awk -v l="$label" -v n="$RUNS" -v ns=$((t1 - t0)) \
    'BEGIN { printf "%-34s %8.3f ms/run\n", l, ns/1e6/n }'
}

echo "== $N one-key files, one process per file"
per_file "clawdlets sops decrypt" "$BIN" sops decrypt
per_file "sops -d" sops -d
echo "== one 1,000-key file, $RUNS runs"
big "clawdlets sops decrypt" "$BIN" sops decrypt
big "sops -d" sops -d

if [ "${SKIP_CRITERION:-0}" != 1 ]; then
  echo "== in-process (criterion): clawdlets vs raw age unwrap + AES-GCM"
  (cd "$root" && cargo bench --locked --bench sops -- --warm-up-time 1 --measurement-time 3 2>/dev/null |
     grep -E '^sops_decrypt|time:')
fi
