#!/usr/bin/env bash
# Run every test: CPython unit/integration tests (tests/) and real-Chromium browser tests (e2e/).
# Sets up first (idempotent), so this one command works on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
exec .venv/bin/python -m pytest tests e2e "$@"
