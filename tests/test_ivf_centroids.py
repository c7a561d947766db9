"""Float16 centroids (ivf_centroids chunk): new IVF indexes store them as float16, exactly (the
index rounds them right after k-means); float32 centroids of indexes saved before read unchanged.
Recall is checked against the flat index as the oracle."""
from pathlib import Path

import numpy as np
import pytest

from s5vec import api, layout
from s5vec.errors import FormatError
from s5vec.index import ivf_store
from s5vec.index.ivf import IVFIndex
from s5vec.index.ivf_store import CENTROIDS_KIND
from s5vec.index.ivf_tune import centroid_bytes
from s5vec.s5.client import MemoryClient

import kit

FIXTURE = Path(__file__).parent / "fixtures" / "ivf_f32_centroids.cbor"
N, D = 6000, 48


@pytest.fixture(scope="module")
def data():
    x = kit.clustered(N, D, 60, seed=11)
    q = kit.queries_near(x, 60, seed=12)
    ids = [f"v{i}" for i in range(N)]
    return ids, x, q, kit.flat_oracle(ids, x, "cosine")


def _stored(io, desc):
    return np.asarray(io.get(desc["centroids"], CENTROIDS_KIND)["centroids"])


def _build(ids, x, metric="cosine", **params):
    idx = IVFIndex(x.shape[1], metric, **params)
    idx.add(ids, x)
    assert idx.trained
    return idx


PARAMS = [
    dict(nlist=32, nprobe=6, codec="flat"),
    dict(nlist=32, nprobe=6, codec="pq", pq_m=12, refine="pq", refine_m=24, refine_rows=32),
]


@pytest.mark.parametrize("params", PARAMS, ids=["flat", "pq-refine"])
def test_new_index_stores_float16_centroids_exactly(data, params):
    ids, x, q, oracle = data
    idx = _build(ids, x, **params)
    io = kit.MemChunks()
    desc = idx.save(io)
    io2 = io.fresh()
    stored = _stored(io2, desc)
    assert stored.dtype == np.float16 and stored.shape == (32, D)
    assert 0 <= centroid_bytes(32, D) - stored.nbytes <= 16  # the byte model counts what is written (+ CBOR header)
    # lossless: the resident index already works with the float16 values
    assert np.array_equal(stored.astype(np.float32), idx.centroids)
    lazy = IVFIndex.load(desc, io2)
    assert lazy.centroids.dtype == np.float32 and np.array_equal(lazy.centroids, idx.centroids)
    for v in q[:20]:
        kit.assert_same_ranking(kit.search(lazy, v, 10, chunks=io2), kit.search(idx, v, 10))
    assert kit.recall_at_k(lazy, q, 10, oracle=oracle, chunks=io2) >= 0.9
    # saved again unchanged: the same centroids CID (float16 stays float16)
    assert lazy.save(io2)["centroids"] == desc["centroids"]


@pytest.mark.parametrize("params", PARAMS, ids=["flat", "pq-refine"])
def test_float16_centroids_keep_recall(data, params, monkeypatch):
    """The same index with float32 centroids (as written before) against the flat oracle: float16
    costs no recall (the lists hardly move; residuals are taken from the rounded centroids)."""
    ids, x, q, oracle = data
    r16 = kit.recall_at_k(_build(ids, x, **params), q, 10, oracle=oracle)
    monkeypatch.setattr("s5vec.index.ivf.storable_centroids", lambda c: (np.asarray(c, np.float32), False))
    idx32 = _build(ids, x, **params)
    io = kit.MemChunks()
    assert _stored(io, idx32.save(io)).dtype == np.float32
    r32 = kit.recall_at_k(idx32, q, 10, oracle=oracle)
    # not worse (PQ codebooks trained on slightly different residuals differ a little either way)
    assert r32 >= 0.9 and r16 >= r32 - 0.01, (r16, r32)


def _fixture():
    doc = layout.loads(FIXTURE.read_bytes())
    io = kit.MemChunks()
    io.client = MemoryClient(doc["blobs"])
    return doc, io.fresh()


