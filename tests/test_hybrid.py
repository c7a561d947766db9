"""Hybrid index: routing by age, migration without loss or duplicates, merged search, persistence."""
import numpy as np
import pytest

from s5vec import api
from s5vec.errors import InvalidArgumentError, UnknownIdError
from s5vec.filters import parse
from s5vec.index.hybrid import HybridIndex, parse_duration
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

import kit
from kit import clustered

DAY = 86400.0
NOW = 1.75e9


@pytest.fixture(scope="module")
def data():
    n, dim = 20_000, 128
    x = clustered(n, dim, 100, seed=11, spread=0.5)
    rng = np.random.default_rng(5)
    # half older than the 30-day window, half newer
    ts = np.where(np.arange(n) % 2 == 0, NOW - rng.uniform(31, 900, n) * DAY, NOW - rng.uniform(0, 29, n) * DAY)
    ids = [f"h{i}" for i in range(n)]
    meta = [{"ch": f"c{i % 10}"} for i in range(n)]
    return ids, x, meta, ts


@pytest.fixture(scope="module")
def built(data):
    ids, x, meta, ts = data
    idx = HybridIndex(x.shape[1], recent_threshold="30d", clock=lambda: NOW, M=16, ef_construction=100,
                      nlist=128, nprobe=16)
    idx.add(ids, x, meta, ts)
    return idx, kit.flat_oracle(ids, x, "cosine", meta, ts)


def test_routing_by_age(built, data):
    idx, _ = built
    ids, _, _, ts = data
    assert len(idx.recent) == 10_000 and len(idx.historical) == 10_000
    assert all(idx.recent.timestamp(i) >= NOW - 30 * DAY for i in ids[1:200:2])
    assert "h0" in idx.historical and "h1" in idx.recent


def test_hybrid_recall(built, data):
    idx, oracle = built
    _, x, _, _ = data
    rng = np.random.default_rng(3)
    qs = x[rng.choice(len(x), 100, replace=False)] + 0.05 * rng.standard_normal((100, x.shape[1])).astype(np.float32)
    r = kit.recall_at_k(idx, qs, 10, oracle=oracle)
    assert r >= 0.95, r
    flt = parse({"ch": {"$in": ["c1", "c2"]}})
    rf = kit.recall_at_k(idx, qs[:30], 10, oracle=oracle, filter=flt)
    assert rf >= 0.9, rf


def test_merge_dedupes_and_keeps_best(data):
    ids, x, meta, ts = data
    idx = HybridIndex(128, recent_threshold=30 * DAY, clock=lambda: NOW, nlist=4)
    idx.add(ids[:400], x[:400], meta[:400], ts[:400])
    # plant the same id in both parts (as a crashed migration would): search must return it once
    idx.historical.add(["h1"], x[1:2], [{}], [NOW - 40 * DAY])
    hits = kit.search(idx, x[1], 10)
    assert [i for i, _ in hits].count("h1") == 1 and hits[0][0] == "h1"


def test_migration_moves_aged_without_loss_or_duplicates(data):
    ids, x, meta, ts = data
    n = 3000
    idx = HybridIndex(128, recent_threshold="30d", clock=lambda: NOW, nlist=16, nprobe=16)
    idx.add(ids[:n], x[:n], meta[:n], ts[:n])
    before = {i for i, *_ in idx.items()}
    in_recent = len(idx.recent)
    later = NOW + 10 * DAY  # ten days on, records 20-30 days old have aged out
    aged = sum(1 for i, _, _, t in idx.recent.items() if t < later - 30 * DAY)
    assert aged > 0
    moved = idx.migrate(now=later)
    assert moved == aged and len(idx.recent) == in_recent - aged
    after = [i for i, *_ in idx.items()]
    assert len(after) == len(set(after)) == n and set(after) == before
    assert all(t >= later - 30 * DAY for _, _, _, t in idx.recent.items())
    q = x[1]
    assert kit.search(idx, q, 1)[0][0] == "h1"


def test_delete_and_upsert_across_parts(data):
    ids, x, meta, ts = data
    idx = HybridIndex(128, recent_threshold="30d", clock=lambda: NOW, nlist=8)
    idx.add(ids[:1000], x[:1000], meta[:1000], ts[:1000])
    assert idx.delete(["h0", "h1"]) == 2  # one from each part
    assert "h0" not in idx and "h1" not in idx and len(idx) == 998
    with pytest.raises(UnknownIdError):
        idx.delete(["h2", "nope"])
    assert "h2" in idx
    # upsert moves h4 (old) into the recent part with new metadata; no duplicate anywhere
    idx.add(["h4"], x[4:5], [{"ch": "new"}], [NOW - DAY])
    assert "h4" in idx.recent and "h4" not in idx.historical and idx.metadata("h4") == {"ch": "new"}
    assert len(idx) == 998


def test_params_and_durations():
    assert parse_duration("30d") == 30 * DAY and parse_duration(90) == 90 and parse_duration("1.5h") == 5400
    for bad in ("soon", -1, 0, True, None):
        with pytest.raises(InvalidArgumentError):
            parse_duration(bad)
    with pytest.raises(InvalidArgumentError):
        HybridIndex(8, bogus=1)
    idx = HybridIndex(8, nlist=4)
    with pytest.raises(InvalidArgumentError):
        kit.search(idx, np.ones(8), 3, None, nprobe=2, warp=9)


