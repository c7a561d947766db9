"""A lazily fetched HNSW base layer (s5vec.index.hnsw_lazy), through the real request path.

Every index here is published into an in-memory S5 client through the real layout (CBOR) and
chunk store, and opened with ``api.Database``; the client logs each blob it serves, so the tests
count exactly which chunks an open and a search download. Recall is measured against the flat
index (the oracle), and compared with the eager layout of the *same graph*.
"""
from __future__ import annotations

import numpy as np
import pytest

from s5vec import api, layout
from s5vec.errors import FormatError
from s5vec.index import hnsw_lazy
from s5vec.index.hnsw import HNSWIndex
from s5vec.s5.cid import BlobId
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

import kit


class LoggingClient(MemoryClient):
    """The in-memory S5 client, logging the CID of every blob it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.served: list[str] = []

    def download(self, cid):  # type: ignore[override]
        data = super().download(cid)
        self.served.append(BlobId.parse(cid).to_string())
        return data


def build(n: int, dim: int, metric: str, seed: int, deleted: int = 0):
    x = kit.clustered(n, dim, 60, seed, 0.35)
    q = kit.queries_near(x, 60, noise=0.35, seed=seed + 10)
    ids = [f"r{i}" for i in range(n)]
    meta = [{"g": i % 50, "parity": i % 2} for i in range(n)]
    idx = HNSWIndex(dim, metric, M=12, ef_construction=80, ef_search=48, seed=seed, vectors_dtype="float16")
    idx.add(ids, x, meta, np.arange(n, dtype=float))
    if deleted:
        idx.delete(ids[:deleted])
    live = slice(deleted, None)
    oracle = kit.flat_oracle(ids[live], np.stack([idx.vector(i) for i in ids[live]]), metric, meta[live],
                             list(np.arange(n, dtype=float)[live]))
    return idx, x, q, oracle


def publish(idx: HNSWIndex, client: MemoryClient, lazy: bool | None) -> str:
    idx.lazy_base = lazy
    cid, _ = api.save(idx, ChunkStore(client))
    return cid


def base_cids(client: MemoryClient, cid: str) -> list[str]:
    """The hnsw_base chunk CIDs of a published lazy index (named by its hnsw_base_dir chunk)."""
    m = layout.decode_manifest(client.blobs[cid])
    d = layout.decode_chunk(client.blobs[m["index"]["base"]["dir"]], "hnsw_base_dir")
    return [BlobId.from_bytes(bytes(c)).to_string() for c in d["chunks"]]


def open_db(client: LoggingClient, cid: str) -> api.Database:
    client.served.clear()
    return api.Database.open(cid, store=ChunkStore(client, cache_bytes=1 << 30))


@pytest.fixture(scope="module")
def cos():
    """6,000 x 64 cosine, seed 1: one graph, published eager and lazy."""
    idx, x, q, oracle = build(6000, 64, "cosine", 1)
    client = LoggingClient()
    return idx, q, oracle, client, publish(idx, client, False), publish(idx, client, True)


@pytest.fixture(scope="module")
def l2():
    """3,000 x 96 l2, seed 2, with 300 tombstones: one graph, published eager and lazy."""
    idx, x, q, oracle = build(3000, 96, "l2", 2, deleted=300)
    client = LoggingClient()
    return idx, q, oracle, client, publish(idx, client, False), publish(idx, client, True)


@pytest.mark.parametrize("case", ["cos", "l2"])
def test_lazy_recall_equals_eager_on_the_same_graph(case, request):
    idx, q, oracle, client, eager_cid, lazy_cid = request.getfixturevalue(case)
    eager, lazy = open_db(client, eager_cid), open_db(client, lazy_cid)
    assert eager.index.plan_all() == [] and lazy.index.plan_all()  # really one of each
    r_eager = kit.recall_at_k(eager, q, 10, oracle=oracle)
    r_lazy = kit.recall_at_k(lazy, q, 10, oracle=oracle)
    print(f"\n{case}: recall@10 eager {r_eager:.3f} lazy {r_lazy:.3f}")
    assert r_eager > 0.9
    assert r_lazy >= r_eager - 0.02
    # tombstoned records are never returned
    dead = {f"r{i}" for i in range(300)} if case == "l2" else set()
    for v in q[:20]:
        assert not dead & {h["id"] for h in lazy.search(v, 10)}


def test_open_fetches_no_base_chunk_and_a_search_a_bounded_number(cos):
    idx, q, oracle, client, _, cid = cos
    base = set(base_cids(client, cid))
    assert len(base) == -(-6000 // hnsw_lazy.BASE_ROWS)
    db = open_db(client, cid)
    opened = list(client.served)
    assert opened and not base & set(opened)
    listed = {c["cid"] for c in db.manifest["chunks"]}
    assert not base & listed  # named by the directory chunk, not the manifest
    assert db.manifest["extra"]["unlisted"]["hnsw_base"]["count"] == len(base)
    client.served.clear()
    out = db.search_with_stats(q[0], 10)
    fetched = list(client.served)
    assert fetched and set(fetched) <= base and len(fetched) == len(set(fetched))
    s = out["stats"]
    assert s["chunksFetched"] == len(fetched) and s["bytesFetched"] == sum(len(client.blobs[c]) for c in fetched)
    assert 2 <= s["rounds"] <= hnsw_lazy.MAX_ROUNDS
    assert len(fetched) <= s["rounds"] * hnsw_lazy.READ_AHEAD and len(fetched) < len(base) // 2
    # warm repeat: nothing fetched, no round
    client.served.clear()
    again = db.search_with_stats(q[0], 10)
    assert client.served == [] and again["stats"]["bytesFetched"] == 0 and again["stats"]["rounds"] == 0
    assert again["hits"] == out["hits"]
    # the same query cold in a fresh session gives the same hits (rounds never change the walk)
    fresh = open_db(client, cid)
    assert fresh.search(q[0], 10) == out["hits"]


def test_batch_equals_one_by_one_and_ef(cos):
    idx, q, oracle, client, _, cid = cos
    one = open_db(client, cid)
    singles = [one.search(v, 10) for v in q[:24]]
    batch = open_db(client, cid).search_batch(q[:24], 10)
    assert batch == singles
    wide = kit.recall_at_k(open_db(client, cid), q, 10, oracle=oracle, ef=128)
    assert wide >= kit.recall_at_k(one, q, 10, oracle=oracle) - 0.005


def test_filters_and_get_without_fetching(cos):
    idx, q, oracle, client, _, cid = cos
    db = open_db(client, cid)
    broad = {"parity": 1}
    selective = {"g": 7}  # 120 of 6,000: re-ranked exactly from their codes' best
    for flt in (broad, selective):
        r = kit.recall_at_k(db, q[:30], 10, oracle=oracle, filter=flt)
        assert r >= 0.9, (flt, r)
        for v in q[:10]:
            hits = db.search(v, 10, flt)
            assert len(hits) == 10
            assert all(all(h["metadata"][k] == val for k, val in flt.items()) for h in hits)
    client.served.clear()
    rec = db.get("r123")
    assert rec["metadata"] == {"g": 23, "parity": 1} and rec["timestamp"] == 123.0
    assert client.served == []


def test_write_after_lazy_open_then_commit_keeps_everything(l2):
    idx, q, oracle, client, _, cid = l2
    db = open_db(client, cid)
    assert db.search(q[0], 5)  # the walk warmed part of the cache
    rng = np.random.default_rng(3)
    new = rng.standard_normal((5, 96)).astype(np.float32)
    db.upsert([{"id": f"n{i}", "vector": new[i], "metadata": {"g": -1}, "timestamp": 1e6} for i in range(5)])
    assert db.index.plan_all() == []  # now eager: everything fetched once
    db.delete(["r400"])
    assert db.search(new[2], 1)[0]["id"] == "n2"
    new_cid, _ = db.commit()
    again = open_db(client, new_cid)
    # the commit kept the navigation codec (no retraining: unchanged nodes keep their codes)
    assert np.array_equal(again.index._lazy.codec.codebooks, open_db(client, cid).index._lazy.codec.codebooks)
    assert again.index.plan_all()  # still lazy (lazy_base is kept in the descriptor)
    assert again.search(new[3], 1)[0]["id"] == "n3"
    assert again.get("n4")["metadata"] == {"g": -1}
    assert "r400" not in {h["id"] for v in q[:10] for h in again.search(v, 10)}
    assert len(again.index) == 3000 - 300 - 1 + 5
    live_oracle_ids = {h.id for h in oracle.search(api.prepare_query(oracle, q[1], 10)).hits} - {"r400"}
    got = {h["id"] for h in again.search(q[1], 10)}
    assert len(got & live_oracle_ids) >= 8


def test_async_write_after_lazy_open(cos):
    import asyncio

    idx, q, oracle, client, _, cid = cos
    db = open_db(client, cid)

    async def go():
        await db.delete_async(["r5"])
        return db.index.plan_all()

    assert asyncio.run(go()) == []
    assert "r5" not in db.index


def test_auto_threshold_and_the_hybrid_recent_part_stays_eager(monkeypatch):
    idx, x, q, oracle = build(600, 32, "cosine", 4)
    client = LoggingClient()
    assert not hnsw_lazy.wants_lazy(idx)  # default: far below 32 MiB
    cid = publish(idx, client, None)
    assert "base" not in layout.decode_manifest(client.blobs[cid])["index"]
    monkeypatch.setattr(hnsw_lazy, "AUTO_BYTES", 1000)
    cid = publish(idx, client, None)
    desc = layout.decode_manifest(client.blobs[cid])["index"]
    assert "base" in desc and "lazy_base" not in desc
    db = open_db(client, cid)
    assert db.index.plan_all() and kit.recall_at_k(db, q, 10, oracle=oracle) > 0.85
    # the hybrid's recent part never goes lazy, whatever its size
    recs = [{"id": f"h{i}", "vector": x[i], "timestamp": 2e9} for i in range(600)]
    hcid = api.publish(recs, ChunkStore(client), kind="hybrid", params={"recent_threshold": "30d", "nlist": 4})
    hdesc = layout.decode_manifest(client.blobs[hcid])["index"]["recent"]
    assert "base" not in hdesc and hdesc["lazy_base"] is False


def test_old_eager_descriptor_loads_unchanged():
    idx, x, q, oracle = build(800, 32, "cosine", 5)
    client = LoggingClient()
    cid = publish(idx, client, None)
    m = layout.decode_manifest(client.blobs[cid])
    assert "lazy_base" not in m["index"] and "base" not in m["index"]  # what format 2 always wrote
    db = open_db(client, cid)
    assert db.index.plan_all() == [] and db.index._lazy is None
    for v in q[:10]:
        assert [h.id for h in kit.run(idx, v, 10)[0]] == [h["id"] for h in db.search(v, 10)]


# ---------------------------------------------------------------- malformed lazy layouts

def _republish(client: MemoryClient, cid: str, edit_desc=None, edit_dir=None) -> str:
    """A copy of manifest ``cid`` with its descriptor and/or directory chunk edited."""
    store = ChunkStore(client)
    m = layout.decode_manifest(client.blobs[cid])
    desc = m["index"]
    if edit_dir is not None:
        body = layout.decode_chunk(client.blobs[desc["base"]["dir"]], "hnsw_base_dir")
        edit_dir(body)
        writer = layout.StoreWriter(store)
        desc["base"]["dir"] = writer.put("hnsw_base_dir", body)
        m["chunks"].append(writer.chunks[-1])
    if edit_desc is not None:
        edit_desc(desc)
    data = layout.encode_manifest(kind=m["kind"], dim=m["dim"], metric=m["metric"], count=m["count"],
                                  index=desc, chunks=m["chunks"], extra=m.get("extra"))
    return store.put(data)


@pytest.mark.parametrize("edit_desc,edit_dir", [
    (lambda d: d["base"].update(rows=0), None),
    (lambda d: d["base"].update(rows=7), None),
    (lambda d: d["base"].update(records=d["base"]["records"][:-1]), None),
    (lambda d: d.update(base=[1, 2]), None),
    (lambda d: d.update(lazy_base="yes"), None),
    (None, lambda b: b.update(chunks=b["chunks"][:-1])),
    (None, lambda b: b.update(chunks=[b"\x00\x01"] * len(b["chunks"]))),
    (None, lambda b: b.update(codec={"codec": "pq", "dim": 7, "m": 3, "nbits": 8, "metric": "cosine",
                                      "codebooks": np.zeros((3, 256, 2), np.float32)})),
    (None, lambda b: b.pop("codec")),
    (None, lambda b: b.update(order=np.zeros_like(np.asarray(b["order"])))),
    (None, lambda b: b.update(order=np.asarray(b["order"])[:-1].copy())),
])
def test_malformed_lazy_descriptor_is_a_format_error(cos, edit_desc, edit_dir):
    idx, q, oracle, client, _, cid = cos
    bad = _republish(client, cid, edit_desc, edit_dir)
    with pytest.raises(FormatError):  # at open, or (a bad base chunk CID) when a search names it
        open_db(client, bad).search(q[0], 10)


@pytest.mark.parametrize("mutate", [
    lambda b: b.update(slots=np.asarray(b["slots"])[::-1].copy()),
    lambda b: b.update(layer0=np.full_like(np.asarray(b["layer0"]), 10**6)),
    lambda b: b.update(vectors=np.zeros((3, 64), np.float16)),
    lambda b: b.update(vectors=np.zeros(np.asarray(b["vectors"]).shape, np.int32)),
    lambda b: b.pop("layer0"),
])
def test_malformed_base_chunk_is_a_format_error(mutate):
    idx, x, q, oracle = build(400, 64, "cosine", 6)
    client = LoggingClient()
    cid = publish(idx, client, True)
    store = ChunkStore(client)
    bad = []
    for c in base_cids(client, cid):  # every base chunk rewritten wrong, under its own (new) CID
        body = layout.decode_chunk(client.blobs[c], "hnsw_base")
        mutate(body)
        bad.append(BlobId.parse(store.put(layout.encode_chunk("hnsw_base", body))).to_bytes())
    cid = _republish(client, cid, edit_dir=lambda b: b.update(chunks=bad))
    db = open_db(client, cid)
    with pytest.raises(FormatError):
        db.search(q[0], 10)


def test_pin_lists_the_base_chunks(cos, monkeypatch):
    """The worker's ``chunks`` op (what ``db.pin()`` keeps offline) names the unlisted base chunks."""
    import asyncio
    import json

    from s5vec import rpc

    idx, q, oracle, client, _, cid = cos
    store = ChunkStore(client)
    monkeypatch.setattr(api, "make_store", lambda portals, **kw: store)
    monkeypatch.setattr(rpc, "_stores", {})
    call = lambda op, args: json.loads(asyncio.run(rpc.handle(op, args)))  # noqa: E731
    h = call("open", {"manifest": cid, "portals": ["http://unused"]})["result"]["handle"]
    listed = call("chunks", {"handle": h})["result"]["chunks"]
    m = layout.decode_manifest(client.blobs[cid])
    want = {cid} | {c["cid"] for c in m["chunks"]} | set(base_cids(client, cid))
    assert set(listed) == want and len(listed) == len(want)
    call("close", {"handle": h})


