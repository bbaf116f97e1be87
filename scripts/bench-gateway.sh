#!/usr/bin/env bash
# End-to-end benchmark of `mcptrail gateway` (issue 5), all in one run on this machine:
#
#   A. HTTP upstream: server-everything (Streamable HTTP) direct  vs  through the gateway
#   B. stdio upstream exposed over HTTP: the gateway (command = [...])  vs  supergateway
#      (npm, an existing stdio-to-Streamable-HTTP proxy) on the same stdio server-everything
#
# Load: wrk at fixed concurrency, each request one `tools/call echo` in an initialized
# session. Prints requests/s and p50/p99 latency per target and the ratios that issue 5's
# targets are stated in (p50 overhead <= 10 % and <= 0.3 ms, throughput >= 90 % of direct).
# The gateway records to a fresh ledger with the default settings (fsync on, redaction on).
#
# Also prints the CPU time each process spent per request during the measured run (from
# /proc/PID/stat), so the gateway's own cost is seen apart from what the machine lends it.
#
# Usage: scripts/bench-gateway.sh [--pin] [CONNECTIONS] [SECONDS]   (defaults 8 and 10)
#   --pin   server-everything on CPU 1, wrk and the gateway on CPU 0 (taskset): the gateway no
#           longer takes its CPU from the single-threaded server, so the p50 difference is
#           the gateway's own added latency rather than CPU stolen from the server on a
#           2-core machine. Without it all share both cores (the harder, default case).
# MCPTRAIL_BENCH_ONLY_A=1 skips part B (supergateway).
# MCPTRAIL_BENCH_ROUNDS=N runs part A N times (default 3), alternating which target goes
#   first; the table shows the medians, and each round's ratios are printed too.
# MCPTRAIL_BENCH_GW_THREADS=N runs part A's gateway with [gateway] worker_threads = N.
# MCPTRAIL_BENCH_NGINX=1 adds a third target to part A: nginx as a plain reverse proxy (keep-alive
#   upstream connections, no buffering, no log) in front of its own fresh server-everything. It
#   records nothing, so its overhead is what one more loopback hop costs on this machine — the
#   floor under any proxy's figures (apt-get install nginx-light; installed here when missing).
# MCPTRAIL_BENCH_GW_TOML='…' is appended to part A's config (printf %b: \n for new lines),
#   e.g. '[gateway.trace]\ninject_meta = false'.
# MCPTRAIL_BENCH_BIN=PATH uses that mcptrail binary instead of building this checkout (to
#   compare two builds on the same machine state).
# Needs: wrk (apt-get install wrk; installed here when missing and running as root),
# the test peers (.ci/install-peers.sh), npm for supergateway (installed under target/).
set -euo pipefail
repo="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
pin=0
if [[ "${1:-}" == --pin ]]; then pin=1; shift; fi
conns="${1:-8}"
secs="${2:-10}"
on_cpu() { # on_cpu N CMD... : run CMD on CPU N when --pin, else anywhere
    local cpu="$1"; shift
    if [[ $pin == 1 ]]; then taskset -c "$cpu" "$@"; else "$@"; fi
}
bg_on_cpu() { # bg_on_cpu N CMD... & : like on_cpu, but exec'd, so that $! is CMD's own pid
    local cpu="$1"; shift
    if [[ $pin == 1 ]]; then exec taskset -c "$cpu" "$@"; else exec "$@"; fi
}
clk_tck="$(getconf CLK_TCK)"
cpu_ticks() { # utime + stime of PID, in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

if ! command -v wrk >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then apt-get install -y -qq wrk >/dev/null; else
        echo "wrk is missing: apt-get install wrk" >&2; exit 1; fi
fi
nginx_on="${MCPTRAIL_BENCH_NGINX:-0}"
if [[ $nginx_on == 1 ]] && ! command -v nginx >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then apt-get install -y -qq nginx-light >/dev/null; else
        echo "nginx is missing: apt-get install nginx-light" >&2; exit 1; fi
fi
./.ci/install-peers.sh >/dev/null 2>&1
everything="$repo/.ci/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
bench_dir="$repo/target/bench-gateway"
mkdir -p "$bench_dir"
if [[ ! -x "$bench_dir/node_modules/.bin/supergateway" ]]; then
    npm install --prefix "$bench_dir" --no-audit --no-fund --loglevel=error supergateway@3.4.3 >/dev/null
fi
if [[ -n ${MCPTRAIL_BENCH_BIN:-} ]]; then
    mcptrail="$MCPTRAIL_BENCH_BIN"
else
    cargo build --release --locked -q -p mcptrail
    mcptrail="$repo/target/release/mcptrail"
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# Start an initialized MCP session at URL; print its Mcp-Session-Id (empty if stateless).
open_session() {
    local url="$1" hdrs
    hdrs="$(curl -s -D - -o /dev/null -X POST "$url" -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' \
        --data '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}')"
    local sid
    sid="$(printf '%s' "$hdrs" | tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}')"
    curl -s -o /dev/null -X POST "$url" -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' -H "Mcp-Session-Id: $sid" \
        -H 'MCP-Protocol-Version: 2025-11-25' \
        --data '{"jsonrpc":"2.0","method":"notifications/initialized"}'
    printf '%s' "$sid"
}

# run NAME URL SERVER_PID [PROXY_PID] -> "rps p50_ms p99_ms server_us proxy_us" on stdout
# (CPU µs per request of each process during the measured run; 0 without a proxy), wrk's
# report in $bench_dir/NAME.txt
run() {
    local name="$1" url="$2" server_pid="$3" proxy_pid="${4:-}" sid s0 s1 p0=0 p1=0
    sid="$(open_session "$url")"
    # Warm up (JIT, connection pools), then measure.
    MCP_SESSION="$sid" MCP_ID_BASE=0 on_cpu 0 wrk -t1 -c"$conns" -d"${MCPTRAIL_BENCH_WARMUP:-2}s" -s scripts/bench/gateway-post.lua "$url" >/dev/null
    s0="$(cpu_ticks "$server_pid")"
    [[ -n $proxy_pid ]] && p0="$(cpu_ticks "$proxy_pid")"
    MCP_SESSION="$sid" MCP_ID_BASE=100000000 on_cpu 0 wrk -t1 -c"$conns" -d"${secs}s" --latency -s scripts/bench/gateway-post.lua "$url" >"$bench_dir/$name.txt"
    s1="$(cpu_ticks "$server_pid")"
    [[ -n $proxy_pid ]] && p1="$(cpu_ticks "$proxy_pid")"
    awk -v name="$name" -v st=$((s1 - s0)) -v pt=$((p1 - p0)) -v hz="$clk_tck" '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        /Requests\/sec/ { rps=$2 }
        / requests in / { n=$1 }
        $1=="50%" { p50=ms($2) } $1=="99%" { p99=ms($2) }
        /Non-2xx/ { bad=$NF }
        END { if (bad>0) { printf "%s: %s non-2xx responses\n", name, bad > "/dev/stderr"; exit 1 }
              printf "%s %.3f %.3f %.0f %.0f\n", rps, p50, p99, st*1e6/hz/n, pt*1e6/hz/n }
    ' "$bench_dir/$name.txt"
}

# --- A. HTTP upstream ---------------------------------------------------------
# Every measurement gets a server started fresh for it: server-everything keeps every
# response in memory for resumability, so a server that has already served is slower (a
# bigger heap to collect), and by an amount that depends on how much it served before.
up_port="$(free_port)"; up2_port="$(free_port)"; gw_port="$(free_port)"
node_pid=""; node2_pid=""
fresh_server() { # fresh_server PORT VAR: (re)start server-everything on PORT, its pid in VAR
    local port="$1" var="$2"
    if [[ -n ${!var} ]]; then kill "${!var}" 2>/dev/null || true; wait "${!var}" 2>/dev/null || true; fi
    PORT="$port" bg_on_cpu 1 node "$everything" streamableHttp >/dev/null 2>&1 &
    printf -v "$var" '%s' "$!"
    pids+=($!)
    wait_port "$port"
}
fresh_server "$up_port" node_pid
fresh_server "$up2_port" node2_pid
data="$(mktemp -d "$bench_dir/data.XXXXXX")"
# MCPTRAIL_BENCH_GW_THREADS=N: [gateway] worker_threads = N (default: one per CPU).
gw_cfg="$bench_dir/http.toml"
printf '[gateway]\nworker_threads = %s\n%b\n' "${MCPTRAIL_BENCH_GW_THREADS:-0}" "${MCPTRAIL_BENCH_GW_TOML:-}" >"$gw_cfg"
bg_on_cpu 0 "$mcptrail" --config "$gw_cfg" gateway --data-dir "$data" --listen "127.0.0.1:$gw_port" \
    --route "/ev=http://127.0.0.1:$up2_port" 2>"$bench_dir/gateway-http.log" & gw_pid=$!; pids+=($!)
wait_port "$gw_port"
targets="direct gateway"
if [[ $nginx_on == 1 ]]; then
    up3_port="$(free_port)"; ng_port="$(free_port)"; node3_pid=""
    fresh_server "$up3_port" node3_pid
    ng_dir="$(mktemp -d "$bench_dir/nginx.XXXXXX")"
    cat >"$ng_dir/nginx.conf" <<NGINX
daemon off;
worker_processes auto;
pid $ng_dir/nginx.pid;
error_log $ng_dir/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $ng_dir/body;
    proxy_temp_path $ng_dir/proxy;
    upstream everything { server 127.0.0.1:$up3_port; keepalive 64; }
    server {
        listen 127.0.0.1:$ng_port;
        location / {
            proxy_pass http://everything;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
NGINX
    bg_on_cpu 0 nginx -c "$ng_dir/nginx.conf" -p "$ng_dir" 2>"$ng_dir/stderr.log" & ng_pid=$!; pids+=($!)
    wait_port "$ng_port"
    targets="direct gateway nginx"
fi
# Rounds alternate the order (direct first, then the gateway first, ...), so that drift on a
# shared machine (another job, CPU frequency) falls on both targets alike. Each target's figures are the medians over the rounds.
rounds="${MCPTRAIL_BENCH_ROUNDS:-3}"
: >"$bench_dir/rounds.txt"
for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then order="$targets"; else order="$(printf '%s\n' $targets | tac | xargs)"; fi
    for t in $order; do
        if [[ $t == direct ]]; then
            fresh_server "$up_port" node_pid
            read -r rps p50 p99 scpu _ < <(run direct "http://127.0.0.1:$up_port/mcp" "$node_pid")
            gcpu=-
        elif [[ $t == nginx ]]; then
            fresh_server "$up3_port" node3_pid
            read -r rps p50 p99 scpu _ < <(run nginx "http://127.0.0.1:$ng_port/mcp" "$node3_pid")
            gcpu=-
        else
            fresh_server "$up2_port" node2_pid
            read -r rps p50 p99 scpu gcpu < <(run gateway "http://127.0.0.1:$gw_port/ev/mcp" "$node2_pid" "$gw_pid")
        fi
        printf '%s %s %s %s %s %s %s\n' "$r" "$t" "$rps" "$p50" "$p99" "$scpu" "$gcpu" >>"$bench_dir/rounds.txt"
    done
done
median() { # median TARGET COLUMN (of rounds.txt)
    awk -v t="$1" -v c="$2" '$2==t {print $c}' "$bench_dir/rounds.txt" | sort -g |
        awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'
}
read -r d_rps d_p50 d_p99 d_scpu <<<"$(median direct 3) $(median direct 4) $(median direct 5) $(median direct 6)"
read -r g_rps g_p50 g_p99 g_scpu g_gcpu <<<"$(median gateway 3) $(median gateway 4) $(median gateway 5) $(median gateway 6) $(median gateway 7)"
# The ratios of each round (the two targets of one round ran back to back), and their medians:
# the paired comparison, which drift between rounds does not enter.
ratios_of() { # ratios_of TARGET: per round, TARGET/direct throughput, p50 difference (ms), p50 ratio - 1
    awk -v t="$1" '{rps[$1,$2]=$3; p50[$1,$2]=$4; if ($1>n) n=$1}
        END {for (r=1; r<=n; r++) printf "%.6f %.6f %.6f\n", rps[r,t]/rps[r,"direct"], p50[r,t]-p50[r,"direct"], p50[r,t]/p50[r,"direct"]-1}' "$bench_dir/rounds.txt"
}
round_ratios_of() { # round_ratios_of TARGET: each round's throughput ratio and p50 difference
    ratios_of "$1" | awk '{printf "%s%.3f (%+.2f ms)", (NR>1?", ":""), $1, $2}'
}
paired_of() { # paired_of TARGET: the medians of those per-round ratios
    ratios_of "$1" |
        awk '{for (c=1; c<=3; c++) v[c,NR]=$c} END {
            for (c=1; c<=3; c++) { for (i=1; i<=NR; i++) a[i]=v[c,i]
                for (i=1; i<=NR; i++) for (j=i+1; j<=NR; j++) if (a[j]<a[i]) {t=a[i]; a[i]=a[j]; a[j]=t}
                m[c] = (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }
            printf "throughput %.3f, p50 %+.3f ms (%+.1f %%)", m[1], m[2], m[3]*100 }'
}
round_ratios="$(round_ratios_of gateway)"
paired="$(paired_of gateway)"
print_nginx() {
    [[ $nginx_on == 1 ]] || return 0
    printf 'A, nginx (records nothing), round by round (nginx/direct): %s\n' "$(round_ratios_of nginx)"
    printf 'A, nginx, median of the rounds (paired): %s\n' "$(paired_of nginx)"
}
if [[ "${MCPTRAIL_BENCH_ONLY_A:-0}" == 1 ]]; then
    printf '\nmcptrail gateway benchmark (A only%s): wrk -t1 -c%s -d%ss, tools/call echo, %s cores, median of %s rounds\n\n' \
        "$([[ $pin == 1 ]] && echo ', pinned')" "$conns" "$secs" "$(nproc)" "$rounds"
    printf '%-34s %10s %10s %10s %12s %12s\n' target "req/s" "p50 ms" "p99 ms" "server µs/req" "gateway µs/req"
    printf '%-34s %10.0f %10.3f %10.3f %12s %12s\n' "A  direct (server-everything HTTP)" "$d_rps" "$d_p50" "$d_p99" "$d_scpu" "-"
    printf '%-34s %10.0f %10.3f %10.3f %12s %12s\n' "A  through mcptrail gateway" "$g_rps" "$g_p50" "$g_p99" "$g_scpu" "$g_gcpu"
    if [[ $nginx_on == 1 ]]; then
        printf '%-34s %10.0f %10.3f %10.3f %12s %12s\n' "A  through nginx (records nothing)" "$(median nginx 3)" "$(median nginx 4)" "$(median nginx 5)" "$(median nginx 6)" "-"
    fi
    awk -v d="$d_rps" -v g="$g_rps" -v dp="$d_p50" -v gp="$g_p50" 'BEGIN {
        printf "\nA: throughput gateway/direct = %.3f (target >= 0.90); p50 overhead = %+.3f ms, %+.1f %% (targets <= 0.3 ms and <= 10 %%)\n", g/d, gp-dp, (gp/dp-1)*100 }'
    printf 'A, round by round (gateway/direct throughput, p50 difference): %s\n' "$round_ratios"
    printf 'A, median of the rounds (paired): %s\n' "$paired"
    print_nginx
    exit 0
fi

# --- B. stdio upstream over HTTP ----------------------------------------------
sg_port="$(free_port)"; gs_port="$(free_port)"
"$bench_dir/node_modules/.bin/supergateway" --stdio "node $everything stdio" \
    --outputTransport streamableHttp --stateful --port "$sg_port" >"$bench_dir/supergateway.log" 2>&1 & sg_pid=$!; pids+=($!)
wait_port "$sg_port"
cfg="$bench_dir/stdio.toml"
printf '[[gateway.routes]]\npath = "/st"\ncommand = ["node", "%s", "stdio"]\n' "$everything" >"$cfg"
data2="$(mktemp -d "$bench_dir/data.XXXXXX")"
"$mcptrail" --config "$cfg" gateway --data-dir "$data2" --listen "127.0.0.1:$gs_port" \
    2>"$bench_dir/gateway-stdio.log" & gs_pid=$!; pids+=($!)
wait_port "$gs_port"
read -r s_rps s_p50 s_p99 _ < <(run supergateway "http://127.0.0.1:$sg_port/mcp" "$sg_pid")
read -r t_rps t_p50 t_p99 _ < <(run gateway-stdio "http://127.0.0.1:$gs_port/st/mcp" "$gs_pid")

events="$("$mcptrail" log --data-dir "$data" --method tools/call --kind mcp.request --json 2>/dev/null | wc -l)"
printf '\nmcptrail gateway benchmark%s: wrk -t1 -c%s -d%ss, tools/call echo, %s cores\n\n' \
    "$([[ $pin == 1 ]] && echo ' (pinned)')" "$conns" "$secs" "$(nproc)"
printf '%-34s %10s %10s %10s\n' target "req/s" "p50 ms" "p99 ms"
printf '%-34s %10.0f %10.3f %10.3f   (server %s µs CPU/req)\n' "A  direct (server-everything HTTP)" "$d_rps" "$d_p50" "$d_p99" "$d_scpu"
printf '%-34s %10.0f %10.3f %10.3f   (server %s, gateway %s µs CPU/req)\n' "A  through mcptrail gateway" "$g_rps" "$g_p50" "$g_p99" "$g_scpu" "$g_gcpu"
printf '%-34s %10.0f %10.3f %10.3f\n' "B  supergateway (stdio -> HTTP)" "$s_rps" "$s_p50" "$s_p99"
printf '%-34s %10.0f %10.3f %10.3f\n' "B  mcptrail gateway (stdio -> HTTP)" "$t_rps" "$t_p50" "$t_p99"
awk -v d="$d_rps" -v g="$g_rps" -v dp="$d_p50" -v gp="$g_p50" -v s="$s_rps" -v t="$t_rps" -v sp="$s_p50" -v tp="$t_p50" 'BEGIN {
    printf "\nA: throughput gateway/direct = %.3f (target >= 0.90); p50 overhead = %+.3f ms, %+.1f %% (targets <= 0.3 ms and <= 10 %%)\n", g/d, gp-dp, (gp/dp-1)*100
    if (s > 0) printf "B: throughput mcptrail/supergateway = %.3f; p50 mcptrail/supergateway = %.3f\n", t/s, tp/sp
    else printf "B: supergateway answered no request (it crashed: see target/bench-gateway/supergateway.log)\n"
}'
printf 'A, round by round (gateway/direct throughput, p50 difference): %s\n' "$round_ratios"
printf 'A, median of the rounds (paired): %s\n' "$paired"
print_nginx
printf 'tools/call requests recorded in the ledger during A: %s (every one, fsync on)\n' "$events"
