#!/usr/bin/env bash
# README command 2: set up and run every test: the unit tests and `pytest --nbval notebooks/`
# (every notebook re-executed under the smoke profile, derivation outputs compared). The nbval
# settings (this environment's kernel, the sanitizer) come from conftest.py, so this is the
# plain command a reader types. CI also runs this script in a fresh clone: no ../shared, offline,
# an empty data cache.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export DLBOOK_PROFILE=smoke MPLBACKEND=Agg
.venv/bin/python -m pytest --nbval tests notebooks/ --durations=15 "$@"
