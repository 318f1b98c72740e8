#!/usr/bin/env bash
# Create (or reuse) the virtualenv and install modernenc with its dev tools, exactly as the README says.
# VENV picks the folder (default .venv). pip's cache makes re-runs fast.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import modernenc, composer, streaming, transformers" 2>/dev/null; then
  echo "==> installing modernenc and its dependencies into $VENV (first time: about 4 minutes, 7 GB)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
fi
echo "==> environment ready: $VENV"
