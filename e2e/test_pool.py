"""A pool of workers behind one database (`S5Vec.open({ workers: n })`), in real Chromium through the
real bridge, against real portals:

* a pool of 2 answers search / searchBatch / searchText / get exactly like a pool of 1 (the same
  bytes: both run the same code on the same index), and both of its workers serve;
* a batch split across the two workers equals searching its queries one by one;
* with the service worker, the chunk cache is shared: the portal sees every blob at most once,
  a query answered by the second worker after the first downloads nothing, and a pool of 2 GETs
  exactly the blobs a pool of 1 GETs (counted at the portal, kit.GetLog);
* writes through a pool: searches see pending edits (the primary serves), and after the commit the
  other worker reopens the new manifest and serves it;
* bad `workers` values are typed errors that start nothing; close terminates the pool's extra
  worker; a worker that dies or never starts leaves no request hanging.
"""
from __future__ import annotations

import time

import kit
import numpy as np
import pytest

from .conftest import open_harness
from .test_demo import demo  # noqa: F401  (fixture: the films behind the demo page)
from .test_pointer import world  # noqa: F401  (fixture: a flat index on a portal that takes pointers)

DIM = 64
NOW = float(int(time.time()))


@pytest.fixture(scope="module")
def logged(web_url, tmp_path_factory):
    """2,000 demo videos as a hybrid index (the newest 10% in HNSW, the rest in 32 IVF lists fetched
    lazily) on a portal that logs every GET."""
    from s5vec import api
    from s5vec.demo import demo_records
    from s5vec.s5 import portal as portal_mod

    records = list(demo_records(2000, dim=DIM, seed=21))
    for i, r in enumerate(records):  # 400 .. 0 days old: the newest 10% in HNSW
        r["timestamp"] = NOW - 86400 * (400 - i * 0.2) - 3600
    log = kit.GetLog()
    server, _ = portal_mod.serve(tmp_path_factory.mktemp("pool-portal"), on_request=log.record,
                                cors_origins=[web_url.rstrip("/")])  # uploads (commit) from the page
    cid = api.publish(records, api.make_store([server.url]), kind="hybrid",
                      params={"recent_threshold": "40d", "nlist": 32, "nprobe": 4})
    yield {"cid": cid, "records": records, "urls": [server.url], "log": log,
           "ref": api.Database.open(cid, [server.url])}
    server.stop()


def queries(records, n: int, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(records), n, replace=False)
    return [[float(x) for x in np.asarray(records[i]["vector"]) + rng.normal(0, 0.3, DIM)] for i in picks]


def worker_count(page) -> int:
    return len(page.workers)


def wait_workers(page, n: int, timeout: float = 10.0) -> int:
    t0 = time.monotonic()
    while worker_count(page) != n and time.monotonic() - t0 < timeout:
        page.wait_for_timeout(100)
    return worker_count(page)


JS_ALL_READS = """const one = window.dbs[arg.one], two = window.dbs[arg.two];
const out = { one: {}, two: {}, served: [] };
for (const [name, db] of [["one", one], ["two", two]]) {
  const r = out[name];
  r.search = [];
  for (const q of arg.qs) {
    r.search.push(await db.search(new Float32Array(q), { k: 10 }));
    if (name === "two") out.served.push(db.lastStats.worker);
  }
  r.filtered = await db.search(arg.qs[0], { k: 5, filter: arg.filter });
  r.batch = await db.searchBatch(arg.qs, { k: 10 });
  r.batchStats = db.lastStats;
  r.texts = [];
  for (const t of arg.texts) for (const mode of ["hybrid", "vector", "keyword"]) {
    r.texts.push(await db.searchText(t, { k: 8, mode }));
    if (name === "two") out.served.push(db.lastStats.worker);
  }
  r.gets = [];
  for (const id of arg.ids) r.gets.push(await db.get(id));
  r.missing = await db.get("no-such-id").then(() => null, (e) => e.name);
}
// both workers busy at once: overlapping searches spread over the pool
const many = await Promise.all(arg.qs.map((q) => two.search(q, { k: 10 }).then((hits) => ({ hits, w: two.lastStats.worker }))));
out.concurrent = many.map((m) => m.hits);
out.workers = two.workers;
return out;"""


