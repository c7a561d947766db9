"""One path for a query: validated once in api, then rounds of plan -> fetch -> search.

Covers what the request layer promises every index kind: unknown or mistyped search parameters
are rejected (naming the accepted ones), a filtered IVF search that must widen fetches its extra
lists through the request layer in parallel rounds (never a blocking fetch), ``Database.get``,
and the one rule for a missing timestamp.
"""
import asyncio
import math
import time

import numpy as np
import pytest

from s5vec import api
from s5vec.errors import InvalidArgumentError, UnknownIdError
from s5vec.index.ivf import IVFIndex
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

import kit

KIND_PARAMS = {
    "flat": {},
    "hnsw": {"M": 8, "ef_construction": 40},
    "ivf": {"nlist": 8, "train_min": 200},
    "hybrid": {"nlist": 8, "train_min": 200},
}
ACCEPTED = {"flat": "none", "hnsw": "ef", "ivf": "nprobe, rerank", "hybrid": "ef, nprobe, rerank"}


def publish(kind, n=600, dim=16, timestamps=True, **params):
    x = kit.clustered(n, dim, 8, seed=7)
    recs = [{"id": f"r{i}", "vector": x[i], "metadata": {"i": i}} for i in range(n)]
    if timestamps:
        for i, r in enumerate(recs):  # half of them older than the hybrid's 30-day window
            r["timestamp"] = time.time() - (90 if i % 2 else 1) * 86400
    client = MemoryClient()
    cid = api.publish(recs, ChunkStore(client), kind=kind, params={**KIND_PARAMS[kind], **params})
    return client, cid, x


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "hybrid"])
def test_each_kind_rejects_unknown_and_mistyped_search_params(kind):
    client, cid, x = publish(kind)
    db = api.Database.open(cid, store=ChunkStore(client))
    with pytest.raises(InvalidArgumentError, match=f"'efSearch'.*accepted: {ACCEPTED[kind]}"):
        db.search(x[0], 5, None, {"efSearch": 500})
    with pytest.raises(InvalidArgumentError, match="efSearch"):
        asyncio.run(db.search_async(x[0], 5, None, {"efSearch": 500}))
    if kind != "flat":
        name = "ef" if kind == "hnsw" else "nprobe"
        for bad in ("x", 1.5, True, 0, -3):
            with pytest.raises(InvalidArgumentError, match=name):
                db.search(x[0], 5, None, {name: bad})
        assert len(db.search(x[0], 5, None, {name: 4})) == 5
        assert len(db.search(x[0], 5, None, {name: 4.0})) == 5  # a JSON number that is an integer
    assert len(db.search(x[0], 5, None, {})) == 5 and len(db.search(x[0], 5)) == 5


def test_prepared_query_is_normalised_once():
    client, cid, x = publish("hnsw")
    db = api.Database.open(cid, store=ChunkStore(client))
    q = db.prepare(list(x[0] * 7.0), 3, {"i": {"$lt": 100}}, {"ef": 20})
    assert q.vector.dtype == np.float32 and math.isclose(float(np.linalg.norm(q.vector)), 1.0, rel_tol=1e-5)
    assert q.k == 3 and q.filter is not None and q.params.ef == 20
    with pytest.raises(Exception):
        q.k = 4  # frozen: indexes cannot change what api validated


def _anticorrelated_ivf(n=6000, dim=16, nlist=32, rare=15):
    """Metadata a/b are each common but almost never both 1: per-list summaries (which assume
    independence) promise matches the lists do not hold, so a filtered search must widen."""
    x = kit.clustered(n, dim, 40, seed=5, spread=0.3)
    rng = np.random.default_rng(0)
    both = set(rng.choice(n, rare, replace=False).tolist())
    meta = [{"a": 1, "b": 1} if i in both else {"a": i % 2, "b": 1 - i % 2} for i in range(n)]
    idx = IVFIndex(dim, "cosine", nlist=nlist, nprobe=2)
    ids = [f"v{i}" for i in range(n)]
    idx.add(ids, x, meta, [1.0] * n)
    client = MemoryClient()
    cid, _ = api.save(idx, ChunkStore(client))
    return client, cid, x, ids, meta, both


def test_filtered_ivf_widening_fetches_through_the_request_layer(monkeypatch):
    client, cid, x, ids, meta, both = _anticorrelated_ivf()
    store = ChunkStore(client)
    db = asyncio.run(api.Database.open_async(cid, store=store))
    # no blocking path may be taken while searching: neither the store's sync prefetch nor the
    # client's one-by-one download (the sync XHR in Pyodide)
    def forbidden(*a, **kw):
        raise AssertionError("synchronous fetch during search_async")

    monkeypatch.setattr(store, "prefetch_sync", forbidden)
    in_batch = []
    real_download, real_many = client.download, client.download_many

    def download(cid):  # the memory client's batch calls download; a lone call is a blocking fetch
        if not in_batch:
            forbidden()
        return real_download(cid)

    async def download_many(cids):
        in_batch.append(1)
        try:
            return await real_many(cids)
        finally:
            in_batch.pop()

    monkeypatch.setattr(client, "download", download)
    monkeypatch.setattr(client, "download_many", download_many)
    rounds = []
    real_prefetch = store.prefetch

    async def counting_prefetch(cids):
        rounds.append(list(cids))
        await real_prefetch(cids)

    monkeypatch.setattr(store, "prefetch", counting_prefetch)
    flt = {"a": 1, "b": 1}
    res = asyncio.run(db.search_async(x[0], 10, flt))
    st = res["stats"]
    assert st["rounds"] == len(rounds) > 1, (st, len(rounds))  # widened: more than one parallel round
    assert all(len(r) > 0 for r in rounds)
    # each round plans its whole (wider) probe; the store fetches only what it does not hold
    assert st["chunksFetched"] == len({c for r in rounds for c in r})
    oracle = kit.flat_oracle(ids, x, "cosine", meta)
    want = [i for i, _ in kit.search(oracle, x[0], 10, flt)]
    assert len(res["hits"]) == 10 and all(int(h["id"][1:]) in both for h in res["hits"])
    assert len({h["id"] for h in res["hits"]} & set(want)) >= 8
    # asking for more matches than exist widens to every list: exact, all 15
    res = asyncio.run(db.search_async(x[0], 20, flt))
    assert sorted(h["id"] for h in res["hits"]) == sorted(f"v{i}" for i in both)