# ---------------------------------------------------------------- fuzz: mutated blobs of a lazy index

def _fuzz_sample():
    idx, x, q, oracle = build(150, 8, "cosine", 7)
    client = MemoryClient()
    cid = publish(idx, client, True)
    m = layout.decode_manifest(client.blobs[cid])
    return dict(client.blobs), cid, [c["cid"] for c in m["chunks"]], base_cids(client, cid), q[0]


FUZZ_BLOBS, FUZZ_CID, FUZZ_LISTED, FUZZ_BASE, FUZZ_Q = _fuzz_sample()


def _open_with_bad_base(target: str, bad: bytes) -> str:
    """Base chunk ``target`` replaced by ``bad`` (uploaded under its own CID, named by a rewritten
    directory chunk), then open and search: the name of the typed error, or "ok"."""
    from s5vec import errors

    client = MemoryClient(FUZZ_BLOBS)
    new = BlobId.parse(client.upload(bad)).to_bytes()
    old = BlobId.parse(target).to_bytes()
    doc = layout.loads(FUZZ_BLOBS[FUZZ_CID])
    d = layout.decode_chunk(FUZZ_BLOBS[doc["index"]["base"]["dir"]], "hnsw_base_dir")
    d["chunks"] = [new if bytes(c) == old else bytes(c) for c in d["chunks"]]
    dir_cid = client.upload(layout.encode_chunk("hnsw_base_dir", d))
    doc["index"]["base"]["dir"] = dir_cid
    doc["chunks"].append({"cid": dir_cid, "kind": "hnsw_base_dir", "size": 1})
    root = client.upload(layout.dumps(doc))
    try:
        db = api.Database.open(root, store=ChunkStore(client))
        for v in (FUZZ_Q, -FUZZ_Q):
            db.search(v, 5)
            db.search(v, 5, {"parity": 1})
        db.upsert([{"id": "new", "vector": FUZZ_Q}])  # makes it eager: reads every base chunk
    except errors.S5VecError as e:
        return e.name
    return "ok"


