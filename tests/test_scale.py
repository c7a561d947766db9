"""Scale features on CPython: IVF with separate refine chunks (PQ codes over the wire, re-rank
vectors fetched in a second round only for the candidates), checked against the flat oracle."""
from __future__ import annotations

import numpy as np
import pytest

import kit
from s5vec import api, layout
from s5vec.errors import InvalidArgumentError
from s5vec.index.ivf import IVFIndex
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

D = 64


@pytest.fixture(scope="module")
def data():
    x = kit.clustered(6000, D, clusters=40, seed=3)
    q = kit.queries_near(x, 25, seed=11)
    ids = [f"v{i}" for i in range(x.shape[0])]
    metas = [{"n": i, "even": i % 2 == 0} for i in range(x.shape[0])]
    return ids, x, metas, q


def _build(data, refine, **kw):
    ids, x, metas, _ = data
    idx = IVFIndex(D, "cosine", nlist=32, nprobe=8, codec="pq", pq_m=16, refine=refine, refine_rows=16,
                   rerank=kw.pop("rerank", 40), **kw)
    idx.add(ids, x, metas)
    return idx


@pytest.mark.parametrize("refine", ["float16", "sq8", "pq"])
def test_refine_chunks_fetched_only_for_candidates(data, refine):
    ids, x, metas, q = data
    idx = _build(data, refine)
    io = kit.MemChunks()
    desc = idx.save(io)
    kinds = {c["cid"]: c["kind"] for c in io._writer.chunks}
    n_refine = sum(1 for k in kinds.values() if k == "ivf_refine")
    assert n_refine == sum(-(-int(c) // 16) for c in desc["counts"])
    # list chunks carry codes and refine CIDs, never the vectors
    some_list = next(c for c, k in kinds.items() if k == "ivf_list")
    assert all("vectors" not in e and "refine" in e for e in io.get(some_list, "ivf_list")["lists"])
    lazy = IVFIndex.load(desc, io.fresh())
    for v in q:
        io2 = io.fresh()
        query = api.prepare_query(lazy, v, 10)
        first = lazy.plan(query)
        assert first and all(kinds[c] == "ivf_list" for c in first)
        hits, run = api.run_query_sync(lazy, query, io2.store, io2)
        assert run.rounds == 2
        fetched = [c for c in io2.gets if kinds.get(c) == "ivf_refine"]
        # only the blocks holding the PQ pass's candidates (rerank=40): at most 40 of them
        assert 0 < len(set(fetched)) <= 40 < n_refine
        # resident (build-time) and lazily loaded searches agree exactly
        kit.assert_same_hits(
            [{"id": h.id, "score": h.distance} for h in hits],
            [{"id": i, "score": d} for i, d in kit.search(idx, v, 10)], metadata=False)


def test_refine_recall_against_flat(data):
    ids, x, metas, q = data
    oracle = kit.flat_oracle(ids, x)
    low = kit.recall_at_k(_build(data, "float16", rerank=0), q, oracle=oracle, nprobe=32)
    high = kit.recall_at_k(_build(data, "float16", rerank=200), q, oracle=oracle, nprobe=32)
    assert high >= 0.95 and high > low


def test_refine_bytes_per_vector_below_inline(data):
    """Separate refine data: a query's first round (the probed list chunks) is codes only."""
    sizes = {}
    for refine in (None, "float16"):
        io = kit.MemChunks()
        idx = _build(data, refine)
        idx.save(io)
        sizes[refine] = sum(c["size"] for c in io._writer.chunks if c["kind"] == "ivf_list")
    assert sizes["float16"] * 3 < sizes[None]


def test_refine_index_edits_through_database(data):
    """A lazily opened index with refine chunks becomes writable (lists, then refine chunks),
    and the committed snapshot searches like a fresh build."""
    ids, x, metas, q = data
    store = ChunkStore(MemoryClient())
    cid = api.publish([{"id": i, "vector": v, "metadata": m, "timestamp": 1.0} for i, v, m in zip(ids, x, metas)],
                      store, kind="ivf", params={"nlist": 32, "nprobe": 32, "codec": "pq", "pq_m": 16,
                                                 "refine": "float16", "rerank": 100})
    db = api.Database.open(cid, store=ChunkStore(store.client))
    before = db.search(q[0], 10)
    db.delete([before[0]["id"]])
    new_cid, _ = db.commit()
    again = api.Database.open(new_cid, store=ChunkStore(store.client))
    got = again.search(q[0], 10)
    assert [h["id"] for h in got[:9]] == [h["id"] for h in before[1:10]]
    assert again.get(before[1]["id"])["metadata"] == before[1]["metadata"]


def test_refine_bad_params():
    with pytest.raises(InvalidArgumentError):
        IVFIndex(D, codec="flat", refine="float16")
    with pytest.raises(InvalidArgumentError):
        IVFIndex(D, codec="pq", refine="int4")
    with pytest.raises(InvalidArgumentError):
        IVFIndex(D, codec="pq", refine="sq8", store_full=False)
    with pytest.raises(InvalidArgumentError):
        IVFIndex(D, codec="pq", refine="pq", refine_m=7)
