# Sourced by the scripts in scripts/: makes sure .venv exists and holds xferd.
#   bootstrap           runtime dependencies only
#   bootstrap test      plus the test dependencies
# Re-installs when pyproject.toml is newer than the last install.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO/.venv"

bootstrap() {
    local extras="${1:-}"
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "xferd: $python not found; install Python 3.11 or newer" >&2
        exit 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "xferd: Python 3.11 or newer is required ($("$python" --version 2>&1) found)" >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "xferd: creating $VENV" >&2
        if ! "$python" -m venv "$VENV"; then
            rm -rf "$VENV"
            echo "xferd: could not create a virtual environment; on Debian/Ubuntu:" \
                 "apt-get install python3-venv" >&2
            exit 1
        fi
    fi
    # An install with extras installed xferd itself too: the plain bootstrap is
    # satisfied by any stamp newer than pyproject.toml (else a script without
    # extras, run after `scripts/test`, would reinstall for nothing).
    local stamp="$VENV/.installed${extras:+-$extras}" fresh=false candidate
    local candidates=("$stamp")
    if [ -z "$extras" ]; then
        candidates+=("$VENV"/.installed-*)
    fi
    for candidate in "${candidates[@]}"; do
        if [ -f "$candidate" ] && ! [ "$REPO/pyproject.toml" -nt "$candidate" ]; then
            fresh=true
        fi
    done
    if ! $fresh; then
        echo "xferd: installing dependencies into $VENV${extras:+ (with $extras extras)}" >&2
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e "$REPO${extras:+[$extras]}"
        touch "$stamp"
    fi
}
