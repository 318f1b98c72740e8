#!/usr/bin/env bash
# Set up the environment if needed, then lint and run the whole test suite (CPU only, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
VENV=$VENV bash scripts/setup.sh
echo "==> ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "==> pytest"
"$VENV/bin/python" -m pytest -q --durations=10 "$@"