def test_a_pool_of_two_answers_exactly_like_one(harness, film_index):
    records, ref = film_index["records"], film_index["ref"]
    one = harness.open(film_index["cid"], film_index["urls"])
    two = harness.open(film_index["cid"], film_index["urls"], workers=2)
    assert wait_workers(harness.page, 2) == 2
    rng = np.random.default_rng(3)
    dim = len(records[0]["vector"])
    qs = [[float(x) for x in np.asarray(records[i]["vector"]) + rng.normal(0, 0.02, dim)]
          for i in rng.choice(len(records), 40, replace=False)]
    texts = ["documentary about space", records[11]["metadata"]["title"], "a detective story in the city"]
    ids = [records[i]["id"] for i in (0, 17, 4000)]
    out = harness.js(JS_ALL_READS, {"one": one, "two": two, "qs": qs, "texts": texts, "ids": ids,
                                    "filter": {"year": {"$gte": 1990}}}, timeout=180_000)
    a, b = out["one"], out["two"]
    # the same code on the same index in another worker: the same answers, to the last bit
    for key in ("search", "filtered", "texts", "gets", "missing"):
        assert a[key] == b[key], key
    for g, w in zip(b["batch"], a["batch"]):  # matrix products over other batch shapes: equal to rounding
        kit.assert_same_hits(g, w)
    assert out["concurrent"] == a["search"]
    assert out["workers"] == 2 and set(out["served"]) == {0, 1}, out["served"]
    assert a["missing"] == "UnknownIdError"
    # the batch of 40 was split across both workers and equals the queries one by one (and CPython)
    assert b["batchStats"]["workers"] == 2 and b["batchStats"]["queries"] == len(qs)
    parts = b["batchStats"]["parts"]
    assert [p["queries"] for p in parts] == [20, 20] and {p["worker"] for p in parts} == {0, 1}
    assert b["batchStats"]["ms"] == max(p["ms"] for p in parts)
    assert "workers" not in a["batchStats"] and a["batchStats"]["queries"] == len(qs)
    for got, single, q in zip(b["batch"], a["search"], qs):
        kit.assert_same_hits(got, single)
        kit.assert_same_hits(got, ref.search(np.asarray(q, dtype=np.float32), 10))
    assert all(a["texts"]) and all(h["metadata"]["year"] >= 1990 for h in a["filtered"])


JS_SW_OPEN = """window.dbs[1] = await S5Vec.open({ manifest: arg.cid, portals: arg.urls, workers: arg.workers });
return window.dbs[1].workers;"""

JS_ONE = """const db = window.dbs[1];
const hits = await db.search(arg.q, { k: 10 });
await new Promise((r) => setTimeout(r, 300)); // the service worker's write to IndexedDB settles
return { worker: db.lastStats.worker ?? 0, bytes: db.lastStats.bytesFetched, chunks: db.lastStats.chunksFetched, hits };"""

JS_SW_RUN = """const db = window.dbs[1];
const served = [];
const hits = [];
for (const q of arg.qs) {
  hits.push(await db.search(q, { k: 10 }));
  served.push(db.lastStats.worker ?? 0);
}
const batch = await db.searchBatch(arg.batch, { k: 10 });
return { hits, batch, served, batchWorkers: db.lastStats.workers ?? 1 };"""


def sw_page(browser, web_url):
    ctx = browser.new_context()
    page = ctx.new_page()
    bridge = open_harness(page, web_url)
    status = bridge.js("return await S5Vec.offline.register()", timeout=120_000)
    assert status["controlled"], status
    return ctx, bridge


