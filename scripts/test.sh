#!/usr/bin/env bash
# Set everything up (a local virtual environment with the project and its test deps) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
export SYMGRAD_CACHE_DIR="${SYMGRAD_CACHE_DIR:-$(mktemp -d)/symgrad-cache}"
exec .venv/bin/python -m pytest -q "$@"
