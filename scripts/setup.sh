# Sourced by demo.sh and test.sh: create .venv (once) and install the project with the given extras.
# usage: . scripts/setup.sh [extras]
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".${1:+[$1]}"
