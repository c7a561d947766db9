"""The chunked text model in real Pyodide (Node) against a real portal equals CPython's embedding."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from s5vec import embed
from s5vec.s5.client import PortalClient
from s5vec.s5.portal import serve
from s5vec.store import ChunkStore

from conftest import ROOT
from embed_kit import model_dir

WHEELS = [ROOT / ".cache" / "wheels" / "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl",
          ROOT / ".cache" / "wheels" / "cbor2-5.9.0-py3-none-any.whl"]

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (ROOT / "node_modules" / "pyodide").is_dir()
    or not all(w.exists() for w in WHEELS), reason="node, node_modules/pyodide and the wheels (build_wheel.sh) needed")

TEXTS = ["space documentary", "romantic comedy in paris", "Amélie (2001), Comedy, Romance", "東京物語",
         "Москва слезам не верит", "x" * 10_000, "   ", "?!", "🎬", "naïve café"]


def test_pyodide_embeds_like_cpython(tmp_path):
    local = embed.load_local(model_dir())
    server, _ = serve(tmp_path / "portal")
    try:
        cid = embed.publish_model(local, ChunkStore(PortalClient([server.url])))
        args = json.dumps({"model": cid, "texts": TEXTS, "timed": TEXTS[:5] * 20})
        proc = subprocess.run(["node", str(ROOT / "tests" / "fixtures" / "pyodide_embed.mjs"), str(ROOT / "pkg"),
                               server.url, args, *map(str, WHEELS)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["platform"] == "emscripten"
    for text, vec, err in zip(TEXTS, res["vecs"], res["errors"]):
        try:
            want = local.embed_one(text)
        except Exception as exc:  # the same typed error on both sides
            assert err == type(exc).__name__, (text, err)
            continue
        assert err is None, (text, err)
        np.testing.assert_allclose(np.array(vec, dtype=np.float32), want, atol=1e-6, err_msg=repr(text))
    assert max(res["cold_bytes"]) < 100_000
    print(f"\npyodide: open {res['open_ms']:.0f} ms / {res['open_bytes']} B; warm embed p50 "
          f"{np.median(res['warm_ms']):.3f} ms, p99 {np.percentile(res['warm_ms'], 99):.3f} ms; "
          f"cold row bytes per query {res['cold_bytes']}")
    slow = sorted(zip(res["warm_ms"], res["warm_text"]), reverse=True)[:5]
    print("slowest warm embeds:", [(round(t, 2), q[:20]) for t, q in slow])