def test_float32_centroids_saved_before_read_unchanged():
    """An IVF-PQ index with PQ refine saved by the code before float16 centroids (the fixture's
    chunks as that code wrote them): read, searched and saved again as float32."""
    doc, io = _fixture()
    desc, x, ids = doc["desc"], np.asarray(doc["vectors"], np.float32), list(doc["ids"])
    stored = _stored(io, desc)
    assert stored.dtype == np.float32
    lazy = IVFIndex.load(desc, io)
    assert np.array_equal(lazy.centroids, stored)
    oracle = kit.flat_oracle(ids, x, "cosine")
    q = kit.queries_near(x, 40, seed=7)
    assert kit.recall_at_k(lazy, q, 10, oracle=oracle, chunks=io) >= 0.85
    resident = IVFIndex.load(desc, io)
    while resident.lazy:
        resident.load_all({c: io.get(c) for c in resident.plan_all()})
    for v in q[:10]:
        kit.assert_same_ranking(kit.search(resident, v, 10), kit.search(lazy, v, 10, chunks=io))
    # an edit keeps the old centroids as they were (their residual codes were taken from them)
    resident.add(["new"], x[:1] + 0.01)
    out = kit.MemChunks()
    d2 = resident.save(out)
    assert d2["centroids"] == desc["centroids"]
    assert _stored(out, d2).dtype == np.float32
    # a retrain makes new centroids: float16 from then on
    resident.retrain()
    assert _stored(out, resident.save(out)).dtype == np.float16


@pytest.mark.parametrize("scale", [1e6, 1e-7])
def test_magnitudes_float16_cannot_hold_stay_float32(scale):
    """l2 data too large (float16 overflows) or too small (subnormal, imprecise) for float16."""
    x = kit.clustered(3000, 16, 20, seed=4) * np.float32(scale)
    ids = [f"r{i}" for i in range(3000)]
    idx = _build(ids, x, "l2", nlist=16, nprobe=16, codec="flat")
    io = kit.MemChunks()
    desc = idx.save(io)
    stored = _stored(io, desc)
    assert stored.dtype == np.float32 and np.isfinite(stored).all()
    io2 = io.fresh()
    lazy = IVFIndex.load(desc, io2)
    oracle = kit.flat_oracle(ids, x, "l2")
    assert kit.recall_at_k(lazy, x[:30], 10, oracle=oracle, chunks=io2) == 1.0  # every list probed


def test_storable_centroids_rule():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(64, 32)).astype(np.float32)
    r, f16 = ivf_store.storable_centroids(c)
    assert f16 and r.dtype == np.float32 and np.array_equal(r, c.astype(np.float16).astype(np.float32))
    assert not ivf_store.storable_centroids(c * 1e5)[1]  # overflows float16
    assert not ivf_store.storable_centroids(c * 1e-6)[1]  # subnormal in float16
    kept, f16 = ivf_store.storable_centroids(c * 1e5)
    assert np.array_equal(kept, c * np.float32(1e5))


def test_integer_centroids_are_a_format_error(data):
    ids, x, _, _ = data
    idx = _build(ids[:2000], x[:2000], nlist=8, nprobe=8, codec="flat")
    io = kit.MemChunks()
    desc = idx.save(io)
    body = dict(io.get(desc["centroids"], CENTROIDS_KIND))
    body["centroids"] = np.zeros((8, D), np.int32)
    bad = dict(desc, centroids=io.put(CENTROIDS_KIND, body))
    with pytest.raises(FormatError, match="centroids"):
        IVFIndex.load(bad, io.fresh())


def test_hybrid_ivf_part_float16(data):
    ids, x, q, oracle = data
    hyb = api.new_index("hybrid", D, "cosine", {"recent_threshold": 3600, "ivf": {"nlist": 32, "nprobe": 8}})
    hyb.add(ids, x, timestamps=[1.0e9] * N)  # old: all in the IVF part
    io = kit.MemChunks()
    desc = hyb.save(io)
    assert _stored(io, desc["historical"]).dtype == np.float16
    back = type(hyb).load(desc, io.fresh())
    assert np.array_equal(back.historical.centroids, hyb.historical.centroids)
    assert kit.recall_at_k(hyb, q, 10, oracle=oracle) >= 0.9
