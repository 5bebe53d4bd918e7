#!/usr/bin/env bash
# Orchestrator benchmark: full job cycles (enqueue → claim → complete) over the unix socket by N
# concurrent clients, and the same cycle on Redis Streams (XADD → XREADGROUP → XACK, AOF with
# appendfsync everysec) as the baseline, in the same run on the same machine. Also prints the
# daemon's idle RSS before and after the load.
#
# usage: scripts/bench/orchestrator.sh [CLIENTS...]   (default: 1 16; SECONDS=5 per run)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
CLIENTS=("$@")
[ ${#CLIENTS[@]} -gt 0 ] || CLIENTS=(1 16)

cargo build --release --quiet
cargo bench --quiet --bench orchestrator --no-run 2>/dev/null || cargo bench --bench orchestrator --no-run
BIN="$PWD/target/release/clawdlets"

WORK="$(mktemp -d /tmp/clf-bench.XXXXXX)"
chmod 755 "$WORK"
mkdir -p "$WORK/run" "$WORK/redis"
chmod 755 "$WORK/run"
ORCH_PID=""; REDIS_PID=""
cleanup() {
  [ -n "$ORCH_PID" ] && kill "$ORCH_PID" 2>/dev/null || true
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

echo '{"limits": {"ratePerSecond": 1000000000, "rateBurst": 1000000000}}' > "$WORK/config.json"
"$BIN" orchestrator serve --socket "$WORK/run/orch.sock" --state "$WORK/state/state.sqlite" \
  --group "$(id -gn)" --config "$WORK/config.json" 2>"$WORK/orch.log" &
ORCH_PID=$!
redis-server --port 0 --unixsocket "$WORK/redis/redis.sock" --unixsocketperm 700 \
  --dir "$WORK/redis" --appendonly yes --appendfsync everysec --save "" --daemonize no \
  --logfile "$WORK/redis/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do
  [ -S "$WORK/run/orch.sock" ] && [ -S "$WORK/redis/redis.sock" ] && break
  sleep 0.05
done
sleep 1
echo "{\"idleRssKiB\": $(rss_kb "$ORCH_PID"), \"when\": \"after start\", \"redisIdleRssKiB\": $(rss_kb "$REDIS_PID")}"
echo "{\"machine\": \"$(nproc) cores, $(uname -r)\", \"secondsPerRun\": $SECONDS_PER_RUN}"

for n in "${CLIENTS[@]}"; do
  cargo bench --quiet --bench orchestrator -- --socket "$WORK/run/orch.sock" \
    --redis "redis+unix://$WORK/redis/redis.sock" --clients "$n" --seconds "$SECONDS_PER_RUN"
done
sleep 2
echo "{\"idleRssKiB\": $(rss_kb "$ORCH_PID"), \"when\": \"after load\", \"stateBytes\": $(du -sb "$WORK/state" | cut -f1)}"
