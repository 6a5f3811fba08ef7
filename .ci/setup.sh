#!/usr/bin/env bash
# Create .venv (Python 3.11) with the pinned book/CI environment and dlbook itself.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
log=$(mktemp)
pip_q() {  # pip, quiet unless it fails
  if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then
    cat "$log"; echo "setup: pip install $* failed" >&2; exit 1
  fi
}
pip_q -r requirements.txt
pip_q --no-deps -e .
rm -f "$log"
.venv/bin/python -c "import dlbook, torch, jupyter_book, nbval, papermill; print('environment ready: dlbook', dlbook.__version__, 'torch', torch.__version__)"