def test_mutated_blobs_of_a_lazy_index_give_typed_errors():
    import fuzzkit as fk
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    cfg = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))

    @cfg
    @given(st.sampled_from([FUZZ_CID] + FUZZ_LISTED).flatmap(
        lambda t: st.tuples(st.just(t), fk.mutations(FUZZ_BLOBS[t]))))
    def listed(case):
        target, bad = case
        fk.run_bounded(lambda: fk.open_with_mutated(FUZZ_BLOBS, FUZZ_CID, target, bad, FUZZ_Q))

    @cfg
    @given(st.sampled_from(FUZZ_BASE).flatmap(lambda t: st.tuples(st.just(t), fk.mutations(FUZZ_BLOBS[t]))))
    def base(case):
        target, bad = case
        fk.run_bounded(lambda: _open_with_bad_base(target, bad))

    listed()
    base()


def test_a_walk_out_of_rounds_finishes_its_pool_in_one_more(cos, monkeypatch):
    """The per-query round budget: past WALK_ROUNDS the walk scores its pool exactly in one last
    round instead of expanding further, so a search always settles (and still returns k hits)."""
    idx, q, oracle, client, _, cid = cos
    monkeypatch.setattr(hnsw_lazy, "WALK_ROUNDS", 2)
    db = open_db(client, cid)
    for v in q[:5]:
        out = db.search_with_stats(v, 10)
        assert len(out["hits"]) == 10 and out["stats"]["rounds"] <= 4
    assert api.max_rounds(db.index) == hnsw_lazy.MAX_ROUNDS > api.MAX_ROUNDS


