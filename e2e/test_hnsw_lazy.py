"""A lazily fetched HNSW base layer in real Chromium (Pyodide worker, web/s5vec.js, a local portal).

A standalone HNSW of 20,000 x 64, published with ``lazy_base=True`` to a portal that logs every
GET: opening it in the worker downloads the manifest and the resident chunks (records with their
navigation codes, the base-chunk directory, the upper layers) and no ``hnsw_base`` chunk; a search
walks in rounds that download base chunks; its hits equal CPython's for the same queries; recall@10
against the flat index is within 0.02 of the eager layout of the same graph; a warm repeat downloads
nothing; ``searchBatch`` equals search one by one. Writes in the tab on the lazily opened index
(upsert, delete, commit) work: the worker fetches the rest first, and CPython opens the commit
(lazy again) and finds exactly the edits.
"""
from __future__ import annotations

import numpy as np
import pytest

import kit
from kit import assert_same_hits

N, DIM = 20_000, 64


@pytest.fixture(scope="module")
def lazy_pub(tmp_path_factory, web_url):
    from s5vec import api, layout
    from s5vec.index.hnsw import HNSWIndex
    from s5vec.s5 import portal as portal_mod
    from s5vec.s5.cid import BlobId

    log = kit.GetLog()
    server, _ = portal_mod.serve(tmp_path_factory.mktemp("hnsw-lazy-portal"), on_request=log.record,
                                 cors_origins=[web_url.rstrip("/")])
    x = kit.clustered(N + 40, DIM, 80, 11, 0.35)
    data, qs = x[:N], x[N:]
    ids = [f"v{i:05d}" for i in range(N)]
    idx = HNSWIndex(DIM, "cosine", M=16, ef_construction=100, seed=3, vectors_dtype="float16")
    idx.add(ids, data, [{"n": i, "odd": i % 2 == 1} for i in range(N)], np.arange(N, dtype=float))
    store = api.make_store([server.url])
    idx.lazy_base = True
    cid, _ = api.save(idx, store)
    idx.lazy_base = False
    eager_cid, _ = api.save(idx, store)
    manifest = api.read_manifest(store, cid)
    d = layout.decode_chunk(store.get(manifest["index"]["base"]["dir"]), "hnsw_base_dir")
    base = {BlobId.from_bytes(bytes(c)).to_string() for c in d["chunks"]}
    listed = {BlobId.parse(c["cid"]).to_string() for c in manifest["chunks"]}
    yield {"cid": cid, "eager": eager_cid, "urls": [server.url], "log": log, "queries": qs, "base": base,
           "listed": listed, "oracle": kit.flat_oracle(ids, data),
           "ref": api.Database.open(cid, [server.url]), "ref_eager": api.Database.open(eager_cid, [server.url])}
    server.stop()


def _search_all(bridge, key: int, qs, opts=None) -> list[dict]:
    return bridge.js(
        """const db = window.dbs[arg.key], out = [];
           for (const q of arg.qs) { const hits = await db.search(new Float32Array(q), arg.opts);
                                     out.push({ hits, stats: db.lastStats }); }
           return out;""",
        {"key": key, "qs": [[float(v) for v in q] for q in qs], "opts": opts or {"k": 10}}, timeout=300_000)


