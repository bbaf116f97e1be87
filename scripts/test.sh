#!/usr/bin/env bash
# The one command that runs mcptrail's whole test suite (CI runs it too):
#
#   1. installs/refreshes the pinned MCP test peers (.ci/install-peers.sh)
#   2. doctests: `cargo test --workspace --doc` (nextest does not run them)
#   3. unit + integration tests: `cargo nextest run --workspace` when
#      cargo-nextest is installed, else `cargo test --workspace`
#
# Steps 2 and 3 both run even if one fails; the script exits non-zero if
# either did. The doctests go first so that the last summary printed is the
# one of the main test run. Extra arguments are passed to step 3 only, e.g.
# `scripts/test.sh -E 'test(relay)'` (nextest) or `scripts/test.sh relay`.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

echo "==> install test peers"
./.ci/install-peers.sh

failed=()

echo "==> cargo test --workspace --doc --locked"
cargo test --workspace --doc --locked || failed+=("doctests (exit $?)")

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
