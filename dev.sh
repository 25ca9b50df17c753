#!/usr/bin/env bash
# One entry point that does all set-up itself on a fresh machine, then runs a job.
#   ./dev.sh demo    build a virtual dataset from generated sample files and read it back
#   ./dev.sh test    the whole test suite (what CI runs), Azure/GCS emulators included
#   ./dev.sh bench   the benchmark suite against the peers (installs the `bench` extra)
#   ./dev.sh lint    ruff (check, format) and mypy
#   ./dev.sh corpus  sample files from PyPI packages, read virtually, checked against their libraries
# Python >= 3.12 is looked for on PATH, then under pyenv; a virtualenv is made in .venv
# and the project is installed into it (again only when pyproject.toml changes).
# `test` also installs Azurite (the Azure Blob emulator, npm package) into .tools/ once.
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
    local candidates=(python3.12 python3.13 python3)
    for c in "${candidates[@]}"; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3; do
        if [ -x "$p" ]; then echo "$p"; return 0; fi
    done
    echo "dev.sh: no Python >= 3.12 found on PATH or under pyenv; install one (e.g. pyenv install 3.12)" >&2
    return 1
}

ensure_env() {
    local extra="$1"
    local venv=".venv"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        rm -rf "$venv"
        "$(find_python)" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip
    fi
    local stamp="$venv/.installed-$extra"
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$extra]"
        echo "$want" > "$stamp"
    fi
    PY="$venv/bin/python"
}

AZURITE_VERSION=3.37.0

ensure_azurite() {
    # the Azure emulator the tests start (tests/conftest.py); installed once into .tools/
    local stamp=".tools/.installed-azurite-$AZURITE_VERSION"
    if [ -f "$stamp" ] && [ -x .tools/node_modules/.bin/azurite-blob ]; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "dev.sh: npm not found; the Azure tests need Azurite (an npm package): install" \
             "Node.js and npm (e.g. apt-get install nodejs npm), then run ./dev.sh test again" >&2
        return 1
    fi
    echo "dev.sh: installing Azurite $AZURITE_VERSION into .tools/ (once)" >&2
    mkdir -p .tools
    npm install --prefix .tools --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
    touch "$stamp"
}

cmd="${1:-help}"
shift || true
case "$cmd" in
    demo)
        ensure_env test
        exec "$PY" -m zarr_manifest.demo "$@"
        ;;
    test)
        ensure_env test
        ensure_azurite
        # the emulator tests fail, not skip, when an emulator is missing
        ZARR_MANIFEST_REQUIRE_EMULATORS=1 exec "$PY" -m pytest -q "$@"
        ;;
    bench)
        ensure_env bench
        exec "$PY" benchmarks/run.py "$@"
        ;;
    corpus)
        # downloads sdists/wheels into ~/.cache/zarr-manifest-corpus (or $ZARR_MANIFEST_CORPUS)
        ensure_env test
        exec "$PY" tests/corpus/corpus.py "$@"
        ;;
    lint)
        ensure_env test
        "$PY" -m ruff check src tests benchmarks
        "$PY" -m ruff format --check src tests benchmarks
        exec "$PY" -m mypy src
        ;;
    *)
        sed -n '2,10p' "$0"
        exit 2
        ;;
esac
