"""The worker's C stack does not leak: many cold searches (one by one and searchBatch) in real Chromium.

Pyodide 0.27 with stack switching (JSPI, on in Chromium >= 137) lost 16 bytes of its 5 MiB C stack
on every asyncio callback (pyodide/pyodide#6249), about 200 bytes per fetched chunk: after ~20k
fetched chunks (~800 cold searches of a 3M-vector IVF-PQ index) the stack ran into the static data
and the worker died ("table index is out of bounds"). worker.js now keeps JSPI off. Running a
worker to its death takes 300k callbacks; the leak itself is visible after a few hundred fetches,
so this test fetches ~1,000 chunks through a cache too small to keep them and checks that the free
stack (``stats().wasmStackFreeBytes``, read at the same call depth) is exactly what it was, that the
answers are right (searchBatch = one by one = CPython) and that the worker still answers.
"""
from __future__ import annotations

import kit
import numpy as np

D = 32


def test_many_cold_fetches_leave_the_c_stack_as_it_was(harness, portals):
    from s5vec import api

    x = kit.clustered(3000, D, clusters=40, seed=11)
    recs = [{"id": f"v{i}", "vector": x[i]} for i in range(len(x))]
    store = api.make_store([portals[0].url])
    cid = api.publish(recs, store, kind="ivf", params={
        "nlist": 64, "nprobe": 8, "codec": "pq", "pq_m": 8, "refine": "float16", "refine_rows": 4, "rerank": 20})
    qs = [[float(v) for v in q] for q in kit.queries_near(x, 40, seed=5)]
    # a 64 KiB chunk cache keeps almost nothing between searches: every search fetches its lists again
    key = harness.open(cid, [portals[0].url], cacheBytes=1 << 16)
    out = harness.js(
        """const db = window.dbs[arg.key];
           const vs = arg.qs.map((q) => new Float32Array(q));
           await db.search(vs[0], { k: 10 });  // the first call's one-off allocations are behind us
           const before = await db.stats();
           const singles = [];
           for (let pass = 0; pass < 2; pass++) {
             singles.length = 0;
             for (const v of vs) singles.push(await db.search(v, { k: 10 }));
           }
           const batches = [];
           for (let r = 0; r < 3; r++) batches.push(await db.searchBatch(vs, { k: 10 }));
           const after = await db.stats();
           const alive = await db.search(vs[1], { k: 10 });
           return { before, after, singles, batches, alive };""",
        {"key": key, "qs": qs}, timeout=300_000)
    before, after = out["before"], out["after"]
    fetched = after["chunks_fetched"] - before["chunks_fetched"]
    assert fetched > 800, f"the test must make the worker fetch many chunks, it fetched {fetched}"
    assert isinstance(before.get("wasmStackFreeBytes"), int) and before["wasmStackFreeBytes"] > 1 << 20
    # without the fix: ~200 B lost per fetched chunk, here > 150 KiB
    assert after["wasmStackFreeBytes"] == before["wasmStackFreeBytes"], (
        f"C stack leaked {before['wasmStackFreeBytes'] - after['wasmStackFreeBytes']} bytes over {fetched} fetched chunks")
    ref = api.Database.open(cid, [portals[0].url])
    want = ref.search_batch(np.asarray(qs, dtype=np.float32), 10)
    for batch in out["batches"]:
        for g, s, w in zip(batch, out["singles"], want):
            assert [h["id"] for h in g] == [h["id"] for h in s]
            kit.assert_same_hits(g, w)
    assert [h["id"] for h in out["alive"]] == [h["id"] for h in out["singles"][1]]
