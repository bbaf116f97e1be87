#!/usr/bin/env bash
# bench-e2e.sh — end-to-end overhead of `mcptrail wrap` versus talking to the
# MCP server directly.
#
# Builds release binaries, then runs `mcp-bench` (crates/mcptrail-test-support)
# twice against `rmcp-echo-server`:
#   direct: mcp-bench -- target/release/rmcp-echo-server
#   wrap:   mcp-bench -- target/release/mcptrail wrap --data-dir <tmp> -- target/release/rmcp-echo-server
# and prints both rows plus added latency (wrap − direct, p50 and p99) and the
# throughput ratio, next to the targets: added p50 ≤ 50 µs, added p99 ≤ 250 µs,
# wrap pipelined ≥ 50k msgs/s (a request and its response count as 2 messages).
#
# Usage: scripts/bench-e2e.sh [options]
#   --calls N         sequential timed calls per leg      (default 20000)
#   --pipelined M     pipelined requests per leg          (default 50000)
#   --warmup W        untimed warm-up calls per leg       (default 500)
#   --direct-only     run only the direct leg (no mcptrail needed)
#   --stand-in-wrap   run the wrap leg through `sh -c 'exec "$@"' sh` instead of
#                     mcptrail (tests the plumbing; measures ~nothing)
#   --no-build        skip `cargo build --release`
#   --pin CPUS        run each leg under `taskset -c CPUS` (the driver, mcptrail and
#                     the server all inherit it); e.g. `--pin 0` puts every process
#                     on one CPU, which removes cross-CPU wake-up latency (large in
#                     VMs) and measures the CPU cost of the path. Default: unpinned.
#   --json-out FILE   also write the raw per-leg JSON lines to FILE
#   --check           exit 1 if a target is missed
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
REL="$ROOT/target/release"

CALLS=20000
PIPELINED=50000
WARMUP=500
MODE=wrap          # wrap | direct-only | stand-in
BUILD=1
JSON_OUT=""
CHECK=0
PIN=""


die() { echo "bench-e2e: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=${2:?--calls needs a value}; shift 2 ;;
    --pipelined) PIPELINED=${2:?--pipelined needs a value}; shift 2 ;;
    --warmup) WARMUP=${2:?--warmup needs a value}; shift 2 ;;
    --direct-only) MODE=direct-only; shift ;;
    --stand-in-wrap) MODE=stand-in; shift ;;
    --no-build) BUILD=0; shift ;;
    --pin) PIN=${2:?--pin needs a CPU list}; shift 2 ;;
    --json-out) JSON_OUT=${2:?--json-out needs a value}; shift 2 ;;
    --check) CHECK=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done

command -v python3 >/dev/null || die "python3 is required to summarise the results"
PREFIX=()
if [ -n "$PIN" ]; then
  command -v taskset >/dev/null || die "--pin needs taskset (util-linux)"
  PREFIX=(taskset -c "$PIN")
fi

if [ "$BUILD" = 1 ]; then
  if [ "$MODE" = wrap ]; then
    cargo build --release -p mcptrail -p mcptrail-test-support
  else
    cargo build --release -p mcptrail-test-support
  fi
fi

BENCH="$REL/mcp-bench"
SERVER="$REL/rmcp-echo-server"
MCPTRAIL="$REL/mcptrail"
[ -x "$BENCH" ] || die "$BENCH not found (build mcptrail-test-support in release)"
[ -x "$SERVER" ] || die "$SERVER not found (build mcptrail-test-support in release)"
if [ "$MODE" = wrap ]; then
  [ -x "$MCPTRAIL" ] || die "$MCPTRAIL not found (build -p mcptrail in release, or use --direct-only / --stand-in-wrap)"
fi

DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mcptrail-bench.XXXXXX")
RESULTS=$(mktemp "${TMPDIR:-/tmp}/mcptrail-bench-results.XXXXXX")
trap 'rm -rf "$DATA_DIR" "$RESULTS"' EXIT

bench() {
  local label=$1; shift
  echo "bench-e2e: running $label leg: ${PREFIX[*]} $*" >&2
  "${PREFIX[@]}" "$BENCH" --calls "$CALLS" --pipelined "$PIPELINED" --warmup "$WARMUP" --label "$label" -- "$@" >>"$RESULTS"
}

LOAD=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
bench direct "$SERVER"
case "$MODE" in
  wrap) bench wrap "$MCPTRAIL" wrap --data-dir "$DATA_DIR" -- "$SERVER" ;;
  stand-in) bench "wrap(stand-in)" sh -c 'exec "$@"' sh "$SERVER" ;;
  direct-only) ;;
esac

if [ -n "$JSON_OUT" ]; then
  cp "$RESULTS" "$JSON_OUT"
fi

echo
echo "mcptrail end-to-end bench — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(uname -sr)"
echo "calls=$CALLS (after $WARMUP warm-up), pipelined=$PIPELINED requests; msgs/s counts request+response as 2 messages"
echo "cpu pinning: ${PIN:-none}; load average before run: $LOAD"
[ "$MODE" = stand-in ] && echo "NOTE: wrap row is a stand-in (sh exec), not mcptrail"
[ "$MODE" = wrap ] && echo "ledger data dir after run: $(du -sh "$DATA_DIR" | cut -f1)"

CHECK=$CHECK python3 - "$RESULTS" <<'PY'
import json, os, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
cols = [("p50_us", "p50 µs"), ("p90_us", "p90 µs"), ("p99_us", "p99 µs"),
        ("max_us", "max µs"), ("calls_per_s", "calls/s"),
        ("pipelined_msgs_per_s", "pipelined msgs/s")]

def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"

w = max(len(r["label"]) for r in rows)
print()
print(f"{'leg':<{w}}  " + "  ".join(f"{h:>16}" for _, h in cols))
for r in rows:
    print(f"{r['label']:<{w}}  " + "  ".join(f"{fmt(r.get(k)):>16}" for k, _ in cols))

failed = False
if len(rows) == 2:
    d, x = rows
    add50 = x["p50_us"] - d["p50_us"]
    add99 = x["p99_us"] - d["p99_us"]
    tput = x["pipelined_msgs_per_s"]
    ratio_tput = tput / d["pipelined_msgs_per_s"]
    ratio_calls = x["calls_per_s"] / d["calls_per_s"]
    checks = [
        (f"added p50 ({x['label']} − direct)", f"{add50:+.1f} µs", "≤ 50 µs", add50 <= 50),
        (f"added p99 ({x['label']} − direct)", f"{add99:+.1f} µs", "≤ 250 µs", add99 <= 250),
        (f"{x['label']} pipelined throughput", f"{tput:,.0f} msgs/s", "≥ 50,000 msgs/s", tput >= 50_000),
    ]
    print()
    print(f"{'figure':<36}  {'value':>16}  {'target':>16}  result")
    for name, val, target, ok in checks:
        failed |= not ok
        print(f"{name:<36}  {val:>16}  {target:>16}  {'PASS' if ok else 'FAIL'}")
    print(f"{'pipelined throughput ratio':<36}  {ratio_tput:>16.3f}  {'(wrap/direct)':>16}")
    print(f"{'sequential calls/s ratio':<36}  {ratio_calls:>16.3f}  {'(wrap/direct)':>16}")
else:
    print("\n(direct leg only: no added-latency figures)")

print()
for r in rows:
    print(json.dumps(r))
if failed and os.environ.get("CHECK") == "1":
    sys.exit(1)
PY
