#!/usr/bin/env bash
# Set everything up (a local virtual environment with the project and its test deps) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh test
export SYMGRAD_CACHE_DIR="${SYMGRAD_CACHE_DIR:-$(mktemp -d)/symgrad-cache}"
exec .venv/bin/python -m pytest -q "$@"
