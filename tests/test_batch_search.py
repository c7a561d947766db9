"""Many queries at once give exactly what one-by-one search gives (same ids, bit-equal distances):
the lockstep HNSW walk (s5vec.index.hnsw_walk) against the single-query walk, the hybrid's batch
against its single searches (IVF-PQ with separate refine chunks, filters, widening, deletes,
k > n), and the walk's recall against the flat oracle."""
from __future__ import annotations

import time

import numpy as np
import pytest

import kit
from s5vec import api
from s5vec.index import hnsw_walk
from s5vec.index.hnsw import HNSWIndex
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

D = 32


def _hnsw(n: int, metric: str = "cosine", seed: int = 3, **kw) -> tuple[HNSWIndex, np.ndarray, list[str]]:
    x = kit.clustered(n, D, clusters=30, seed=seed)
    ids = [f"v{i}" for i in range(n)]
    idx = HNSWIndex(D, metric, M=8, ef_construction=48, **kw)
    idx.add(ids, x, [{"even": i % 2 == 0, "n": i} for i in range(n)])
    return idx, x, ids


def _queries(idx: HNSWIndex, qs: np.ndarray, k: int, ef: int | None = None, flt=None) -> list:
    return [api.prepare_query(idx, q, k, flt, {"ef": ef} if ef else None) for q in qs]


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("k,ef", [(1, None), (10, None), (10, 12), (40, 16)])
def test_hnsw_batch_equals_single_exactly(metric, k, ef):
    idx, x, _ = _hnsw(2500, metric)
    qs = kit.queries_near(x, 30, seed=7)
    queries = _queries(idx, qs, k, ef)
    one = [idx.search(q).hits for q in queries]
    many = [o.hits for o in idx.search_many(queries)]
    assert many == one  # ids, float distances and metadata, rank by rank
    assert all(len(h) == k for h in one)
    # in groups (the visited-set budget splits a big batch): still the same
    few = hnsw_walk._GROUP_CELLS
    try:
        hnsw_walk._GROUP_CELLS = 7 * (idx._n + 1)
        assert [o.hits for o in idx.search_many(queries)] == one
    finally:
        hnsw_walk._GROUP_CELLS = few


def test_hnsw_walk_recall_against_flat_oracle():
    idx, x, ids = _hnsw(4000)
    qs = kit.queries_near(x, 60, seed=9)
    oracle = kit.flat_oracle(ids, x)
    assert kit.recall_at_k(idx, qs, 10, oracle=oracle) >= 0.97
    # the walk of the batch is what single search returns, so batch recall is the same number
    want = [[h.id for h in oracle.search(api.prepare_query(oracle, q, 10)).hits] for q in qs]
    got = [[h.id for h in o.hits] for o in idx.search_many(_queries(idx, qs, 10))]
    found = sum(len(set(g) & set(w)) for g, w in zip(got, want))
    assert found / (10 * len(qs)) >= 0.97


def test_hnsw_k_larger_than_n_and_tiny_graphs():
    for n in (1, 2, 5):
        idx, x, ids = _hnsw(n)
        queries = _queries(idx, kit.queries_near(kit.clustered(50, D, seed=1), 4, seed=2), 10)
        one = [idx.search(q).hits for q in queries]
        assert [o.hits for o in idx.search_many(queries)] == one
        assert all(sorted(h.id for h in hits) == sorted(ids) for hits in one)


def test_hnsw_batch_with_deletes_filters_and_edits():
    idx, x, ids = _hnsw(1500)
    qs = kit.queries_near(x, 20, seed=4)
    # a record is its own nearest neighbour: the walk sees inserts made after a search
    assert idx.search(api.prepare_query(idx, x[3], 1)).hits[0].id == "v3"
    extra = kit.clustered(40, D, seed=99)
    idx.add([f"new{i}" for i in range(40)], extra)
    assert [o.hits[0].id for o in idx.search_many(_queries(idx, extra[:5], 1))] == [f"new{i}" for i in range(5)]
    # tombstones: the accept-aware search, the same for batch and single, deleted never returned
    idx.delete(["v0", "v1", "v2", "v3"])
    for flt in (None, {"even": True}, {"n": {"$lt": 30}}):
        queries = _queries(idx, np.vstack([x[:4], qs]), 10, flt=flt)
        one = [idx.search(q).hits for q in queries]
        assert [o.hits for o in idx.search_many(queries)] == one
        assert not {"v0", "v1", "v2", "v3"} & {h.id for hits in one for h in hits}
        if flt == {"even": True}:
            assert all(h.metadata["even"] for hits in one for h in hits)
    # vacuumed: back on the lockstep walk (its graph copy rebuilt), still equal and still without them
    idx.vacuum()
    queries = _queries(idx, np.vstack([x[:4], qs]), 10)
    one = [idx.search(q).hits for q in queries]
    assert [o.hits for o in idx.search_many(queries)] == one
    assert not {"v0", "v1", "v2", "v3"} & {h.id for hits in one for h in hits}


