#!/usr/bin/env bash
# README command 1: set up and build the book from the stored outputs -> _build/html/index.html
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
rm -rf _build/html _build/.doctrees
# -W -n --keep-going: any warning (a broken reference, a bad notebook) fails the build.
.venv/bin/jupyter-book build . --all -W -n --keep-going
echo "book: $(pwd)/_build/html/index.html"
