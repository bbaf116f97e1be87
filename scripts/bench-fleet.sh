#!/usr/bin/env bash
# Fleet throughput and end-to-end lag (issue 9): taps -> NATS JetStream -> collectors ->
# PostgreSQL, with NATS-only and PostgreSQL-only baselines in the same run. See the doc at the
# top of crates/mcptrail-collector/benches/fleet.rs for what each row measures.
#
#   scripts/bench-fleet.sh                       # 4 taps x 50k events, 1/2/4 collectors, 30 s at 20k/s
#   MCPTRAIL_BENCH_RATE=30000 scripts/bench-fleet.sh
#   MCPTRAIL_NATS_CPU=1 taskset -c 0 scripts/bench-fleet.sh   # nats-server on CPU 1, the rest on CPU 0
#
# Needs: PostgreSQL at 127.0.0.1:5432 (database `test`, trust auth; a schema per run, dropped
# after) and the nats-server binary (Debian nats-server; a private one is started on a free
# port with its store in a temp dir). Environment: MCPTRAIL_BENCH_TAPS (4),
# MCPTRAIL_BENCH_EVENTS per tap (50000), MCPTRAIL_BENCH_COLLECTORS ("1,2,4"),
# MCPTRAIL_BENCH_BATCH (1000), MCPTRAIL_BENCH_RATE (20000), MCPTRAIL_BENCH_SECS (30),
# MCPTRAIL_BENCH_LIVE_COLLECTORS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nats-server >/dev/null || { echo "nats-server not found (apt-get install nats-server)" >&2; exit 1; }
command -v psql >/dev/null || { echo "psql not found (apt-get install postgresql-client)" >&2; exit 1; }
psql -X -q -c 'SELECT 1' postgres://postgres@127.0.0.1:5432/test >/dev/null \
    || { echo "PostgreSQL is not reachable at 127.0.0.1:5432 (database test)" >&2; exit 1; }
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# PostgreSQL: $(psql -X -A -t -c 'SHOW server_version' postgres://postgres@127.0.0.1:5432/test), synchronous_commit=$(psql -X -A -t -c 'SHOW synchronous_commit' postgres://postgres@127.0.0.1:5432/test); $(nats-server --version)"
exec cargo bench --locked -p mcptrail-collector --bench fleet 2>&1 | grep -v '^mcptrail collector: consuming'
