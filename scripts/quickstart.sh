#!/usr/bin/env bash
# The newcomer's first command: set up the environment, then run the main job on CPU with the bundled data.
# Until the pre-train -> anneal -> fine-tune chain lands, the main job is the foundation demo.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
VENV=$VENV bash scripts/setup.sh
"$VENV/bin/modernenc" demo --out checkpoints/demo-export --force "$@"
