#!/usr/bin/env bash
# Installs the OTLP sink's test peers (crates/mcptrail-sinks/tests/it/otlp.rs):
#
#   * rotel (PyPI), an OpenTelemetry collector in Rust: the real OTLP/gRPC and OTLP/HTTP
#     receiver the tests ship to -> <peers>/bin/rotel-agent (the binary of the wheel)
#   * opentelemetry-proto + protobuf (PyPI) for the downstream receiver that decodes what
#     rotel forwards (crates/mcptrail-test-support/peers/otlp_receiver.py)
#
# pinned in .ci/peers/otlp-requirements.txt, in their own venv <peers>/otlp-venv.
# <peers> is .ci/peers, or $MCPTRAIL_PEERS_DIR. Idempotent (.ci/venv.sh): a stamp (hash of the
# requirements + Python version) skips the install when nothing changed. MCPTRAIL_PEERS_FORCE=1
# reinstalls.
set -euo pipefail

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd -- "$script_dir/.." && pwd)"
manifest="$repo_root/.ci/peers/otlp-requirements.txt"
peers_dir="${MCPTRAIL_PEERS_DIR:-$repo_root/.ci/peers}"
python="${PYTHON:-python3}"
venv="$peers_dir/otlp-venv"

log() { printf '[install-otlp-peers] %s\n' "$*" >&2; }
die() {
    printf '[install-otlp-peers] ERROR: %s\n' "$*" >&2
    exit 1
}

command -v "$python" >/dev/null 2>&1 || die "$python not found on PATH (CPython >= 3.10 is required)"
mkdir -p "$peers_dir/bin"
# shellcheck source=venv.sh
source "$script_dir/venv.sh"

rotel_path() {
    "$venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))'
}

installed() {
    [[ -x "$venv/bin/python" ]] &&
        "$venv/bin/python" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' >/dev/null 2>&1 &&
        [[ -x "$(rotel_path 2>/dev/null)" ]]
}

peers_venv "otlp" "$venv" "$manifest" installed
ln -sfn "$(rotel_path)" "$peers_dir/bin/rotel-agent"
log "rotel $("$peers_dir/bin/rotel-agent" --version | awk '{print $2}') -> $peers_dir/bin/rotel-agent; opentelemetry-proto $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))') in $venv"
