"""The request layer end to end on CPython: publish to a store, open, search, edit, snapshot."""
import asyncio
import json

import numpy as np
import pytest

from s5vec import api, layout, rpc
from s5vec.errors import (ClosedError, DimensionError, FilterError, FormatError, IntegrityError,
                          InvalidArgumentError, InvalidVectorError, NotFoundError)
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

import kit
from kit import clustered


def records(n=300, dim=16, seed=0):
    x = clustered(n, dim, 8, seed)
    return [{"id": f"r{i}", "vector": x[i].tolist(), "metadata": {"g": i % 3, "year": 2020 + i % 5},
             "timestamp": 1.6e9 + i} for i in range(n)], x


def oracle(x, q, k, metric="cosine"):
    idx = kit.flat_oracle([f"r{i}" for i in range(len(x))], x, metric)
    return [i for i, _ in kit.search(idx, q, k)]


@pytest.fixture
def published():
    recs, x = records()
    store = ChunkStore(MemoryClient())
    cid = api.publish(recs, store, kind="flat", params={"chunk_rows": 64})
    return store, cid, x


def test_publish_open_search_exact(published):
    store, cid, x = published
    db = api.Database.open(cid, store=store)
    assert db.info()["count"] == 300 and db.info()["kind"] == "flat"
    for q in x[:5]:
        hits = db.search(q, 10)
        assert [h["id"] for h in hits] == oracle(x, q, 10)
        assert hits[0]["score"] >= hits[-1]["score"]  # cosine similarity: best first
        assert set(hits[0]["metadata"]) == {"g", "year"}


def test_manifest_lists_every_chunk(published):
    store, cid, _ = published
    m = layout.decode_manifest(store.get(cid))
    assert m["count"] == 300 and m["dim"] == 16 and m["metric"] == "cosine"
    assert [c["kind"] for c in m["chunks"]] == ["flat_rows"] * 5
    assert [c["cid"] for c in m["chunks"]] == m["index"]["rows"]


def test_filter_and_errors_change_nothing(published):
    store, cid, x = published
    db = api.Database.open(cid, store=store)
    hits = db.search(x[0], 5, {"g": 1, "year": {"$gte": 2022}})
    assert hits and all(h["metadata"]["g"] == 1 and h["metadata"]["year"] >= 2022 for h in hits)
    for bad, err in [((np.ones(3),), DimensionError), (([np.nan] * 16,), InvalidVectorError),
                     ((x[0], 5, {"g": {"$bad": 1}}), FilterError), ((x[0], 0), InvalidArgumentError),
                     ((x[0], 5, None, {"ef": "x"}), InvalidArgumentError)]:
        with pytest.raises(err):
            db.search(*bad)
    assert [h["id"] for h in db.search(x[0], 10)] == oracle(x, x[0], 10)
    db.close()
    with pytest.raises(ClosedError):
        db.search(x[0])


def test_unknown_and_corrupt_manifest():
    store = ChunkStore(MemoryClient())
    from s5vec.s5.cid import blob_cid

    with pytest.raises(NotFoundError):
        api.Database.open(blob_cid(b"nothing here"), store=store)
    junk = store.put(b"\x9f\x01\x02")  # valid blob, not a manifest
    with pytest.raises(FormatError):
        api.Database.open(junk, store=store)


def test_tampered_chunk_is_an_integrity_error(published):
    store, cid, x = published
    m = layout.decode_manifest(store.get(cid))
    client = MemoryClient(dict(store.client.blobs))
    victim = m["chunks"][2]["cid"]
    client.blobs[victim] = client.blobs[victim][:-1] + b"\x00"
    with pytest.raises(IntegrityError):
        api.Database.open(cid, store=ChunkStore(client))


def test_edit_commit_is_incremental_and_snapshots_stay_readable(published):
    store, cid, x = published
    db = api.Database.open(cid, store=store)
    new = clustered(10, 16, 2, seed=9)
    db.upsert([{"id": f"new{i}", "vector": new[i].tolist(), "timestamp": 1.7e9} for i in range(10)])
    db.delete(["r299"])
    new_cid, writer = db.commit()
    assert new_cid != cid
    assert writer.uploaded == 1 and writer.skipped == 4  # only the last row chunk changed
    assert layout.decode_manifest(store.get(new_cid))["parent"] == cid
    old = api.Database.open(cid, store=store)
    cur = api.Database.open(new_cid, store=store)
    assert len(old.index) == 300 and len(cur.index) == 309
    assert cur.search(new[0], 1)[0]["id"] == "new0"


