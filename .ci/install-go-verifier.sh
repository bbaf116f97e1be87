#!/usr/bin/env bash
# Builds the independent checkpoint verifier that the ledger's integration tests run
# (crates/mcptrail-ledger/tests/independent_verifier.rs):
#
#   crates/mcptrail-test-support/go/checkpoint-verify/main.go -> <peers>/bin/checkpoint-verify
#
# It is written against Go's reference packages golang.org/x/mod/sumdb/note and
# golang.org/x/mod/sumdb/tlog, taken from Debian (no Go module proxy, no network for `go`):
#
#   * golang-go                -> the Go toolchain (/usr/bin/go)
#   * golang-golang-x-mod-dev  -> x/mod sources in /usr/share/gocode/src/golang.org/x/mod
#
# Missing packages are installed with apt-get (as root, or through sudo). The build runs in
# GOPATH mode (GO111MODULE=off, GOPATH=/usr/share/gocode), with CGO disabled, offline.
#
# <peers> is .ci/peers under the repository root, or $MCPTRAIL_PEERS_DIR when set, as for
# .ci/install-peers.sh. Idempotent: a stamp (hash of main.go, Go version, x/mod version) next to
# the binary skips the build when nothing changed, so a second run takes well under a second.
# Set MCPTRAIL_PEERS_FORCE=1 to rebuild.
set -euo pipefail

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd -- "$script_dir/.." && pwd)"
peers_dir="${MCPTRAIL_PEERS_DIR:-$repo_root/.ci/peers}"
force="${MCPTRAIL_PEERS_FORCE:-0}"
src_dir="$repo_root/crates/mcptrail-test-support/go/checkpoint-verify"
gopath=/usr/share/gocode
xmod="$gopath/src/golang.org/x/mod"
packages=(golang-go golang-golang-x-mod-dev)

log() { printf '[install-go-verifier] %s\n' "$*" >&2; }
die() {
    printf '[install-go-verifier] ERROR: %s\n' "$*" >&2
    exit 1
}

[[ -f "$src_dir/main.go" ]] || die "$src_dir/main.go is missing"

# --- Debian packages -------------------------------------------------------
pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}
toolchain_ok() {
    command -v go >/dev/null 2>&1 &&
        [[ -f "$xmod/sumdb/note/note.go" && -f "$xmod/sumdb/tlog/tlog.go" ]]
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${packages[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
elif ! toolchain_ok; then
    die "no dpkg and no Go toolchain with $xmod: install Go and golang.org/x/mod there"
fi

if ((${#missing[@]} > 0)); then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]}"
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install ${missing[*]} as root"
        sudo=(sudo -n)
    fi
    apt_install() {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "${missing[@]}"
    }
    log "apt-get install ${missing[*]}"
    if ! apt_install; then
        log "apt-get install failed: apt-get update, then retry"
        "${sudo[@]}" apt-get update -q
        apt_install
    fi
fi
toolchain_ok || die "go or $xmod/sumdb/{note,tlog} missing after installing ${packages[*]}"

# --- Build -----------------------------------------------------------------
bin_dir="$peers_dir/bin"
bin="$bin_dir/checkpoint-verify"
stamp_file="$bin_dir/.checkpoint-verify-stamp"
go_version="$(go env GOVERSION)"
xmod_version="$(dpkg-query -W -f='${Version}' golang-golang-x-mod-dev 2>/dev/null || echo unknown)"
stamp="$go_version x/mod $xmod_version $(sha256sum "$src_dir/main.go" | cut -d' ' -f1)"

if [[ "$force" != 1 && -x "$bin" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    log "checkpoint-verify up to date (skipped): $bin"
    exit 0
fi

mkdir -p "$bin_dir"
scratch="$(mktemp -d)"
trap 'rm -rf -- "$scratch"' EXIT
log "go build ($go_version, golang.org/x/mod $xmod_version) -> $bin"
(
    cd "$src_dir"
    # GOPATH mode: imports resolve in $gopath/src; nothing is fetched. GOFLAGS is cleared so a
    # user's -mod=… (module-only) cannot break the build; the cache is thrown away afterwards.
    env GO111MODULE=off GOPATH="$gopath" GOFLAGS= GOPROXY=off GOTOOLCHAIN=local \
        CGO_ENABLED=0 GOCACHE="$scratch/cache" \
        go build -trimpath -o "$scratch/checkpoint-verify" .
)
mv -f "$scratch/checkpoint-verify" "$bin"
printf '%s\n' "$stamp" >"$stamp_file"
log "installed checkpoint-verify ($go_version, golang.org/x/mod $xmod_version): $bin"
