#!/usr/bin/env bash
# Create .venv (Python 3.11) with the pinned book/CI environment and dlbook itself.
#
# torch: without an NVIDIA GPU, the pinned version comes from PyTorch's CPU index (one
# 190 MB wheel); a plain `pip install torch==X` would resolve to the CUDA build and about
# 20 nvidia/cuda packages (several GB). If that index cannot be reached, one line says so
# and torch comes from the default index like everything else. With a GPU: default index.
# Override the CPU index with DLBOOK_TORCH_CPU_INDEX (e.g. a local mirror).
#
# Idempotent: a second run with unchanged requirements.txt/pyproject.toml only checks the imports
# (a stamp in .venv records what was installed; delete it to force the pip steps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
check='import dlbook, torch, jupyter_book, jupyterlab, nbval, papermill; print("environment ready: dlbook", dlbook.__version__, "torch", torch.__version__, "(CUDA build)" if torch.version.cuda else "(CPU build)", "jupyterlab", jupyterlab.__version__)'
# JupyterLab in .venv opens a chapter's .md as a notebook on double-click (jupytext's viewer)
mkdir -p .venv/share/jupyter/lab/settings
cp .ci/jupyterlab-overrides.json .venv/share/jupyter/lab/settings/overrides.json
stamp=.venv/.dlbook-setup
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && .venv/bin/python -c "$check" 2>/dev/null; then
  exit 0
fi
rm -f "$stamp"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
pip_q() {  # pip, quiet unless it fails
  if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then
    cat "$log"; echo "setup: pip install $* failed" >&2; exit 1
  fi
}

torch_pin=$(sed -n 's/^\(torch==[^ #]*\).*/\1/p' requirements.txt)
cpu_index=${DLBOOK_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
# Is the pinned torch already there (any build: +cpu, +cu…, plain)?
torch_ok() {
  .venv/bin/python - "${torch_pin#torch==}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(version("torch").split("+")[0] != sys.argv[1])
EOF
}
reachable() {  # does the index answer within 15 s?
  .venv/bin/python - "$1/torch/" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=15).close()
EOF
}
if [ -n "$torch_pin" ] && ! torch_ok; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: $torch_pin from the default index (CUDA build)"
  elif reachable "$cpu_index"; then
    echo "setup: no NVIDIA GPU: $torch_pin from PyTorch's CPU index $cpu_index"
    # Only the torch wheel from there; its dependencies come with requirements.txt below.
    if ! .venv/bin/python -m pip install -q --no-deps --index-url "$cpu_index" "$torch_pin" >"$log" 2>&1; then
      echo "setup: that failed ($(grep -m1 ERROR "$log" || tail -n1 "$log")): $torch_pin from the default index"
    fi
  else
    echo "setup: no NVIDIA GPU, but $cpu_index cannot be reached: $torch_pin from pip's configured index(es)"
  fi
  torch_said=1
fi
pip_q -r requirements.txt
if [ -n "${torch_said:-}" ]; then
  # say what pip actually installed: a configured local index or cache may hold a CPU build
  .venv/bin/python -c 'import torch; print("setup: installed torch", torch.__version__,
      "(CUDA build)" if torch.version.cuda else "(CPU build)")'
fi
pip_q --no-deps -e .
.venv/bin/python -c "$check"
echo "$want" >"$stamp"
