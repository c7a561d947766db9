"""The worker's chunk cache holds what its budget says: many cold searches in real Chromium.

The store counts what it really holds -- one copy per chunk, the decoded body once a search has read
it (charged its deep footprint), the raw bytes dropped -- and the lazily fetched HNSW base blocks
live in that same store (no LRU of their own). Through a budget far smaller than either index, a
few hundred cold searches (one by one and searchBatch) over an IVF-PQ index with separate refine
chunks and a lazily fetched HNSW base layer must keep ``stats().cache_bytes`` within
``cache_limit`` (with what the opens keep counted in it, ``resident_bytes``), evict, and answer
exactly as CPython does.
"""
from __future__ import annotations

import kit
import numpy as np

D = 32


def test_many_cold_searches_stay_within_the_cache_budget(harness, portals):
    from s5vec import api

    url = portals[0].url
    x = kit.clustered(3000, D, clusters=40, seed=21)
    store = api.make_store([url])
    ivf = api.publish([{"id": f"v{i}", "vector": x[i]} for i in range(len(x))], store, kind="ivf", params={
        "nlist": 64, "nprobe": 8, "codec": "pq", "pq_m": 8, "refine": "float16", "refine_rows": 4, "rerank": 20})
    y = kit.clustered(2000, D, clusters=30, seed=22)
    hnsw = api.publish([{"id": f"h{i}", "vector": y[i]} for i in range(len(y))], store, kind="hnsw",
                       params={"lazy_base": True, "M": 8, "ef_construction": 40})
    qx = [[float(v) for v in q] for q in kit.queries_near(x, 40, seed=5)]
    qy = [[float(v) for v in q] for q in kit.queries_near(y, 40, seed=6)]
    qz = [[float(v) for v in q] for q in kit.queries_near(x, 150, seed=7)]  # one batch bigger than the cache
    # what the opens keep (centroids, summaries; the HNSW ids, metadata, codes, upper layers) is ~400 KB;
    # the IVF lists + refine rows and the HNSW base layer ~500 KB more: ~250 KB of room for them
    budget = 640 << 10
    a = harness.open(ivf, [url], cacheBytes=budget)
    b = harness.open(hnsw, [url], cacheBytes=budget)
    out = harness.js(
        """const [a, b] = [window.dbs[arg.a], window.dbs[arg.b]];
           const vx = arg.qx.map((q) => new Float32Array(q)), vy = arg.qy.map((q) => new Float32Array(q));
           const worst = { cache_bytes: 0 };
           const singles = { a: [], b: [] };
           for (let pass = 0; pass < 2; pass++) {
             singles.a.length = 0; singles.b.length = 0;
             for (let i = 0; i < vx.length; i++) {
               singles.a.push(await a.search(vx[i], { k: 10 }));
               singles.b.push(await b.search(vy[i], { k: 10 }));
               const s = await a.stats();
               if (s.cache_bytes > worst.cache_bytes) Object.assign(worst, s);
             }
           }
           const batches = { a: await a.searchBatch(vx, { k: 10 }), b: await b.searchBatch(vy, { k: 10 }) };
           const big = await a.searchBatch(arg.qz, { k: 10 });
           const bigStats = a.lastStats, afterBig = await a.stats();
           return { singles, batches, worst, after: await a.stats(), big, bigStats, afterBig };""",
        {"a": a, "b": b, "qx": qx, "qy": qy, "qz": qz}, timeout=300_000)
    worst, after = out["worst"], out["after"]
    assert after["cache_limit"] == budget and after["evictions"] > 100 and after["chunks_fetched"] > 500
    assert 0 < after["resident_bytes"] < budget  # what the two opens keep, counted in the budget
    assert 0.5 * budget < worst["cache_bytes"] <= budget, worst
    assert after["cache_bytes"] <= budget and after["pinned_bytes"] == 0
    for cid, qs, key in ((ivf, qx, "a"), (hnsw, qy, "b")):
        ref = api.Database.open(cid, [url])
        want = ref.search_batch(np.asarray(qs, dtype=np.float32), 10)
        for g, s, w in zip(out["batches"][key], out["singles"][key], want):
            assert [h["id"] for h in g] == [h["id"] for h in s]
            kit.assert_same_hits(g, w)
    # a batch of 150 over a 640 KB cache: answered in groups (64 first: no estimate in a manifest
    # with explicit params; then as many as half the cache holds), the same hits as CPython
    assert out["bigStats"]["queries"] == 150 and out["bigStats"]["groups"] >= 3, out["bigStats"]
    assert out["afterBig"]["cache_bytes"] <= budget and out["afterBig"]["pinned_bytes"] == 0
    ref = api.Database.open(ivf, [url])
    for g, w in zip(out["big"], ref.search_batch(np.asarray(qz, dtype=np.float32), 10)):
        kit.assert_same_hits(g, w)