def test_widening_rounds_on_cpython_sync_path():
    client, cid, x, ids, meta, both = _anticorrelated_ivf()
    db = api.Database.open(cid, store=ChunkStore(client))
    res = db.search_with_stats(x[0], 20, {"a": 1, "b": 1})
    assert res["stats"]["rounds"] > 1 and len(res["hits"]) == len(both)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "hybrid"])
def test_get_one_record(kind):
    client, cid, x = publish(kind, n=1500)
    store = ChunkStore(client)
    db = api.Database.open(cid, store=store)
    rec = db.get("r7")
    assert rec["id"] == "r7" and rec["metadata"] == {"i": 7} and isinstance(rec["timestamp"], float)
    assert asyncio.run(db.get_async("r1499"))["metadata"] == {"i": 1499}
    with pytest.raises(UnknownIdError):
        db.get("nope")
    with pytest.raises(InvalidArgumentError):
        db.get(5)


def test_missing_timestamp_is_the_time_added():
    """One rule: a record without a timestamp is stamped once, in api, with the time it is added."""
    t0 = time.time()
    client, cid, x = publish("hybrid", timestamps=False)
    db = api.Database.open(cid, store=ChunkStore(client))
    t1 = time.time()
    assert len(db.index.recent) == 600 and len(db.index.historical) == 0  # all new: the recent part
    assert t0 <= db.get("r3")["timestamp"] <= t1
    # an upsert without a timestamp goes to the recent (HNSW) part too, even for an old record
    db.upsert([{"id": "r1", "vector": x[1], "metadata": {"v": 2}, "timestamp": time.time() - 400 * 86400}])
    assert "r1" in db.index.historical
    db.upsert([{"id": "r1", "vector": x[1], "metadata": {"v": 3}}])
    assert "r1" in db.index.recent and "r1" not in db.index.historical
    assert db.get("r1")["timestamp"] >= t1
    # NaN and infinity are rejected, and nothing changes
    for bad in (float("nan"), float("inf"), -float("inf"), "now", True):
        with pytest.raises(InvalidArgumentError):
            db.upsert([{"id": "r2", "vector": x[2], "timestamp": bad}])
    assert db.get("r2")["metadata"] == {"i": 2}
    # explicit None means "missing" as well
    ids, _, _, ts = api.records_to_columns([{"id": "a", "vector": [1.0, 2.0], "timestamp": None}], now=42.0)
    assert ts.tolist() == [42.0]


def test_search_async_with_missing_chunk_is_an_error_not_a_sync_fetch(monkeypatch):
    client, cid, x, *_ = _anticorrelated_ivf(n=3000)
    store = ChunkStore(client)
    db = asyncio.run(api.Database.open_async(cid, store=store))

    async def lossy(cids):  # a client that silently skips what it was asked for
        return {}

    monkeypatch.setattr(client, "download_many", lossy)
    monkeypatch.setattr(client, "download", lambda *a: (_ for _ in ()).throw(AssertionError("sync fetch")))
    from s5vec.errors import NotFoundError

    with pytest.raises(NotFoundError):
        asyncio.run(db.search_async(x[0], 5))


def test_a_cache_smaller_than_one_round_still_answers_async():
    """Chunks already cached when a round is planned stay readable until that round reads them,
    even if the round's new fetches evict them (no error, no blocking re-fetch)."""
    client, cid, x, ids, meta, both = _anticorrelated_ivf(n=3000, nlist=16)
    full = api.Database.open(cid, store=ChunkStore(client))
    small = asyncio.run(api.Database.open_async(cid, store=ChunkStore(client, cache_bytes=30_000)))
    for q in x[:20]:
        want = full.search(q, 5, None, {"nprobe": 8})
        got = asyncio.run(small.search_async(q, 5, None, {"nprobe": 8}))
        kit.assert_same_hits(got["hits"], want)
    st = small.store.stats()
    # what the open keeps (centroids, summaries: the index holds them) is counted even beyond so
    # small a budget; the lists fetched by the searches are not kept beyond it
    assert st["resident_bytes"] > 0 and st["cache_bytes"] <= max(30_000, st["resident_bytes"])


def test_editing_one_database_leaves_another_on_the_same_store_alone():
    client, cid, x = publish("ivf", n=1500)
    store = ChunkStore(client)
    a = api.Database.open(cid, store=store)
    b = api.Database.open(cid, store=store)
    before = b.search(x[3], 5)
    a.delete(["r3"])
    a.upsert([{"id": "z", "vector": x[3], "timestamp": 1.0}])
    assert a.search(x[3], 1)[0]["id"] == "z"
    assert b.search(x[3], 5) == before and b.get("r3")["id"] == "r3"
