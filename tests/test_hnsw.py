"""HNSW index: recall against the flat oracle, filters, deletes, upserts, vacuum, persistence."""
from __future__ import annotations

import time

import numpy as np
import pytest

from s5vec import api, kernels
from s5vec.errors import DimensionError, FormatError, InvalidArgumentError, InvalidVectorError, UnknownIdError
from s5vec.filters import parse
from s5vec.index.base import Index
from s5vec.index.hnsw import HNSWIndex

import kit
from kit import MemChunks as MemStore

DIM = 128


def clustered(n: int, dim: int = DIM, clusters: int = 100, seed: int = 1, spread: float = 0.5):
    """(data, 100 queries near the data, cluster labels) from the kit's one generator."""
    x, labels = kit.clustered(n, dim, clusters, seed, spread, labels=True)
    return x, kit.queries_near(x, 100, noise=spread, seed=seed), labels


def recall(index: HNSWIndex, oracle, queries, k=10, filter=None, **kw) -> float:
    return kit.recall_at_k(index, queries, k, oracle=oracle, filter=filter, **kw)


def oracle_of(idx: HNSWIndex):
    """The flat index over the live records of ``idx`` (the recall oracle)."""
    items = list(idx.items())
    return kit.flat_oracle([i[0] for i in items], np.stack([i[1] for i in items]), idx.metric,
                           [i[2] for i in items], [i[3] for i in items])


# ---------------------------------------------------------------- the 20k index (shared, read-only)

N_BIG = 20_000


@pytest.fixture(scope="module")
def big():
    x, q, labels = clustered(N_BIG)
    meta = [{"cluster": int(c), "parity": i % 2, "tag": ["a", "b", "c"][i % 3]} for i, c in enumerate(labels)]
    idx = HNSWIndex(DIM, "cosine", M=16, ef_construction=100, ef_search=64, seed=0)
    calls = []
    t0 = time.perf_counter()
    idx.add([str(i) for i in range(N_BIG)], x, meta, timestamps=np.arange(N_BIG, dtype=float),
            progress=lambda d, t: calls.append((d, t)))
    build = time.perf_counter() - t0
    print(f"\nhnsw build {N_BIG}x{DIM} M=16 efc=100: {build:.1f}s")
    return idx, x, q, labels, calls, build


_ORACLE: dict = {}


def big_oracle(big):
    """The flat oracle of the shared 20k index (built once)."""
    if "big" not in _ORACLE:
        _ORACLE["big"] = oracle_of(big[0])
    return _ORACLE["big"]


def test_protocol_and_basics(big):
    idx, x, _, _, _, _ = big
    assert isinstance(idx, Index)
    assert idx.kind == "hnsw" and len(idx) == N_BIG
    assert "17" in idx and "nope" not in idx and 17 not in idx
    assert idx.metadata("17")["parity"] == 1
    assert idx.timestamp("17") == 17.0
    np.testing.assert_allclose(idx.vector("17"), kernels.prepare(x[17:18], "cosine")[0], rtol=1e-6)
    assert idx.ids()[:3] == ["0", "1", "2"]
    assert idx.plan(api.prepare_query(idx, x[0])) == []
    with pytest.raises(UnknownIdError):
        idx.metadata("nope")


def test_progress_called(big):
    calls = big[4]
    assert len(calls) >= 10
    assert calls[-1] == (N_BIG, N_BIG)
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:]))


def test_build_time_reasonable(big):
    assert big[5] < 120  # typically ~20 s on 2 cores; generous for slow CI


def test_recall_cosine_20k(big):
    idx, x, q, _, _, _ = big
    t0 = time.perf_counter()
    r = recall(idx, big_oracle(big), q)
    print(f"recall@10 ef=64: {r:.3f} ({len(q) / (time.perf_counter() - t0):.0f} q/s incl. the oracle)")
    assert r >= 0.95


def test_no_hangs_and_ef_monotone(big):
    idx, x, q, _, _, _ = big
    recalls = []
    for ef in (10, 50, 100, 200, 500):
        for qq in q[:20]:
            assert len(kit.search(idx, qq, 10, ef=ef)) == 10
        recalls.append(recall(idx, big_oracle(big), q[:40], ef=ef))
    for a, b in zip(recalls, recalls[1:]):
        assert b >= a - 0.02, recalls
    assert recalls[-1] >= 0.99