def test_save_load_identical_and_incremental(data):
    ids, x, meta, ts = data
    n = 4000
    store = ChunkStore(MemoryClient())
    idx = HybridIndex(128, recent_threshold="30d", clock=lambda: NOW, nlist=32, nprobe=8)
    idx.add(ids[:n], x[:n], meta[:n], ts[:n])
    cid, w1 = api.save(idx, store)
    db = api.Database.open(cid, store=ChunkStore(store.client))
    qs = x[:20] + 0.01
    for q in qs:
        want = kit.search(idx, q, 10)
        got = db.search(q, 10)
        assert [h["id"] for h in got] == [i for i, _ in want]
    # a small change touches few chunks: a handful of new records go to the recent part only
    db.index.clock = lambda: NOW  # the clock is the caller's (wall time by default), not persisted
    db.upsert([{"id": f"new{i}", "vector": x[n + i].tolist(), "timestamp": NOW - DAY} for i in range(5)])
    new_cid, w2 = db.commit()
    total = len(w2.chunks)
    assert w2.uploaded < total / 2, (w2.uploaded, total)
    # only the recent part can change: its last node chunk, the link chunks of the ranges the new
    # records link into (1,024-row ranges), and its upper-layer chunk
    recent_ranges = -(-len(db.index.recent) // 1024)
    assert w2.skipped == total - w2.uploaded and w2.uploaded <= 2 + recent_ranges, (w2.uploaded, total)
    kinds = {c["kind"] for c in w2.chunks if c["cid"] not in {d["cid"] for d in w1.chunks}}
    assert kinds <= {"hnsw_nodes", "hnsw_links", "hnsw_upper"}, kinds
    cur = api.Database.open(new_cid, store=ChunkStore(store.client))
    assert "new3" in cur.index and len(cur.index) == n + 5


def test_publish_defaults_recall_for_every_kind(data):
    """`publish --index KIND` with default params gives recall@10 >= 0.90 on clustered data."""
    ids, x, meta, ts = data
    n = 6000
    recs = [{"id": ids[i], "vector": x[i], "metadata": meta[i], "timestamp": float(ts[i])} for i in range(n)]
    oracle = kit.flat_oracle(ids[:n], x[:n])
    rng = np.random.default_rng(9)
    qs = x[rng.choice(n, 40, replace=False)] + 0.05
    for kind in ("flat", "hnsw", "ivf", "hybrid"):
        store = ChunkStore(MemoryClient())
        cid = api.publish(recs, store, kind=kind)
        db = api.Database.open(cid, store=store)
        r = kit.recall_at_k(db, qs, 10, oracle=oracle)
        assert r >= 0.90, (kind, r)


def test_migration_of_a_new_topic_rebalances_the_lists():
    """Aged records from a region the IVF lists never saw pile into few lists: migrate retrains."""
    rng = np.random.default_rng(8)
    dim = 32
    old = clustered(3000, dim, 20, seed=1)
    new_topic = (clustered(3000, dim, 10, seed=2) + 6 * rng.standard_normal(dim)).astype(np.float32)
    idx = HybridIndex(dim, "l2", recent_threshold="30d", clock=lambda: NOW, nlist=16, nprobe=4)
    idx.add([f"o{i}" for i in range(3000)], old, None, [NOW - 400 * DAY] * 3000)
    idx.add([f"n{i}" for i in range(3000)], new_topic, None, [NOW - 5 * DAY] * 3000)
    assert len(idx.recent) == 3000 and idx.historical.imbalance() < 4
    moved = idx.migrate(now=NOW + 60 * DAY)
    assert moved == 3000 and len(idx.recent) == 0 and len(idx.historical) == 6000
    assert not idx.historical.needs_rebalance(), idx.historical.imbalance()
    skewed = HybridIndex(dim, "l2", nlist=16).historical  # the same IVF without the retrain, for contrast
    skewed.add([f"o{i}" for i in range(3000)], old)
    skewed.add([f"n{i}" for i in range(3000)], new_topic)
    assert skewed.needs_rebalance() and idx.historical.imbalance() < skewed.imbalance()
    assert kit.search(idx, new_topic[7], 1)[0][0] == "n7" and kit.search(idx, old[7], 1)[0][0] == "o7"


def test_published_hybrid_holds_both_parts():
    """A published hybrid routes by timestamp into both parts (moved here from e2e: it needs no browser)."""
    import time

    n, dim = 3000, 32
    now = time.time()  # publish routes against the wall clock
    x, labels = kit.clustered(n, dim, top=16, sub=8, spread_sub=0.5, spread=0.35, seed=17, labels=True)
    rng = np.random.default_rng(23)
    recent = np.arange(n) % 2 == 0
    ts = np.where(recent, now - rng.uniform(3600, 25 * DAY, n), now - rng.uniform(35 * DAY, 400 * DAY, n))
    records = [{"id": f"h{i:05d}", "vector": x[i], "metadata": {"c": int(labels[i]) % 4}, "timestamp": float(ts[i])}
               for i in range(n)]
    client = MemoryClient()
    cid = api.publish(records, ChunkStore(client), kind="hybrid",
                      params={"recent_threshold": "30d", "nlist": 32, "nprobe": 8})
    db = api.Database.open(cid, store=ChunkStore(client))
    m = db.manifest
    assert m["kind"] == "hybrid" and m["count"] == n
    assert len(db.index.recent) == int(recent.sum()) == n // 2
    assert len(db.index.historical) == m["index"]["historical"]["count"] == n - n // 2
    kinds = {c["kind"] for c in m["chunks"]}
    assert "ivf_list" in kinds and any(k.startswith("hnsw") for k in kinds), kinds
    assert all(r["id"] in db.index.recent for r, rec in zip(records, recent) if rec)
    assert all(db.get(r["id"])["timestamp"] == r["timestamp"] for r in records[:40])