def test_workers_share_the_persistent_chunk_cache(browser, web_url, logged):
    """Counted at the portal: with the service worker, two workers download each blob once between
    them, a query the first worker answered costs the second nothing at the portal, and a pool of 2
    GETs exactly the blobs a pool of 1 GETs."""
    log = logged["log"]
    q0 = queries(logged["records"], 1, seed=99)[0]
    qs = queries(logged["records"], 12, seed=5)
    batch = queries(logged["records"], 32, seed=6)
    want0 = logged["ref"].search(np.asarray(q0, dtype=np.float32), 10)  # (CPython's GETs: before counting)
    runs = {}
    for workers in (1, 2):
        ctx, bridge = sw_page(browser, web_url)
        try:
            log.clear()
            assert bridge.js(JS_SW_OPEN, {"cid": logged["cid"], "urls": logged["urls"], "workers": workers},
                             timeout=180_000) == workers
            opened = len(log.blobs())
            # one query, answered by one worker, then again: with a pool by the other worker
            first = bridge.js(JS_ONE, {"q": q0})
            fetched = len(log.blobs())
            again = bridge.js(JS_ONE, {"q": q0})
            assert len(log.blobs()) == fetched, "the repeat went to the portal"
            assert first["bytes"] > 0 and fetched > opened
            assert again["hits"] == first["hits"]
            kit.assert_same_hits(again["hits"], want0)
            if workers == 2:
                assert again["worker"] != first["worker"]
                assert again["chunks"] > 0  # its own memory was cold: it read the shared cache
            else:
                assert again["chunks"] == 0  # the one worker's own memory
            out = bridge.js(JS_SW_RUN, {"qs": qs, "batch": batch}, timeout=180_000)
            got = log.blobs()
            runs[workers] = {"out": out, "gets": got}
            # every blob at most once (for the pool: between its two workers, their opens included)
            dup = [(i, c[:20]) for i, c in enumerate(got) if got.count(c) > 1]
            assert len(got) == len(set(got)), (workers, opened, fetched, dup)
            if workers == 2:
                assert set(out["served"]) == {0, 1} and out["batchWorkers"] == 2
        finally:
            ctx.close()
    one, two = runs[1], runs[2]
    print(f"\n[pool] portal GETs: pool of 1 {len(one['gets'])}, pool of 2 {len(two['gets'])}")
    assert sorted(two["gets"]) == sorted(one["gets"])
    assert two["out"]["hits"] == one["out"]["hits"]
    for g, w in zip(two["out"]["batch"], one["out"]["batch"]):
        kit.assert_same_hits(g, w)


JS_WRITES = """const db = window.dbs[arg.key];
const out = {};
await db.upsert([{ id: "fresh-1", vector: arg.v, metadata: { tag: "new" }, timestamp: arg.now }]);
await db.delete([arg.gone]);
out.pending = db.pendingEdits;
out.beforeCommit = [];
for (let i = 0; i < 4; i++) {
  const hits = await db.search(arg.v, { k: 5 });
  out.beforeCommit.push({ ids: hits.map((h) => h.id), worker: db.lastStats.worker });
}
out.goneHits = (await db.search(arg.goneVector, { k: 10 })).map((h) => h.id);
out.getNew = await db.get("fresh-1");
out.batch = (await db.searchBatch(Array(20).fill(arg.v), { k: 3 })).map((hits) => hits.map((h) => h.id));
out.batchWorkers = db.lastStats.workers ?? null;
const c = await db.commit();
out.manifest = c.manifest;
out.infoManifest = db.info.manifest;
// the other worker opens the new manifest in the background; until it has, the primary serves
const t0 = performance.now();
out.after = [];
while (performance.now() - t0 < 60000) {
  const hits = await db.search(arg.v, { k: 5 });
  out.after.push({ ids: hits.map((h) => h.id), worker: db.lastStats.worker });
  if (db.lastStats.worker === 1) break;
  await new Promise((r) => setTimeout(r, 50));
}
out.afterGone = [];
for (let i = 0; i < 2; i++) {
  out.afterGone.push({ ids: (await db.search(arg.goneVector, { k: 10 })).map((h) => h.id), worker: db.lastStats.worker });
}
out.getBoth = [await db.get("fresh-1"), await db.get("fresh-1")];
return out;"""


def test_writes_through_a_pool_are_seen_by_every_search(harness, logged):
    from s5vec import api

    recs = logged["records"]
    key = harness.open(logged["cid"], logged["urls"], workers=2)
    v = [float(x) for x in np.random.default_rng(8).normal(0, 1, DIM)]
    gone = recs[-1]["id"]
    out = harness.js(JS_WRITES, {"key": key, "v": v, "now": NOW, "gone": gone,
                                 "goneVector": [float(x) for x in recs[-1]["vector"]]}, timeout=180_000)
    assert out["pending"] == {"ops": 2, "upserted": 1, "deleted": 1}
    # pending edits live in the primary: it serves every read until the commit
    assert all(r["ids"][0] == "fresh-1" and r["worker"] == 0 for r in out["beforeCommit"]), out["beforeCommit"]
    assert gone not in out["goneHits"] and out["getNew"]["metadata"] == {"tag": "new"}
    assert all(ids[0] == "fresh-1" for ids in out["batch"]) and out["batchWorkers"] is None
    assert out["infoManifest"] == out["manifest"] != logged["cid"]
    # after the commit the second worker holds the new manifest and serves it
    assert out["after"][-1]["worker"] == 1, out["after"]
    assert all(r["ids"][0] == "fresh-1" for r in out["after"])
    assert {r["worker"] for r in out["afterGone"]} == {0, 1}
    assert all(gone not in r["ids"] for r in out["afterGone"])
    assert out["getBoth"][0] == out["getBoth"][1] and out["getBoth"][0]["metadata"] == {"tag": "new"}
    # CPython opens what the pool committed
    db = api.Database.open(out["manifest"], logged["urls"])
    assert db.search(np.asarray(v, dtype=np.float32), 1)[0]["id"] == "fresh-1"