def test_results_sorted_and_distances_exact(big):
    idx, x, q, _, _, _ = big
    res = kit.search(idx, q[0], 10)
    ds = [d for _, d in res]
    assert ds == sorted(ds)
    p = kernels.prepare(x, "cosine")
    qq = kernels.prepare(q[:1], "cosine")[0]
    for i, d in res:
        assert abs(float(kernels.distances(qq, p[int(i) : int(i) + 1], "cosine")[0]) - d) < 1e-5


def test_k_larger_than_ef_and_validation(big):
    idx, _, q, _, _, _ = big
    assert len(kit.search(idx, q[0], 150, ef=10)) == 150  # ef = max(ef, k)
    for bad in (0, -1, 1.5, "3"):
        with pytest.raises(InvalidArgumentError):
            kit.search(idx, q[0], bad)
    with pytest.raises(InvalidArgumentError):
        kit.search(idx, q[0], 10, ef=0)
    with pytest.raises(DimensionError):
        kit.search(idx, q[0][:5], 10)
    with pytest.raises(InvalidVectorError):
        kit.search(idx, np.full(DIM, np.nan), 10)


def test_filter_traversed_never_returned(big):
    idx, x, q, labels, _, _ = big
    parity = np.arange(N_BIG) % 2
    flt = parse({"parity": 0})
    for qq in q[:20]:
        res = kit.search(idx, qq, 10, filter=flt)
        assert len(res) == 10
        assert all(int(i) % 2 == 0 for i, _ in res)
    r = recall(idx, big_oracle(big), q[:30], filter=flt)
    assert r >= 0.9
    # a plain dict is accepted too
    assert all(int(i) % 3 == 1 for i, _ in kit.search(idx, q[0], 5, filter={"tag": "b"}))


def test_selective_filters_return_k(big):
    idx, x, q, labels, _, _ = big
    # ~1% of the records, mostly far from the query's own cluster
    target = int(labels[7])
    flt = parse({"cluster": target})
    want = int((labels == target).sum())
    for qq in q[:5]:
        res = kit.search(idx, qq, 10, filter=flt)
        assert len(res) == 10 and all(labels[int(i)] == target for i, _ in res)
    assert recall(idx, big_oracle(big), q[:5], filter=flt) >= 0.9
    # fewer matches than k: all of them, nothing else
    one = parse({"$and": [{"cluster": target}, {"_timestamp": {"$lt": 5000}}]})
    n_one = int(((labels == target) & (np.arange(N_BIG) < 5000)).sum())
    res = kit.search(idx, q[0], min(want, 200), filter=one)
    assert len(res) == n_one
    assert len(kit.search(idx, q[0], 10, filter={"cluster": -1})) == 0


def test_l2_and_ip_recall():
    x, q, _ = clustered(3000, dim=64, clusters=30, seed=3)
    for metric in ("l2", "ip"):
        idx = HNSWIndex(64, metric, M=12, ef_construction=100, seed=1)
        idx.add([str(i) for i in range(len(x))], x)
        r = recall(idx, oracle_of(idx), q[:50], ef=100)
        assert r >= 0.9, (metric, r)


def test_deterministic_build():
    x, _, _ = clustered(800, dim=32, clusters=10, seed=4)
    ids = [str(i) for i in range(800)]
    cids = []
    for _ in range(2):
        idx = HNSWIndex(32, "cosine", M=8, ef_construction=50, seed=7)
        idx.add(ids[:500], x[:500], timestamps=[0.0] * 500)
        idx.add(ids[500:], x[500:], timestamps=[0.0] * 300)
        cids.append(idx.save(MemStore(), chunk_rows=128))
    assert cids[0] == cids[1]


# ---------------------------------------------------------------- mutation tests on a small index


@pytest.fixture()
def small():
    x, q, labels = clustered(3000, dim=48, clusters=30, seed=5)
    idx = HNSWIndex(48, "cosine", M=12, ef_construction=80, seed=2)
    idx.add([f"v{i}" for i in range(3000)], x, [{"c": int(c)} for c in labels], timestamps=np.zeros(3000))
    return idx, x, q


def snapshot(idx: HNSWIndex):
    store = MemStore()
    return idx.save(store, chunk_rows=500)


