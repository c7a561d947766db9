#!/usr/bin/env bash
# Set up everything s5vec needs on a fresh Debian machine, idempotently:
# Debian chromium (for the browser tests), a Python venv with the package and test tools,
# the pinned npm packages (pyodide, hash-wasm, typescript), the text model (distilled once, cached
# in .cache/model by build_model.sh), then the wheel and web bundle.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON_BOOTSTRAP:-python3}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Debian chromium" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import s5vec, blake3, pytest_playwright, tqdm, build" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.s5vec-installed ]; then
  echo "==> installing the s5vec package and test tools into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  touch .venv/.s5vec-installed
fi
if [ ! -d node_modules/pyodide ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
bash build_model.sh
bash build_wheel.sh
