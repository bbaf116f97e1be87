#!/usr/bin/env bash
# Benchmark of the governance server (issue 8, BENCHMARKS.md "Governance server"):
#
#   1. a ledger of $MCPTRAIL_BENCH_EVENTS (default 10 000 000) realistic ~1 KB events written
#      through the ledger API (crates/mcptrail-server/examples/bench_search.rs `gen`), timed;
#   2. the index built from it with `mcptrail reindex`, timed;
#   3. the real `mcptrail serve` (release) on a free loopback port, an investigator token;
#   4. p50/p99 of investigator queries through the HTTP API, each next to the same search
#      straight on the index and to GET /api/v1/status (bench_search `query`);
#   5. wrk requests/s on GET /api/v1/status with the token, against GET /assets/app.css of the
#      same server (no authentication, index or meta-audit) and GET /api/v1/whoami
#      (authentication and meta-audit, no index) in the same run.
#
# The data stays in $MCPTRAIL_BENCH_DIR (default target/bench-serve; ~25 GB at 10M events)
# and is reused by the next run; MCPTRAIL_BENCH_REGEN=1 writes it again,
# MCPTRAIL_BENCH_REINDEX=1 rebuilds only the index. Not part of .ci/run (it takes a while).
# wrk is installed with apt-get when missing (root, or sudo -n).
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
events="${MCPTRAIL_BENCH_EVENTS:-10000000}"
bench_dir="${MCPTRAIL_BENCH_DIR:-$repo_root/target/bench-serve}"
data="$bench_dir/data"
wrk_secs="${MCPTRAIL_BENCH_WRK_SECS:-10}"
wrk_conns="${MCPTRAIL_BENCH_WRK_CONNS:-32}"

log() { printf '[bench-serve] %s\n' "$*" >&2; }
die() {
    printf '[bench-serve] ERROR: %s\n' "$*" >&2
    exit 1
}

# --- wrk (Debian package) ------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "wrk is missing and there is no apt-get: install wrk"
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "wrk is missing; not root and no sudo: install wrk"
        sudo=(sudo -n)
    fi
    log "apt-get install wrk"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk; then
        "${sudo[@]}" apt-get update -q
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk
    fi
fi

# --- build -----------------------------------------------------------------------------
log "cargo build --release (mcptrail, bench_search)"
cargo build --release --locked -q -p mcptrail --bin mcptrail
cargo build --release --locked -q -p mcptrail-server --example bench_search
mcptrail="$repo_root/target/release/mcptrail"
bench="$repo_root/target/release/examples/bench_search"
mkdir -p "$bench_dir"
config="$bench_dir/mcptrail.toml"
: >"$config" # defaults only: nothing from ~/.config leaks in
mct() { "$mcptrail" --config "$config" --data-dir "$data" "$@"; }

# --- data ------------------------------------------------------------------------------
manifest_events() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events"])' "$data/bench-manifest.json" 2>/dev/null || echo 0
}
if [[ "${MCPTRAIL_BENCH_REGEN:-0}" == 1 || "$(manifest_events)" != "$events" ]]; then
    rm -rf "$data"
    log "writing a ledger of $events events"
    start=$(date +%s.%N)
    "$bench" gen "$data" "$events"
    log "ledger written in $(echo "$(date +%s.%N) - $start" | bc) s"
    rm -f "$data/index.sqlite"*
fi
if [[ "${MCPTRAIL_BENCH_REINDEX:-0}" == 1 || ! -f "$data/index.sqlite" ]]; then
    rm -f "$data/index.sqlite"*
    log "mcptrail reindex"
    start=$(date +%s.%N)
    mct reindex
    log "index built in $(echo "$(date +%s.%N) - $start" | bc) s"
fi
log "sizes: ledger $(du -sh "$data/ledger" | cut -f1), index $(du -ch "$data"/index.sqlite* | tail -n1 | cut -f1)"

