#!/usr/bin/env bash
# Set everything up (a local virtual environment with the project) and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
exec .venv/bin/python examples/quickstart.py "$@"
