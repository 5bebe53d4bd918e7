#!/usr/bin/env bash
# Benchmark of a full `clawdlets verify` on a host with 1,000 secrets and a 500-rule ruleset.
# Needs root (network namespace, ramfs mount). Usage: scripts/bench/verify.sh [BIN] [RUNS]
# Builds nothing: pass the binary (default target/release/clawdlets).
set -euo pipefail
BIN=${1:-target/release/clawdlets}
RUNS=${2:-30}
BIN=$(realpath "$BIN")
NS=clfbench$$
ROOT=$(mktemp -d /var/tmp/clf-verify-bench.XXXXXX)
cleanup() { umount "$ROOT/run/secrets.d" 2>/dev/null || true; ip netns del "$NS" 2>/dev/null || true; rm -rf "$ROOT"; }
trap cleanup EXIT

# Network namespace with eth0/tailscale0 and a 500-rule NixOS-shaped ruleset.
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name tailscale0; ip -n "$NS" link set eth0 up; ip -n "$NS" link set tailscale0 up
{
  cat <<'R'
table inet nixos-fw {
  chain rpfilter {
    type filter hook prerouting priority mangle + 10; policy drop;
    fib saddr . mark . iif oif exists accept
  }
  chain input {
    type filter hook input priority filter; policy drop;
    iifname { "lo" } accept
    ct state vmap { invalid : drop, established : accept, related : accept, new : jump input-allow, untracked : jump input-allow }
  }
  chain input-allow {
    iifname "tailscale0" tcp dport { 22 } accept
    udp dport { 41641 } accept
R
  for n in $(seq 1 490); do
    echo "    ip saddr 10.$((n / 250)).$((n % 250)).0/24 tcp dport $((10000 + n)) counter accept"
  done
  cat <<'R'
  }
}
table inet clawdlets-egress {
  chain output {
    type filter hook output priority filter; policy accept;
    oifname "lo" accept
    meta l4proto { tcp, udp } th dport { 25, 465, 587, 2525 } counter drop
  }
}
R
} | ip netns exec "$NS" nft -f -
RULES=$(ip netns exec "$NS" nft -a list ruleset | grep -c '# handle' || true)

# Sandbox root: 1,000 secrets on ramfs, manifest, sshd config, a small store.
mkdir -p "$ROOT/run/secrets.d" "$ROOT/etc/clawdlets" "$ROOT/etc/ssh" "$ROOT/nix/store"
cp /etc/passwd /etc/group "$ROOT/etc/"
mount -t ramfs -o nodev,nosuid,noexec,mode=0751 none "$ROOT/run/secrets.d"
mkdir -m 0751 "$ROOT/run/secrets.d/1"
ln -s /run/secrets.d/1 "$ROOT/run/secrets"
{
  printf '{"secrets":['
  for n in $(seq 1 1000); do
    head -c 24 /dev/urandom | base64 > "$ROOT/run/secrets.d/1/s$n"
    chmod 0400 "$ROOT/run/secrets.d/1/s$n"
    [ "$n" -gt 1 ] && printf ','
    printf '{"name":"s%d","owner":"root","group":"root","mode":"0400"}' "$n"
  done
  printf '],"secretsMountPoint":"/run/secrets.d","symlinkPath":"/run/secrets"}'
} > "$ROOT/etc/clawdlets/manifest.json"
for n in $(seq 1 200); do mkdir -p "$ROOT/nix/store/$n-pkg/etc"; head -c 4096 /dev/urandom > "$ROOT/nix/store/$n-pkg/etc/file"; done
ssh-keygen -q -t ed25519 -N '' -f "$ROOT/hostkey"
mkdir -p /run/sshd
printf 'HostKey %s\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nX11Forwarding no\nAllowAgentForwarding no\nMaxAuthTries 3\n' "$ROOT/hostkey" > "$ROOT/etc/ssh/sshd_config"
echo '{"sshExposure":"tailnet","tailnet":"tailscale","egress":"smtp-only","secretsManifest":"/etc/clawdlets/manifest.json"}' > "$ROOT/etc/clawdlets/verify.json"

run() { ip netns exec "$NS" "$@" >/dev/null 2>&1 || true; }
measure() { # prints median and p95 in ms of RUNS runs of "$@"
  local t=()
  for _ in $(seq 1 "$RUNS"); do
    local a b; a=$(date +%s%N); run "$@"; b=$(date +%s%N); t+=($(( (b - a) / 1000 )))
  done
  printf '%s\n' "${t[@]}" | sort -n | awk '{v[NR]=$1} END {printf "median %.1f ms, p95 %.1f ms (n=%d)\n", v[int((NR+1)/2)]/1000, v[int(NR*0.95+0.5)]/1000, NR}'
}

echo "fixture: $RULES nft rules, 1000 secrets on ramfs, 200 store files"
ip netns exec "$NS" "$BIN" verify --root "$ROOT" | tail -n 12
echo "baseline: ip netns exec + nft -j list ruleset:  $(measure nft -j list ruleset)"
echo "baseline: ip netns exec + sshd -T:               $(measure sshd -T -f "$ROOT/etc/ssh/sshd_config")"
ip netns exec "$NS" "$BIN" verify --json --root "$ROOT" | python3 -c "import json,sys; r=json.load(sys.stdin); print(\"per check (ms):\", {c[\"id\"]: c[\"durationMs\"] for c in r[\"checks\"]}, \"total\", r[\"durationMs\"])"
echo "full clawdlets verify:                           $(measure "$BIN" verify --root "$ROOT")"
ip netns exec "$NS" nft -j list ruleset > "$ROOT/ruleset.json"
echo "egress.smtp + tailnet.udp on the recorded ruleset (parse + evaluator, no nft): $(measure "$BIN" verify --root "$ROOT" --ruleset "$ROOT/ruleset.json" --only egress.smtp tailnet.udp)"
echo "process baseline (clawdlets --version):         $(measure "$BIN" --version)"
echo "secrets.mount + secrets.store (1000 secrets):    $(measure "$BIN" verify --root "$ROOT" --only secrets.mount secrets.store)"
