#!/usr/bin/env bash
# demo.sh — install mcptrail and record one real MCP session end to end.
#
#   1. `cargo install --locked --path crates/mcptrail` (the `mcptrail` binary into ~/.cargo/bin)
#   2. the pinned demo peers (.ci/install-peers.sh: the reference server
#      @modelcontextprotocol/server-everything from npm, the official Python SDK `mcp` from PyPI)
#   3. the Python SDK client talks to server-everything through `mcptrail wrap`
#      (initialize, tools/list, prompts/list, resources/list, two tool calls, a resource read,
#      a prompt) — exactly as a desktop client would with `mcptrail wrap --` in its config
#   4. prints the session's timeline and verifies the ledger's hash chain
#
# The trail lands in the default data directory ($MCPTRAIL_DATA_DIR, else
# $XDG_DATA_HOME/mcptrail, else ~/.local/share/mcptrail); afterwards try `mcptrail log`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing mcptrail (cargo install --locked --path crates/mcptrail)"
cargo install --locked --quiet --path crates/mcptrail
bin_dir="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin"
mcptrail="$bin_dir/mcptrail"
"$mcptrail" --version

step "installing the demo peers (server-everything from npm, the MCP Python SDK from PyPI)"
./.ci/install-peers.sh

step "recording: Python SDK client -> mcptrail wrap -> server-everything"
everything=(node "$PWD/.ci/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js" stdio)
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
.ci/peers/venv/bin/python crates/mcptrail-test-support/peers/py_client.py --out "$summary" -- \
    "$mcptrail" wrap --agent-id demo-agent -- "${everything[@]}" 2>/dev/null
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("client saw:", s["server_info"]["name"], "-", len(s["tools"]), "tools;", " | ".join(c["content"][0]["text"] for c in s["calls"]))' "$summary"

step "mcptrail timeline --session latest"
"$mcptrail" timeline --session latest

step "mcptrail verify"
"$mcptrail" verify

step "mcptrail drill --practice (tamper with copies of a practice ledger in every way; each must be caught)"
"$mcptrail" drill --practice
