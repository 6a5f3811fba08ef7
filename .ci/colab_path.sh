#!/usr/bin/env bash
# The Colab reader's path, rehearsed in a clean environment (the weekly workflow
# .github/workflows/colab-path.yml; needs network). For each chapter:
#   1. a fresh virtual environment with what Colab preinstalls (CPU torch and torchvision,
#      numpy, matplotlib, ipywidgets, the Jupyter kernel) plus papermill to run it;
#   2. dlbook installed exactly as the setup cell does in Colab: `dlbook @ git+<url>@<ref>`,
#      url from _config.yml, ref the commit in the notebook's provenance (else the branch),
#      and pytorch-fid where the cell installs it;
#   3. the chapter's .ipynb executed with papermill under the smoke profile, from a folder
#      outside the checkout so that `import dlbook` is the installed package.
#
#   bash .ci/colab_path.sh [NN ...]     # default: every chapter
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=${PYTHON:-$(command -v python3)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
read -r url branch < <("$PY" - <<'PYEOF'
import re
text = open("_config.yml").read()
repo = text[text.index("\nrepository:"):]
url = re.search(r"^\s+url:\s*(\S+)", repo, re.M).group(1).rstrip("/")
branch = re.search(r"^\s+branch:\s*(\S+)", repo, re.M).group(1)
print(url, branch)
PYEOF
)
chapters=("$@")
[ ${#chapters[@]} -gt 0 ] || chapters=(notebooks/[0-9][0-9]_*.ipynb)
failed=()
for nb in "${chapters[@]}"; do
  [ -f "$nb" ] || nb=$(ls notebooks/"$nb"_*.ipynb)
  name=$(basename "${nb%.ipynb}")
  ref=$("$PY" -c 'import json, sys; p = json.load(open(sys.argv[1]))["metadata"].get("dlbook", {}).get("provenance", {}); print(p.get("install_ref") or sys.argv[2])' "$nb" "$branch")
  t0=$SECONDS
  env="$work/$name-env"
  "$PY" -m venv "$env"
  pip=("$env/bin/python" -m pip install -q)
  # what Colab has before the setup cell runs (CPU wheels here; Colab has CUDA ones)
  "${pip[@]}" torch torchvision --index-url https://download.pytorch.org/whl/cpu
  "${pip[@]}" numpy scipy matplotlib tqdm ipywidgets ipykernel papermill pyyaml
  # the setup cell's own lines
  "${pip[@]}" "dlbook @ git+$url@$ref"
  if grep -q "pytorch-fid" "$nb"; then
    "${pip[@]}" "$(grep -o 'pytorch-fid==[0-9.]*' "$nb" | head -n1)"
  fi
  "$env/bin/python" -m ipykernel install --prefix "$env" --name colab-path >/dev/null
  mkdir -p "$work/$name"
  cp "$nb" "$work/$name/"
  if (cd "$work/$name" && JUPYTER_PATH="$env/share/jupyter" DLBOOK_PROFILE=smoke MPLBACKEND=Agg \
        "$env/bin/papermill" "$name.ipynb" out.ipynb -k colab-path -p profile smoke --no-progress-bar \
        --log-level WARNING); then
    echo "$name: ok with dlbook @ $ref ($((SECONDS - t0)) s)"
  else
    echo "$name: FAILED with dlbook @ $ref ($((SECONDS - t0)) s)"
    failed+=("$name")
  fi
  rm -rf "$env"
done
cd "$root"
if [ ${#failed[@]} -gt 0 ]; then
  echo "the Colab path failed for: ${failed[*]}"
  exit 1
fi