# --- server ----------------------------------------------------------------------------
mct serve token revoke --name bench-investigator >/dev/null 2>&1 || true
token="$(mct serve token add --name bench-investigator --role investigator 2>/dev/null)"
serve_log="$bench_dir/serve.log"
# Not through the mct function: $! must be the server's own pid for the trap to stop it.
"$mcptrail" --config "$config" --data-dir "$data" serve --listen 127.0.0.1:0 2>"$serve_log" &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true' EXIT
base=""
for _ in $(seq 1 3000); do # index migrations run before the listener opens
    base="$(grep -o 'listening on [a-z]*://[0-9.:]*' "$serve_log" | awk '{print $3}' || true)"
    [[ -n "$base" ]] && break
    kill -0 "$serve_pid" 2>/dev/null || die "mcptrail serve exited: $(cat "$serve_log")"
    sleep 0.1
done
[[ -n "$base" ]] || die "mcptrail serve did not start: $(cat "$serve_log")"
log "mcptrail serve at $base (pid $serve_pid)"

# --- machine state -----------------------------------------------------------------------
echo "## machine"
echo "- $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(free -g | awk '/Mem:/ {print $2 " GB RAM, " $7 " GB available"}')"
echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg); disk free: $(df -h "$bench_dir" | awk 'NR==2 {print $4}')"
echo "- $(uname -sr); $(rustc --version); wrk $(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
echo "- data: $events events, ledger $(du -sh "$data/ledger" | cut -f1), index $(du -ch "$data"/index.sqlite* | tail -n1 | cut -f1) (page cache warm after the build)"
echo

# --- queries -----------------------------------------------------------------------------
echo "## search latency"
MCPTRAIL_BENCH_TOKEN="$token" "$bench" query "$data" "$base"
echo

# --- wrk ---------------------------------------------------------------------------------
wrk_rps() { # wrk_rps PATH [auth] -> "rps p50 p99"
    local path="$1" auth="${2:-}" out
    if [[ -n "$auth" ]]; then
        out="$(wrk -t2 -c"$wrk_conns" -d"${wrk_secs}s" --latency -H "Authorization: Bearer $token" "$base$path")"
    else
        out="$(wrk -t2 -c"$wrk_conns" -d"${wrk_secs}s" --latency "$base$path")"
    fi
    local non2xx
    non2xx="$(grep -o 'Non-2xx or 3xx responses: [0-9]*' <<<"$out" | awk '{print $NF}' || true)"
    [[ -z "$non2xx" ]] || die "wrk $path: $non2xx non-2xx responses"
    local errors
    errors="$(grep -o 'Socket errors:.*' <<<"$out" || true)"
    [[ -z "$errors" ]] || log "wrk $path: $errors"
    printf '%s %s %s\n' \
        "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
        "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
        "$(awk '$1 == "99%" {print $2}' <<<"$out")"
}
echo "## wrk (-t2 -c$wrk_conns -d${wrk_secs}s; server and wrk share the 2 cores)"
echo "| endpoint | requests/s | p50 | p99 | ÷ baseline rps |"
echo "| --- | ---: | ---: | ---: | ---: |"
# Every authenticated request appends a governance.read to the ledger, which the index then
# syncs inline: /status first (its own records only), whoami last (it adds ~40k records/s that
# the next run's first request indexes).
b="$(wrk_rps /assets/app.css)"
read -r b_rps b50 b99 <<<"$b"
s="$(wrk_rps /api/v1/status auth)"
read -r s_rps s50 s99 <<<"$s"
w="$(wrk_rps /api/v1/whoami auth)"
read -r w_rps w50 w99 <<<"$w"
echo "| GET /assets/app.css (baseline: no auth, no index, no audit) | $b_rps | $b50 | $b99 | 1.00 |"
echo "| GET /api/v1/status (token + index sync + meta-audit event) | $s_rps | $s50 | $s99 | $(echo "scale=2; $s_rps / $b_rps" | bc) |"
echo "| GET /api/v1/whoami (token + meta-audit event, no index) | $w_rps | $w50 | $w99 | $(echo "scale=2; $w_rps / $b_rps" | bc) |"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