def test_bad_workers_values_are_typed_errors_and_start_nothing(harness, logged):
    cap = harness.js("return S5Vec.maxWorkers()")
    assert 1 <= cap <= harness.js("return window.s5vec.MAX_WORKERS")
    for bad in (0, -1, 1.5, "2", None, True, cap + 1, [2]):
        res = harness.run("return await S5Vec.open({ manifest: arg.cid, portals: arg.urls, workers: arg.w })",
                          {"cid": logged["cid"], "urls": logged["urls"], "w": bad})
        assert not res["ok"] and res["isS5VecError"] and res["name"] == "InvalidArgumentError", (bad, res)
        assert "workers must be an integer from 1 to" in res["message"]
    nan = harness.run("return await S5Vec.open({ manifest: arg.cid, portals: arg.urls, workers: NaN })",
                      {"cid": logged["cid"], "urls": logged["urls"]})
    assert nan["name"] == "InvalidArgumentError"
    assert worker_count(harness.page) == 0  # rejected before anything started


def test_close_terminates_the_pools_extra_workers(harness, logged):
    a = harness.open(logged["cid"], logged["urls"], workers=2)
    b = harness.open(logged["cid"], logged["urls"], workers=2)
    assert wait_workers(harness.page, 2) == 2  # the two databases share the pool
    harness.js("await window.dbs[arg].close()", a)
    assert wait_workers(harness.page, 2, timeout=1) == 2  # b still uses both
    q = queries(logged["records"], 1, seed=1)[0]
    assert harness.search(b, q)["ok"]
    harness.js("await window.dbs[arg].close()", b)
    assert wait_workers(harness.page, 1) == 1  # the extra worker is gone; the page's shared one stays
    res = harness.search(b, q)
    assert not res["ok"] and res["name"] == "ClosedError"
    c = harness.open(logged["cid"], logged["urls"], workers=2)  # a new pool starts a new extra worker
    assert wait_workers(harness.page, 2) == 2
    assert harness.search(c, q)["ok"]


JS_KILL = """const db = window.dbs[arg.key];
const runs = arg.qs.map((q) => db.search(q, { k: 10 }).then((hits) => ({ ok: true, ids: hits.map((h) => h.id) }),
                                                                (e) => ({ ok: false, name: e.name })));
// the second worker dies while searches are queued on both (the path of its "error" event)
db._pool.members[1].runtime.fail(new window.S5VecError("WorkerError", "worker killed by the test"));
const during = await Promise.all(runs);
const after = [];
for (const q of arg.qs.slice(0, 4)) {
  after.push({ ids: (await db.search(q, { k: 10 })).map((h) => h.id), worker: db.lastStats.worker });
}
const batch = (await db.searchBatch(arg.qs, { k: 10 })).map((hits) => hits.map((h) => h.id));
await db.close();
return { during, after, batch };"""


def test_a_dying_worker_leaves_no_request_hanging(harness, logged):
    ref = logged["ref"]
    qs = queries(logged["records"], 16, seed=12)
    want = [[h["id"] for h in ref.search(np.asarray(q, dtype=np.float32), 10)] for q in qs]
    key = harness.open(logged["cid"], logged["urls"], workers=2)
    out = harness.js(JS_KILL, {"key": key, "qs": qs}, timeout=120_000)
    # reads that were queued on the dead worker were answered by the other one
    assert [r["ids"] if r["ok"] else r for r in out["during"]] == want
    assert [r["ids"] for r in out["after"]] == want[:4] and {r["worker"] for r in out["after"]} == {0}
    assert out["batch"] == want


