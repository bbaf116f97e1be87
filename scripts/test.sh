#!/usr/bin/env bash
# The one command that runs mcptrail's whole test suite (CI runs it too):
#
#   1. installs/refreshes the pinned MCP test peers (.ci/install-peers.sh)
#   2. doctests: `cargo test --workspace --doc` (nextest does not run them)
#   3. the exhaustive tamper sweeps (every byte offset, truncation and record
#      tamper of small ledgers must be detected by `verify`), in a release build
#   4. unit + integration tests: `cargo nextest run --workspace` when
#      cargo-nextest is installed, else `cargo test --workspace`
#
# Every step runs even if an earlier one fails; the script exits non-zero if
# any did. The main test run goes last so that the last summary printed is
# its own. Extra arguments are passed to step 4 only, e.g.
# `scripts/test.sh -E 'test(relay)'` (nextest) or `scripts/test.sh relay`.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

echo "==> install test peers"
./.ci/install-peers.sh

failed=()

echo "==> cargo test --workspace --doc --locked"
cargo test --workspace --doc --locked || failed+=("doctests (exit $?)")

echo "==> exhaustive tamper sweeps (release): cargo test --release -p mcptrail-ledger --test tamper_props -- --ignored"
cargo test --release --locked -p mcptrail-ledger --test tamper_props -- --ignored \
    || failed+=("exhaustive tamper sweeps (exit $?)")

if cargo nextest --version >/dev/null 2>&1; then
    echo "==> cargo nextest run --workspace --locked --no-fail-fast $*"
    cargo nextest run --workspace --locked --no-fail-fast "$@" || failed+=("cargo nextest run (exit $?)")
else
    echo "==> cargo-nextest not found: cargo test --workspace --locked --no-fail-fast $*"
    cargo test --workspace --locked --no-fail-fast "$@" || failed+=("cargo test (exit $?)")
fi

if [[ ${#failed[@]} -ne 0 ]]; then
    printf 'TESTS FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
# Nothing printed after the test runner's own summary on success: CI reads it
# as the closing line.
