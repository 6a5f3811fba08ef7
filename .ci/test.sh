#!/usr/bin/env bash
# README command 2: set up and run every test: the unit tests and `pytest --nbval notebooks/`
# (every notebook re-executed under the smoke profile, derivation outputs compared).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export DLBOOK_PROFILE=smoke MPLBACKEND=Agg
.venv/bin/python -m pytest tests notebooks --nbval --nbval-current-env \
  --nbval-sanitize-with tests/nbval_sanitize.cfg --durations=15 "$@"
