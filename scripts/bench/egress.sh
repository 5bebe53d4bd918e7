#!/usr/bin/env bash
# Egress proxy benchmark, one run, loopback only: 1 GiB through a CONNECT tunnel vs direct,
# new-connection rate vs Debian's tinyproxy (filter on, started by the benchmark itself), and
# allowlist lookup cost at 10..10,000 entries. Figures go to stdout as Markdown.
#
# Knobs (environment): EGRESS_BENCH_BYTES (default 1073741824), EGRESS_BENCH_RUNS (3),
# EGRESS_BENCH_SECS (5), EGRESS_BENCH_CONC (16).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v tinyproxy >/dev/null 2>&1 && [ ! -x /usr/bin/tinyproxy ]; then
  echo "tinyproxy is missing (scripts/install-test-deps.sh installs it); the comparison is skipped" >&2
fi
cargo bench --locked --bench egress -- "$@"