def test_hnsw_batch_mixed_k_and_ef():
    idx, x, _ = _hnsw(1200)
    qs = kit.queries_near(x, 9, seed=5)
    queries = [api.prepare_query(idx, q, 1 + i % 3 * 7, None, {"ef": [None, 8, 30][i % 3]}) for i, q in enumerate(qs)]
    assert [o.hits for o in idx.search_many(queries)] == [idx.search(q).hits for q in queries]


def _hybrid_db(n: int = 3000, **ivf):
    x = kit.clustered(n, D, clusters=40, seed=3)
    now = time.time()
    # 20% recent (HNSW part), the rest old (IVF part); a rare tag only in a few old records
    recs = [{"id": f"v{i}", "vector": x[i], "timestamp": now if i % 5 == 0 else now - 400 * 86400,
             "metadata": {"even": i % 2 == 0, "n": i}} for i in range(n)]
    store = ChunkStore(MemoryClient())
    params = {"recent_threshold": "30d", "ivf": {"nlist": 32, "nprobe": 4, "codec": "pq", "pq_m": 8,
                                                "refine": "float16", "refine_rows": 4, "rerank": 30, **ivf}}
    cid = api.publish(recs, store, kind="hybrid", params=params)
    return cid, store, x


def _same(a: list[dict], b: list[dict]) -> None:
    assert [h["id"] for h in a] == [h["id"] for h in b]
    assert [h["score"] for h in a] == [h["score"] for h in b]
    assert [h["metadata"] for h in a] == [h["metadata"] for h in b]


NARROW = {"n": {"$gte": 1000, "$lt": 1012}}  # 12 records spread over the lists: probes widen


@pytest.mark.parametrize("flt", [None, {"even": True}, NARROW])
def test_hybrid_batch_equals_one_by_one_exactly(flt):
    cid, store, x = _hybrid_db()
    qs = np.vstack([kit.queries_near(x, 30, seed=12), x[1000:1012]])
    k = 3 if flt is NARROW else 10
    one = api.Database.open(cid, store=ChunkStore(store.client))
    many = api.Database.open(cid, store=ChunkStore(store.client))
    want = [one.search_with_stats(q, k, flt) for q in qs]
    got = many.search_batch_with_stats(qs, k, flt)
    for g, w in zip(got["results"], want):
        _same(g, w["hits"])
    if flt is NARROW:  # selective: queries widen by different numbers of rounds, in one batch
        rounds = [w["stats"]["rounds"] for w in want]
        assert max(rounds) > min(rounds)
        assert all(1000 <= h["metadata"]["n"] < 1012 for r in got["results"] for h in r)
    # warm: nothing fetched, the same hits
    again = many.search_batch_with_stats(qs, k, flt)
    assert again["stats"]["bytesFetched"] == 0
    for g, w in zip(again["results"], want):
        _same(g, w["hits"])


def test_hybrid_batch_after_deletes_and_k_beyond_n():
    cid, store, x = _hybrid_db(600)
    one = api.Database.open(cid, store=ChunkStore(store.client))
    many = api.Database.open(cid, store=ChunkStore(store.client))
    gone = ["v0", "v5", "v1", "v2"]  # recent and old records
    for db in (one, many):
        db.delete(gone)
    qs = np.vstack([x[:3], kit.queries_near(x, 10, seed=2)])
    for k in (10, 1000):  # k > n: every record, best first
        want = [one.search(q, k) for q in qs]
        got = many.search_batch(qs, k)
        for g, w in zip(got, want):
            _same(g, w)
            assert not set(gone) & {h["id"] for h in g}
        if k == 1000:
            assert all(len(g) == 600 - len(gone) for g in got)


