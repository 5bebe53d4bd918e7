# Stage 40: the orchestrator. Starts the daemon in the sandbox (no root), a bot (you) enqueues a
# cattle.spawn job, a local "VM" process bootstraps over TCP on 127.0.0.1 with its one-time token,
# fetches its env from the secrets dir and reports its result with signed requests; then the
# daemon is stopped cleanly. Sourced by scripts/demo.sh with $BIN, $SANDBOX and `say`.

say "orchestrator: start the daemon on a unix socket with a SQLite state store"
ORCH_DIR="$SANDBOX/orchestrator"
mkdir -p "$ORCH_DIR/run"
chmod 755 "$ORCH_DIR" "$ORCH_DIR/run"
ORCH_SOCK="$ORCH_DIR/run/orchestrator.sock"
# Secrets: stage 30 installs them under $SANDBOX/host/run/secrets; otherwise a throwaway one.
ORCH_SECRETS="$SANDBOX/host/run/secrets"
ORCH_KEYS=()
if [ -d "$ORCH_SECRETS" ]; then
  while IFS= read -r f; do
    ORCH_KEYS+=("$(printf '%s' "$f" | tr '[:lower:]' '[:upper:]')")
  done < <(find "$ORCH_SECRETS/" -maxdepth 1 -xtype f -readable -printf '%f\n' 2>/dev/null | grep -E '^[a-z_][a-z0-9_]*$' | sort | head -2)
fi
if [ ${#ORCH_KEYS[@]} -eq 0 ]; then
  ORCH_SECRETS="$ORCH_DIR/secrets"
  mkdir -p "$ORCH_SECRETS" && chmod 700 "$ORCH_SECRETS"
  printf 'demo-throwaway-%s' "$RANDOM" > "$ORCH_SECRETS/DEMO_API_KEY"
  ORCH_KEYS=(DEMO_API_KEY)
fi
ORCH_KEYS_JSON="$(printf '"%s",' "${ORCH_KEYS[@]}")"
cat > "$ORCH_DIR/config.json" <<JSON
{
  "secretsDir": "$ORCH_SECRETS",
  "envKeys": [${ORCH_KEYS_JSON%,}],
  "bootstrapTtlSeconds": 120,
  "cattle": { "backend": "local", "defaultTtlSeconds": 600, "local": { "workDir": "$ORCH_DIR/cattle" } }
}
JSON
"$BIN" orchestrator serve --socket "$ORCH_SOCK" --state "$ORCH_DIR/state/state.sqlite" \
  --group "$(id -gn)" --cattle-listen 127.0.0.1:0 --config "$ORCH_DIR/config.json" \
  --log-format text -v 2>"$ORCH_DIR/daemon.log" &
ORCH_PID=$!
for _ in $(seq 100); do [ -S "$ORCH_SOCK" ] && break; sleep 0.05; done
echo "daemon pid $ORCH_PID, socket $ORCH_SOCK (mode $(stat -c %a "$ORCH_SOCK")), env keys offered: ${ORCH_KEYS[*]}"

say "orchestrator: bot '$(id -un)' enqueues a cattle.spawn job (identity comes from SO_PEERCRED)"
export CLF_ORCHESTRATOR_SOCKET="$ORCH_SOCK"
ORCH_JOB="$("$BIN" jobs enqueue --kind cattle.spawn --idempotency-key demo-1 \
  --payload '{"persona":"demo","task":{"schemaVersion":1,"taskId":"demo-task","type":"clawdbot.gateway.agent","message":"hello from the demo"}}' \
  | sed -n 's/.*"jobId": "\([^"]*\)".*/\1/p')"
echo "jobId $ORCH_JOB"

say "orchestrator: the local cattle bootstraps with its one-time token over TCP and reports back"
for _ in $(seq 200); do
  ORCH_STATUS="$("$BIN" jobs show "$ORCH_JOB" | sed -n 's/^    "status": "\([a-z]*\)".*/\1/p')"
  case "$ORCH_STATUS" in done|failed) break ;; esac
  sleep 0.1
done
"$BIN" jobs show "$ORCH_JOB"

say "orchestrator: stop the daemon (SIGTERM: finishes in-flight requests, exits 0)"
kill -TERM "$ORCH_PID"
wait "$ORCH_PID" && echo "daemon stopped cleanly"
unset CLF_ORCHESTRATOR_SOCKET
[ "$ORCH_STATUS" = done ] || { echo "orchestrator demo: job ended as '$ORCH_STATUS'" >&2; false; }
