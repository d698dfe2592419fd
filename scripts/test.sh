#!/usr/bin/env bash
# Set everything up (a local virtual environment with the project and its test deps) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh test
export SYMGRAD_CACHE_DIR="${SYMGRAD_CACHE_DIR:-$(mktemp -d)/symgrad-cache}"
# test files in parallel worker processes (pytest-xdist), one per core up to 4: Numba compiles on
# one core, and a file's tests share its compiled models (2-core host: 3:07 instead of 5:45)
WORKERS="${SYMGRAD_TEST_WORKERS:-$(.venv/bin/python -c 'import os; print(min(4, os.cpu_count() or 1))')}"
exec .venv/bin/python -m pytest -q -n "$WORKERS" --dist loadfile "$@"