def test_hybrid_batch_recall_against_flat_oracle():
    cid, store, x = _hybrid_db(4000, nprobe=8)
    db = api.Database.open(cid, store=ChunkStore(store.client))
    ids = [f"v{i}" for i in range(x.shape[0])]
    oracle = kit.flat_oracle(ids, x)
    qs = kit.queries_near(x, 50, seed=21)
    got = db.search_batch(qs, 10)
    want = [[h.id for h in oracle.search(api.prepare_query(oracle, q, 10)).hits] for q in qs]
    found = sum(len({h["id"] for h in g} & set(w)) for g, w in zip(got, want))
    assert found / (10 * len(qs)) >= 0.9


def test_walk_graph_copy_follows_the_index():
    idx, x, _ = _hnsw(300)
    g1 = hnsw_walk.graph_of(idx)
    assert hnsw_walk.graph_of(idx) is g1
    idx.add(["z"], x[:1] + 0.01)
    assert hnsw_walk.graph_of(idx) is not g1
    q = api.prepare_query(idx, x[0] + 0.01, 2)
    assert "z" in {h.id for h in idx.search(q).hits}


def test_tab_delete_on_a_lazy_hybrid_with_refine_chunks():
    """The worker's edit path (delete_async) makes a lazily opened IVF part with separate refine
    chunks resident in as many rounds as it needs (lists, then refine rows), like the sync path."""
    import asyncio

    cid, store, x = _hybrid_db(3000)
    db = api.Database.open(cid, store=ChunkStore(store.client))
    db.search(x[1], 10)
    assert asyncio.run(db.delete_async(["v1", "v0"])) == 2
    got = db.search_batch(x[:3], 10)
    assert not {"v0", "v1"} & {h["id"] for r in got for h in r}
    assert got[2][0]["id"] == "v2"


def test_big_batch_is_answered_in_groups_that_fit_the_cache(monkeypatch):
    """A batch whose chunks would not fit the cache is answered group by group, each group's fetch
    within half the cache, with the same hits as one by one (and as a big cache gives); the group
    size follows what a query of the previous group fetched."""
    cid, store, x = _hybrid_db(3000)
    qs = kit.queries_near(x, 120, seed=31)
    one = api.Database.open(cid, store=ChunkStore(store.client))
    want = [one.search(q, 10) for q in qs]
    big = api.Database.open(cid, store=ChunkStore(store.client, cache_bytes=64 * 2**20))
    got_big = big.search_batch_with_stats(qs, 10)
    assert got_big["stats"]["groups"] == 2  # no estimate in a manifest with explicit params: 64, then the rest
    db = api.Database.open(cid, store=ChunkStore(store.client, cache_bytes=96 * 1024))
    sizes, fetched = [], []
    real_next, real_fetched = api.BatchGroups.next, api.BatchGroups.fetched

    def spy_next(self):
        g = real_next(self)
        if g is not None:
            sizes.append(len(g))
        return g

    def spy_fetched(self, queries, nbytes):
        fetched.append(nbytes / queries)
        real_fetched(self, queries, nbytes)

    monkeypatch.setattr(api.BatchGroups, "next", spy_next)
    monkeypatch.setattr(api.BatchGroups, "fetched", spy_fetched)
    got = db.search_batch_with_stats(qs, 10)
    assert got["stats"]["groups"] == len(sizes) > 2 and sum(sizes) == len(qs) == got["stats"]["queries"]
    for a, b in zip(sizes[1:-1], fetched):  # 48 KiB of budget / bytes a query fetched, at least 8
        assert a == max(api.BATCH_MIN_GROUP, int(48 * 1024 // b))
    for g, gb, w in zip(got["results"], got_big["results"], want):
        _same(g, w)
        _same(gb, w)


def test_batch_groups_follow_the_estimate_and_what_was_fetched():
    g = api.BatchGroups(1000, 10 * 2**20, per_query=200 * 1024)  # 5 MiB of budget / 200 KiB = 25 a group
    assert len(g.next()) == 25
    g.fetched(25, 25 * 50 * 1024)  # really 50 KiB a query: 102 a group
    assert len(g.next()) == 102
    g.fetched(102, 0)  # warm: keeps the estimate
    assert len(g.next()) == 102
    g.fetched(102, 102 * 4 * 2**20)  # 4 MiB a query: the floor
    assert len(g.next()) == api.BATCH_MIN_GROUP
    assert api.BatchGroups(5, 2**20).next() == range(0, 5)  # no estimate: one first group of up to 64
    assert api.BatchGroups(0, 2**20).next() is None
