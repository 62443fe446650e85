#!/usr/bin/env bash
# Set up a fresh virtual environment in .venv and run the whole test suite.
#   bash tests/run_all.sh              # everything, slow tests included
#   bash tests/run_all.sh -m "not slow" -x   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -r requirements.txt -r tests/requirements.txt

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests" >&2
fi
exit "$rc"