def test_searches_on_threads_share_a_tiny_block_cache(cos):
    """CPython servers search one Database from several threads: the store's LRU, which holds the
    decoded base blocks (here so small it evicts all the time), never loses a block a walk is
    using, and hits equal serial ones."""
    from concurrent.futures import ThreadPoolExecutor

    idx, q, oracle, client, _, cid = cos
    serial = open_db(client, cid)
    want = [serial.search(v, 10) for v in q[:32]]
    db = open_db(client, cid)
    db.store.cache_limit = db.store.stats()["resident_bytes"] + 20_000  # a few blocks
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda v: db.search(v, 10), list(q[:32]) * 2))
    assert got == want * 2


def test_base_blocks_count_against_the_store_budget(cos):
    """The decoded base blocks live in the chunk store, under its one byte budget: after many
    searches through a budget far smaller than the base layer, what the process holds beyond the
    open index is about that budget (traced by the allocator), the store's accounted bytes stay
    within it, and the hits still equal those of a session that keeps everything. (The index's
    own 96 MiB block LRU used to hold every block a session touched, outside the budget.)"""
    import gc
    import tracemalloc

    idx, q, oracle, logging, _, cid = cos
    want = [open_db(logging, cid).search(v, 10) for v in q[:40]]
    client = MemoryClient()  # the same blobs, without the log of what was served
    client.blobs = logging.blobs
    gc.collect()
    tracemalloc.start()
    try:
        db = api.Database.open(cid, store=ChunkStore(client, cache_bytes=1 << 30))
        room = 256 << 10  # ~35 base chunks of ~7 KiB; 750 in all
        db.store.cache_limit = db.store.stats()["resident_bytes"] + room
        db.search(q[50], 10)  # the first search's one-off imports and allocations are behind us
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        got = []
        for v in q[:40]:
            got.append(db.search(v, 10))
            assert db.store.stats()["cache_bytes"] <= db.store.cache_limit
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert got == want
    s = db.store.stats()
    assert s["evictions"] > 0 and s["pinned_bytes"] == 0
    # plus the CID strings of every chunk seen (the store's known set and key memo, the index's
    # block CIDs: ~300 B a chunk, outside any budget); the old block LRU held ~7 KB a chunk
    fetched = s["chunks_fetched"]
    assert fetched > 500 and held <= 1.25 * room + 400 * fetched, (
        f"{held} B held beyond the open index for a {room} B budget and {fetched} chunks fetched")
    # a warm repeat of the last query finds its blocks in the store: no fetch, no round
    again = db.search_with_stats(q[39], 10)
    assert again["stats"]["rounds"] == 0 and again["hits"] == want[39]


