#!/usr/bin/env bash
# bench-rss.sh — resident memory of an idle `mcptrail wrap` (target: ≤ 15 MB).
#
# Starts `mcptrail wrap -- rmcp-echo-server` (release build), and reads VmRSS / VmHWM of the
# tap from /proc:
#   1. idle right after start (before any message),
#   2. idle again after `initialize` and N `tools/call` round trips (default 20000), with
#      the client still connected,
# next to the RSS of the server it wraps (the baseline measured in the same run).
#
# Usage: scripts/bench-rss.sh [--calls N] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=20000
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=${2:?}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "bench-rss: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$BUILD" = 1 ] && cargo build --release --quiet -p mcptrail -p mcptrail-test-support
REL="$PWD/target/release"
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT

python3 - "$REL" "$DATA" "$CALLS" <<'PY'
import json, subprocess, sys, time
rel, data, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
tap = subprocess.Popen([f"{rel}/mcptrail", "wrap", "--data-dir", data, "--", f"{rel}/rmcp-echo-server"],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)

def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = v.strip()
    return out

def kb(s):
    return int(s.split()[0])

def server_pid():
    with open(f"/proc/{tap.pid}/task/{tap.pid}/children") as f:
        return int(f.read().split()[0])

def rpc(i, method, params):
    tap.stdin.write((json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n").encode())
    tap.stdin.flush()
    while True:
        msg = json.loads(tap.stdout.readline())
        if msg.get("id") == i:
            return msg

time.sleep(2)
start_tap, start_srv = status(tap.pid), status(server_pid())
rpc(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench-rss", "version": "1"}})
tap.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
for i in range(1, calls + 1):
    rpc(i, "tools/call", {"name": "echo", "arguments": {"text": "hello mcptrail"}})
time.sleep(3)
after_tap, after_srv = status(tap.pid), status(server_pid())
tap.stdin.close()
tap.wait(timeout=30)

print(f"{'state':<34}{'tap VmRSS':>12}{'tap VmHWM':>12}{'server VmRSS':>14}{'tap/server':>12}")
for label, t, s in [("idle after start", start_tap, start_srv), (f"idle after {calls} calls", after_tap, after_srv)]:
    print(f"{label:<34}{kb(t['VmRSS'])/1024:>9.1f} MB{kb(t['VmHWM'])/1024:>9.1f} MB{kb(s['VmRSS'])/1024:>11.1f} MB{kb(t['VmRSS'])/kb(s['VmRSS']):>12.2f}")
limit = 15 * 1024
worst = max(kb(start_tap["VmRSS"]), kb(after_tap["VmRSS"]))
print(f"target: idle tap RSS <= 15 MB -> {'PASS' if worst <= limit else 'FAIL'} ({worst/1024:.1f} MB; {after_tap['Threads']} threads)")
PY