def test_validation_changes_nothing(small):
    idx, x, q = small
    before = snapshot(idx)
    res_before = kit.search(idx, q[0], 10)
    with pytest.raises(DimensionError):
        idx.add(["a", "v1"], np.ones((2, 47), np.float32))
    bad = np.ones((2, 48), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(InvalidVectorError):
        idx.add(["a", "v1"], bad)
    with pytest.raises(InvalidArgumentError):
        idx.add(["a", "v1", "a"], np.ones((3, 48), np.float32))
    with pytest.raises(InvalidArgumentError):
        idx.add(["a", "v1"], np.ones((2, 48), np.float32), metadata=[{}, "x"])
    with pytest.raises(InvalidArgumentError):
        idx.add(["a", "v1"], np.ones((3, 48), np.float32))
    with pytest.raises(InvalidArgumentError):
        idx.add(["a", 5], np.ones((2, 48), np.float32))
    with pytest.raises(InvalidArgumentError):
        idx.add(["a", "b"], np.ones((2, 48), np.float32), timestamps=[1.0, float("nan")])
    assert snapshot(idx) == before
    assert kit.search(idx, q[0], 10) == res_before
    assert "a" not in idx and len(idx) == 3000


def test_delete(small):
    idx, x, q = small
    top = [i for i, _ in kit.search(idx, q[0], 10)]
    before = snapshot(idx)
    with pytest.raises(UnknownIdError):
        idx.delete([top[0], "missing"])
    assert snapshot(idx) == before and top[0] in idx
    assert idx.delete(top[:5]) == 5
    assert len(idx) == 2995 and top[0] not in idx
    with pytest.raises(UnknownIdError):
        idx.delete([top[0]])  # already gone
    with pytest.raises(UnknownIdError):
        idx.metadata(top[0])
    for qq in q[:30]:
        res = kit.search(idx, qq, 10)
        assert len(res) == 10 and not set(top[:5]) & {i for i, _ in res}
    assert top[5] in {i for i, _ in kit.search(idx, q[0], 10)}
    assert all(i not in top[:5] for i in idx.ids())
    assert sum(1 for _ in idx.items()) == 2995


def test_upsert(small):
    idx, x, q = small
    new_vec = q[3] * 2.0
    idx.add(["v10"], new_vec[None, :], [{"c": -5}], timestamps=[99.0])
    assert len(idx) == 3000
    assert idx.metadata("v10") == {"c": -5} and idx.timestamp("v10") == 99.0
    res = kit.search(idx, q[3], 1)
    assert res[0][0] == "v10" and res[0][1] < 1e-5
    # the old vector is gone: searching for it never yields v10 at distance ~0
    res = kit.search(idx, x[10], 10)
    assert all(not (i == "v10" and d < 1e-4) for i, d in res)
    assert [i for i, *_ in idx.items()].count("v10") == 1
    assert kit.search(idx, q[3], 3, filter={"c": -5}) == [("v10", pytest.approx(0.0, abs=1e-5))]


def test_vacuum(small):
    idx, x, q = small
    ids = [f"v{i}" for i in range(3000)]
    rng = np.random.default_rng(0)
    gone = rng.choice(3000, 900, replace=False)
    idx.delete([ids[i] for i in gone])
    alive = np.ones(3000, bool)
    alive[gone] = False
    r_before = recall(idx, oracle_of(idx), q[:50])
    assert idx.vacuum() == 900
    assert idx.vacuum() == 0
    assert len(idx) == 2100 and idx._n == 2100 and not idx._dead[: idx._n].any()
    n = idx._n
    nb0 = idx._nb0[:n]
    assert ((nb0 >= -1) & (nb0 < n)).all()
    assert (idx._cnt0[:n] == (nb0 >= 0).sum(1)).all()
    assert (idx._cnt0[:n] > 0).all()
    for level, layer in enumerate(idx._up, start=1):
        for s, row in layer.items():
            assert 0 <= s < n and idx._levels[s] >= level
            assert ((row >= 0) & (row < n) & (row != s)).all()
            assert (idx._levels[row] >= level).all()
    assert idx._levels[idx._entry] == idx._max_level == len(idx._up)
    assert set(idx.ids()) == {ids[i] for i in np.flatnonzero(alive)}
    r = recall(idx, oracle_of(idx), q[:50])
    assert r >= 0.9, (r_before, r)
    for qq in q[:20]:
        assert len(kit.search(idx, qq, 10)) == 10
    # still usable: insert, search, metadata survived compaction
    idx.add(["new"], q[0][None, :], [{"c": 1}])
    assert kit.search(idx, q[0], 1)[0][0] == "new"
    i = int(np.flatnonzero(alive)[0])
    assert idx.metadata(ids[i])["c"] >= 0


def test_vacuum_everything_and_empty_search():
    idx = HNSWIndex(4, "l2")
    assert kit.search(idx, np.ones(4), 3) == []
    idx.add(["a", "b"], np.eye(4)[:2])
    idx.delete(["a", "b"])
    assert kit.search(idx, np.ones(4), 3) == []
    assert idx.vacuum() == 2 and len(idx) == 0
    idx.add(["c"], np.ones((1, 4)))
    assert kit.search(idx, np.ones(4), 3) == [("c", 0.0)]


def test_save_load_roundtrip(small):
    idx, x, q = small
    idx.delete(["v1", "v2"])
    idx.add(["v3"], q[1][None, :], [{"c": 7}], timestamps=[5.0])
    store = MemStore()
    desc = idx.save(store, chunk_rows=700)
    assert desc["kind"] == "hnsw" and len(desc["nodes"]) == len(desc["links"]) == -(-idx._n // 700)
    loaded = HNSWIndex.load(desc, store)
    assert len(loaded) == len(idx) and loaded.ids() == idx.ids()
    assert loaded.metadata("v3") == {"c": 7} and loaded.timestamp("v3") == 5.0
    assert "v1" not in loaded
    flt = parse({"c": {"$in": [1, 2, 3]}})
    for qq in q[:30]:
        assert kit.search(loaded, qq, 10) == kit.search(idx, qq, 10)
        assert kit.search(loaded, qq, 5, filter=flt, ef=20) == kit.search(idx, qq, 5, filter=flt, ef=20)
    # same state saves to the same chunks; later inserts keep the same level draws
    assert loaded.save(MemStore(), chunk_rows=700) == desc
    more = np.random.default_rng(9).normal(size=(50, 48)).astype(np.float32)
    for i in (idx, loaded):
        i.add([f"m{j}" for j in range(50)], more, timestamps=np.zeros(50))
    assert loaded.save(MemStore(), chunk_rows=700) == idx.save(MemStore(), chunk_rows=700)


def test_unchanged_ranges_keep_their_cids():
    x, _, _ = clustered(1200, dim=16, clusters=5, seed=6)
    idx = HNSWIndex(16, "cosine", M=6, ef_construction=40)
    idx.add([str(i) for i in range(1000)], x[:1000], timestamps=np.zeros(1000))
    d1 = idx.save(MemStore(), chunk_rows=256)
    idx.add([str(i) for i in range(1000, 1200)], x[1000:], timestamps=np.zeros(200))
    d2 = idx.save(MemStore(), chunk_rows=256)
    assert d2["nodes"][:3] == d1["nodes"][:3]  # full ranges: ids/vectors/metadata unchanged
    assert len(d2["nodes"]) == 5


def test_load_rejects_malformed(small):
    idx, _, _ = small
    store = MemStore()
    desc = idx.save(store, chunk_rows=1000)
    with pytest.raises(FormatError):
        HNSWIndex.load({**desc, "count": desc["count"] + 5000}, store)
    bad = dict(desc)
    body = dict(store.get(desc["links"][0], "hnsw_links"))
    body["layer0"] = body["layer0"].copy()
    body["layer0"][0, 0] = 10**6
    bad["links"] = [store.put("hnsw_links", body)] + desc["links"][1:]
    with pytest.raises(FormatError):
        HNSWIndex.load(bad, store)
    with pytest.raises(FormatError):
        HNSWIndex.load({**desc, "kind": "ivf"}, store)


def test_filter_mask_cache_follows_changes(small):
    """Filtered searches cache a match mask per filter; every change must invalidate it."""
    idx, x, q = small
    flt = parse({"c": 3})
    broad = parse({"c": {"$ne": 3}})  # ~97% of records: the graph walk with the cached mask
    before = [i for i, _ in kit.search(idx, q[0], 5, filter=flt)]
    assert all(idx.metadata(i)["c"] == 3 for i in before)
    assert all(idx.metadata(i)["c"] != 3 for i, _ in kit.search(idx, q[0], 5, filter=broad))
    idx.add(["planted"], q[0:1], [{"c": 3}], timestamps=[0.0])
    assert kit.search(idx, q[0], 1, filter=flt)[0][0] == "planted"
    assert "planted" not in [i for i, _ in kit.search(idx, q[0], 5, filter=broad)]
    idx.add(["planted"], q[0:1], [{"c": 4}], timestamps=[0.0])  # upsert changes its metadata
    assert "planted" not in [i for i, _ in kit.search(idx, q[0], 5, filter=flt)]
    assert kit.search(idx, q[0], 1, filter=broad)[0][0] == "planted"
    idx.delete(["planted"])
    assert "planted" not in [i for i, _ in kit.search(idx, q[0], 5, filter=broad)]
    idx.vacuum()
    assert [i for i, _ in kit.search(idx, q[0], 5, filter=flt)] == before
