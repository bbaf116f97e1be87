# Sourced by .ci/install-peers.sh and .ci/install-otlp-peers.sh: the one way the test peers'
# Python virtualenvs are made, pinned and skipped when already in place.
#
#   peers_venv LABEL VENV REQUIREMENTS CHECK
#
# LABEL names the venv in log lines; VENV is its directory; REQUIREMENTS the pinned
# requirements file; CHECK a command (usually a function of the caller) that succeeds when
# the install is intact. The venv is (re)made when MCPTRAIL_PEERS_FORCE=1, when its stamp
# (Python version + SHA-256 of REQUIREMENTS, in VENV/.mcptrail-peers-stamp) differs, or when
# CHECK fails; otherwise nothing happens, in well under a second.
# Expects from the caller: $python (the interpreter), log and die.

peers_venv() {
    local label="$1" venv="$2" reqs="$3" check="$4"
    local stamp_file="$venv/.mcptrail-peers-stamp" py_version stamp
    [[ -f "$reqs" ]] || die "$reqs is missing"
    py_version="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
    stamp="python $py_version $(sha256sum "$reqs" | cut -d' ' -f1)"
    if [[ "${MCPTRAIL_PEERS_FORCE:-0}" != 1 && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] && "$check"; then
        log "$label venv up to date (skipped)"
        return 0
    fi
    log "creating venv $venv ($label) with $python $py_version"
    rm -rf -- "$venv"
    "$python" -m venv "$venv"
    log "pip install -r $reqs"
    "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
        --require-virtualenv -r "$reqs"
    "$check" || die "pip finished but $label is incomplete in $venv ($check fails)"
    printf '%s\n' "$stamp" >"$stamp_file"
}
