#!/usr/bin/env bash
# The newcomer's first command: set up the environment, then run the main job on CPU with the bundled data:
# pre-train on Wikipedia -> anneal on PubMed -> fine-tune on ADE -> evaluate, with two controls and a TF-IDF
# baseline. Re-running reuses finished stages. Extra arguments go to `modernenc quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
VENV=$VENV bash scripts/setup.sh
"$VENV/bin/modernenc" quickstart "$@"