def test_a_pool_that_cannot_start_rejects_typed(harness, logged):
    res = harness.run("return await S5Vec.open({ manifest: arg.cid, portals: arg.urls, workers: 2, startTimeoutMs: 30 })",
                      {"cid": logged["cid"], "urls": logged["urls"]}, timeout=60_000)
    assert not res["ok"] and res["isS5VecError"] and res["name"] == "StartupTimeoutError", res
    assert wait_workers(harness.page, 0) == 0  # both stopped
    res = harness.run("return await S5Vec.open({ manifest: arg.cid, portals: arg.urls, workers: 2, workerUrl: './nope.js' })",
                      {"cid": logged["cid"], "urls": logged["urls"]}, timeout=60_000)
    assert not res["ok"] and res["name"] == "WorkerError", res
    # a good pool starts afterwards
    key = harness.open(logged["cid"], logged["urls"], workers=2)
    assert harness.search(key, queries(logged["records"], 1, seed=2)[0])["ok"]
    assert wait_workers(harness.page, 2) == 2


JS_AFTER_REFRESH = """const db = window.dbs[arg.key];
const seen = [];
const t0 = performance.now();
while (performance.now() - t0 < 60000) {
  const hits = await db.search(arg.q, { k: 1 });
  seen.push({ id: hits[0].id, worker: db.lastStats.worker });
  if (seen.filter((s) => s.worker === 1).length >= 2) break;
  await new Promise((r) => setTimeout(r, 50));
}
return seen;"""


def test_refresh_moves_every_worker_to_the_new_revision(page, web_url, world):
    """Opened by pointer with a pool: after refresh, each worker answers from the new revision (the
    second one only once it has reopened it)."""
    from s5vec.api import Database
    from s5vec.s5.registry import SigningKey, publish_pointer

    from .test_tab_writes import TOKEN, new_records

    portal, cid = world["portal"], world["cid"]
    key = SigningKey.generate()
    publish_pointer([portal.url], key, cid, auth_token=TOKEN)
    b = open_harness(page, web_url)
    opened = b.js("""const db = await S5Vec.open({ pointer: arg.pointer, portals: arg.portals, workers: 2 });
                     window.dbs[1] = db; return { key: 1, manifest: db.info.manifest, workers: db.workers };""",
                  {"pointer": key.pointer, "portals": [portal.url]})
    assert opened["manifest"] == cid and opened["workers"] == 2
    fresh = new_records(4, seed=31)
    q = fresh[2]["vector"]
    before = b.js(JS_AFTER_REFRESH, {"key": 1, "q": q})
    assert {s["worker"] for s in before} == {0, 1} and fresh[2]["id"] not in {s["id"] for s in before}
    db = Database.open(cid, [portal.url])
    db.store.client.auth_token = TOKEN
    db.upsert(fresh)
    cid2, _ = db.commit()
    publish_pointer([portal.url], key, cid2, auth_token=TOKEN)
    assert b.js("return await window.dbs[1].refresh()") is True
    assert b.js("return window.dbs[1].info.manifest") == cid2
    seen = b.js(JS_AFTER_REFRESH, {"key": 1, "q": q})
    assert all(s["id"] == fresh[2]["id"] for s in seen), seen  # never an answer from the old revision
    assert sum(s["worker"] == 1 for s in seen) >= 2, seen


def test_the_demo_runs_on_a_pool_with_workers_2(browser, web_url, demo):  # noqa: F811
    """index.html?workers=2: the films are searched by a pool; the dev panel says which worker answered."""
    from .test_demo import result_ids, type_query, wait_ready

    ctx = browser.new_context()
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(120_000)
    try:
        page.goto(web_url + "index.html?workers=2")
        wait_ready(page)
        answered = set()
        for text in ("documentary about space", "a detective story in the city", "documentary about space"):
            type_query(page, text)
            assert result_ids(page) == [h["id"] for h in demo["ref"].search_text(text, 10)]
            page.click("#dev summary")
            dev = page.inner_text("#dev-stats")
            page.click("#dev summary")
            assert "workers\n2" in dev or "workers\t2" in dev or "2 (?workers=N" in dev, dev
            answered |= {line for line in dev.splitlines() if line.startswith("worker ")}
        assert answered == {"worker 0 of 2", "worker 1 of 2"}, answered
        assert len(page.workers) == 2 and not errors
    finally:
        ctx.close()
