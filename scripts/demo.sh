#!/usr/bin/env bash
# Set everything up (a local virtual environment with the project, scikit-learn and matplotlib) and run
# the demo: a digits classifier declared in the DSL, its derivation and kernel, four optimizers compared.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh demo
exec .venv/bin/python examples/optimizer_demo.py "$@"