@pytest.mark.parametrize("path", ["sync", "async"])
def test_commit_after_a_lazy_open_uploads_only_the_changed_blocks(path):
    """An edit of a lazily opened index keeps its block packing: the commit uploads the blocks
    whose nodes' links changed and the new nodes' blocks (27 of 376 here; re-packing changed 128),
    and the new snapshot is complete."""
    import asyncio

    idx, x, q, _ = build(3000, 96, "l2", 5, deleted=300)
    client = LoggingClient()
    cid = publish(idx, client, True)
    old = set(base_cids(client, cid))
    db = open_db(client, cid)
    new = np.random.default_rng(3).standard_normal((5, 96)).astype(np.float32)
    db.upsert([{"id": f"n{i}", "vector": new[i], "metadata": {"g": -1}, "timestamp": 1e6} for i in range(5)])
    puts: list[str] = []
    real_upload = client.upload

    def upload(data):  # the portal's log of what the commit sent
        got = real_upload(data)
        puts.append(BlobId.parse(got).to_string())
        return got

    client.upload = upload  # type: ignore[method-assign]
    new_cid = db.commit()[0] if path == "sync" else asyncio.run(db.commit_async())["manifest"]
    now = base_cids(client, new_cid)
    sent = [c for c in puts if c in set(now)]
    assert set(sent) == set(now) - old  # every new block was sent, and only those
    assert 0 < len(sent) <= len(now) // 5
    assert all(c in client.blobs for c in now)  # nothing the snapshot names is missing
    again = open_db(client, new_cid)
    assert [again.search(new[i], 1)[0]["id"] for i in range(5)] == [f"n{i}" for i in range(5)]
    want = [[h["id"] for h in db.search(v, 10)] for v in q[:20]]
    assert [[h["id"] for h in again.search(v, 10)] for v in q[:20]] == want


def test_vacuum_after_a_lazy_open_repacks_and_commits_everything():
    """A vacuum renumbers slots: the loaded packing is dropped and the commit writes a fresh one."""
    idx, x, q, _ = build(2000, 64, "cosine", 7, deleted=200)
    client = LoggingClient()
    cid = publish(idx, client, True)
    db = open_db(client, cid)
    db.delete(["r250"])  # makes it resident
    assert "_base_packed" in db.index.__dict__
    assert db.index.vacuum() == 201
    assert "_base_packed" not in db.index.__dict__
    db.edits += 1
    new_cid, _ = db.commit()
    again = open_db(client, new_cid)
    assert len(again.index) == 1799
    assert all(c in client.blobs for c in base_cids(client, new_cid))
    assert [[h["id"] for h in again.search(v, 10)] for v in q[:20]] == [[h["id"] for h in db.search(v, 10)] for v in q[:20]]