def test_records_validation():
    store = ChunkStore(MemoryClient())
    with pytest.raises(InvalidArgumentError):
        api.publish([], store, kind="flat")
    with pytest.raises(InvalidArgumentError):
        api.publish([{"id": "a", "vector": [1, 2]}, {"id": "b", "vector": [1, 2, 3]}], store, kind="flat")
    with pytest.raises(InvalidArgumentError):
        api.publish([{"id": "a", "vector": [1, 2], "timestamp": "yesterday"}], store, kind="flat")
    with pytest.raises(InvalidArgumentError):
        api.publish([{"id": "a", "vector": [1, 2]}], store, kind="annoy")
    with pytest.raises(InvalidArgumentError):
        api.publish([{"id": "a", "vector": [1, 2]}], store, kind="flat", params={"bogus": 1})
    assert store.stats()["chunks_uploaded"] == 0


def test_rpc_never_raises(published, monkeypatch):
    store, cid, x = published
    monkeypatch.setattr(api, "make_store", lambda portals, **kw: store)

    def call(op, args=None):
        return json.loads(asyncio.run(rpc.handle(op, args)))

    v = call("version")
    assert v["ok"] and v["result"]["numpy"] == np.__version__
    opened = call("open", {"manifest": cid, "portals": ["http://unused"]})
    assert opened["ok"], opened
    h = opened["result"]["handle"]
    res = call("search", {"handle": h, "vector": x[0].tolist(), "k": 3})
    assert res["ok"] and len(res["result"]["hits"]) == 3 and "bytesFetched" in res["result"]["stats"]
    for op, args, name in [("search", {"handle": h, "vector": [1.0]}, "DimensionError"),
                           ("search", {"handle": h, "vector": [float("nan")] * 16}, "InvalidVectorError"),
                           ("search", {"handle": h, "vector": x[0].tolist(), "filter": {"a": {"$x": 1}}}, "FilterError"),
                           ("search", {"handle": 999, "vector": [1.0]}, "InvalidArgumentError"),
                           ("nope", {}, "InvalidArgumentError"),
                           ("search", "not an object", "InvalidArgumentError")]:
        out = call(op, args)
        assert not out["ok"] and out["error"]["name"] == name, out
    assert call("close", {"handle": h})["ok"]
    assert call("search", {"handle": h, "vector": x[0].tolist()})["error"]["name"] == "ClosedError"


def test_cache_bytes_is_the_one_budget_for_ivf_lists():
    """Raw chunk bytes and decoded IVF lists share the store's one byte budget."""
    from s5vec.index.ivf import IVFIndex

    x = clustered(3000, 16, 8, seed=2)
    idx = IVFIndex(16, nlist=16, nprobe=4, train_min=1000)
    idx.add([f"r{i}" for i in range(3000)], x)
    store = ChunkStore(MemoryClient())
    cid, _ = api.save(idx, store)
    db = api.Database.open(cid, store=ChunkStore(store.client, cache_bytes=50_000), cache_bytes=50_000)
    assert not hasattr(db.index, "cache_bytes") and not hasattr(db.reader, "cache_bytes")
    for q in x[:30]:
        db.search(q, 5)
    st = db.store.stats()
    assert 0 < st["cache_bytes"] <= 50_000 and st["cache_hits"] > 0


def test_manifest_spec_names_the_index():
    recs, _ = records(n=1200)
    store = ChunkStore(MemoryClient())
    specs = {}
    for kind, params in [("flat", {}), ("hnsw", {"M": 8}), ("ivf", {"nlist": 16, "codec": "pq", "pq_m": 4}),
                         ("hybrid", {"recent_threshold": "7d", "nlist": 8, "codec": "sq8"})]:
        cid = api.publish(recs, store, kind=kind, params=params)
        specs[kind] = layout.decode_manifest(store.get(cid))["spec"]
    assert specs == {"flat": "Flat", "hnsw": "HNSW8", "ivf": "IVF16,PQ4",
                     "hybrid": "Hybrid(HNSW16|IVF8,SQ8;recent=7d)"}


def test_cache_bytes_for_counts_what_is_held():
    """The budget from a manifest: what the open keeps (measured once known, else the eager chunks'
    bytes) + the lazy chunks as held decoded (1.15x their bytes), capped at 256 MiB."""
    man = {"chunks": [{"cid": "a", "kind": "ivf_centroids", "size": 4 << 20},
                      {"cid": "b", "kind": "ivf_list", "size": 100 << 20}],
           "extra": {"unlisted": {"ivf_refine": {"bytes": 60 << 20, "count": 9}}}}
    lazy = int((160 << 20) * api.DECODED_OVER_RAW)
    assert api.cache_bytes_for(man) == (4 << 20) + lazy + (1 << 20)
    assert api.cache_bytes_for(man, resident=9 << 20) == (9 << 20) + lazy + (1 << 20)
    man["chunks"][1]["size"] = 1 << 30
    assert api.cache_bytes_for(man, resident=9 << 20) == (9 << 20) + api.CACHE_LAZY_MAX + (1 << 20)
    assert api.cache_bytes_for({"chunks": []}) == api.CACHE_MIN