def test_lazy_hnsw_in_the_worker(shared_harness, lazy_pub, request):
    from s5vec.s5.cid import BlobId

    log, base = lazy_pub["log"], lazy_pub["base"]
    assert len(base) > 1000 and not base & lazy_pub["listed"]
    log.clear()
    key = shared_harness.open(lazy_pub["cid"], lazy_pub["urls"])
    request.addfinalizer(lambda: shared_harness.run("await window.dbs[arg].close();", key))
    opened = log.blobs()
    # the open: the manifest and every chunk it lists (records, directory, upper layers), no base chunk
    assert sorted(opened) == sorted({BlobId.parse(lazy_pub["cid"]).to_string()} | lazy_pub["listed"])
    assert not base & set(opened)

    qs = lazy_pub["queries"][:20]
    log.clear()
    cold = _search_all(shared_harness, key, qs)
    got = log.blobs()
    assert got and set(got) <= base  # only base chunks, each once
    assert len(got) == len(set(got)) == sum(r["stats"]["chunksFetched"] for r in cold)
    rounds = [r["stats"]["rounds"] for r in cold]
    print(f"\n[hnsw lazy] 20 cold queries in the tab: {len(got)} base chunks, "
          f"{sum(r['stats']['bytesFetched'] for r in cold)} bytes, rounds {min(rounds)}..{max(rounds)}")
    assert cold[0]["stats"]["rounds"] >= 2
    # the same hits as CPython's lazy index (and so its walk), for every query
    for r, q in zip(cold, qs):
        assert_same_hits(r["hits"], lazy_pub["ref"].search(q, 10))
    # recall@10 against the flat index, next to the eager layout of the same graph (CPython)
    oracle = lazy_pub["oracle"]
    truth = [{i for i, _ in kit.search(oracle, q, 10)} for q in qs]
    r_tab = np.mean([len(t & {h["id"] for h in r["hits"]}) / 10 for t, r in zip(truth, cold)])
    r_eager = np.mean([len(t & {h["id"] for h in lazy_pub["ref_eager"].search(q, 10)}) / 10
                       for t, q in zip(truth, qs)])
    print(f"[hnsw lazy] recall@10 in the tab {r_tab:.3f}, eager layout (CPython) {r_eager:.3f}")
    assert r_tab >= 0.9 and r_tab >= r_eager - 0.02

    # warm repeat: nothing downloaded, the same hits
    log.clear()
    warm = _search_all(shared_harness, key, qs)
    assert log.blobs() == []
    assert all(r["stats"]["bytesFetched"] == 0 and r["stats"]["chunksFetched"] == 0 for r in warm)
    assert [r["hits"] for r in warm] == [r["hits"] for r in cold]

    # searchBatch (and a filter) on the lazy index: equal to search one by one
    more = lazy_pub["queries"][20:32]
    for opts in ({"k": 10}, {"k": 5, "filter": {"odd": True}}):
        singles = _search_all(shared_harness, key, more, opts)
        batch = shared_harness.js(
            """return await window.dbs[arg.key].searchBatch(arg.qs.map((q) => new Float32Array(q)), arg.opts);""",
            {"key": key, "qs": [[float(v) for v in q] for q in more], "opts": opts}, timeout=300_000)
        assert batch == [r["hits"] for r in singles]
        if "filter" in opts:
            assert all(h["metadata"]["odd"] for hits in batch for h in hits)


def test_writes_on_a_lazily_opened_hnsw_in_the_worker(shared_harness, lazy_pub, request):
    from s5vec import api

    key = shared_harness.open(lazy_pub["cid"], lazy_pub["urls"])
    request.addfinalizer(lambda: shared_harness.run("await window.dbs[arg].close();", key))
    rng = np.random.default_rng(5)
    new = rng.standard_normal((2, DIM)).astype(np.float32)
    out = shared_harness.js(
        """const db = window.dbs[arg.key];
           await db.search(new Float32Array(arg.q), { k: 5 });           // a lazy walk first
           await db.upsert(arg.recs);
           await db.delete(["v00007"]);
           const found = await db.search(new Float32Array(arg.recs[1].vector), { k: 1 });
           const gone = await db.search(new Float32Array(arg.q7), { k: 10 });
           const done = await db.commit();
           return { found, gone, done };""",
        {"key": key, "q": [float(v) for v in lazy_pub["queries"][0]], "q7": [float(v) for v in lazy_pub["queries"][1]],
         "recs": [{"id": f"new{i}", "vector": [float(v) for v in new[i]], "metadata": {"n": -1, "odd": False},
                   "timestamp": 1e6} for i in range(2)]}, timeout=600_000)
    assert out["found"][0]["id"] == "new1"
    assert "v00007" not in {h["id"] for h in out["gone"]}
    print(f"\n[hnsw lazy] commit from the tab after 2 upserts + 1 delete: {out['done']['uploaded']} chunks uploaded, "
          f"{out['done']['skipped']} unchanged")
    assert out["done"]["uploaded"] > 0 and out["done"]["skipped"] > 0  # unchanged chunks kept their CIDs
    back = api.Database.open(out["done"]["manifest"], lazy_pub["urls"])
    assert back.index.plan_all()  # lazy again
    assert len(back.index) == N + 2 - 1
    assert back.search(new[0], 1)[0]["id"] == "new0" and back.get("new1")["metadata"] == {"n": -1, "odd": False}
    assert "v00007" not in back.index
