"""IVF-PQ and hybrid indexes through the browser bridge (real Chromium, Pyodide worker, local portals).

* IVF-PQ, 100,000 x 128: opening fetches the manifest and the eager chunks only (no inverted list);
  a query fetches exactly the list chunks the CPython planner (``Database.plan``) names, byte for
  byte; a repeat fetches nothing; a second query fetches only the lists not fetched yet; the
  browser's hits equal CPython's; re-ranked PQ recall@10 against the flat index (the oracle).
* Hybrid (HNSW for the last 30 days, IVF for older records), 8,000 x 64: the browser's top-10
  equals CPython's (plain, filtered, with ``ef``/``nprobe``); that both parts hold records is
  checked on CPython alone, in tests/test_hybrid_parts.py.

The IVF index lives on its own portal whose request handler logs every GET, so what the browser
downloads is checked at the portal too, not only through the product's own counters.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import kit
from kit import assert_same_hits, clustered

# ---------------------------------------------------------------- data

IVF_N, IVF_DIM, IVF_NLIST, IVF_NPROBE, PQ_M = 100_000, 128, 256, 8, 16
N_QUERIES = 200  # held-out points from the same distribution as the data

HYB_N, HYB_DIM = 8_000, 64
CHANNELS = ["news", "music", "gaming", "science"]
DAY = 86_400.0


# ---------------------------------------------------------------- a portal that logs GETs

@pytest.fixture(scope="module")
def counting_portal(tmp_path_factory):
    """A local portal (the product's server, unchanged) whose request hook also records every GET."""
    from s5vec.s5 import portal as portal_mod

    log = kit.GetLog()
    server, _ = portal_mod.serve(tmp_path_factory.mktemp("ivf-portal"), on_request=log.record)
    server.get_log = log
    yield server
    server.stop()


def canon(cid: str) -> str:
    from s5vec.s5.cid import BlobId

    return BlobId.parse(cid).to_string()


# ---------------------------------------------------------------- the IVF-PQ index

@pytest.fixture(scope="module")
def ivf(counting_portal):
    from s5vec.api import Database, make_store, read_manifest, save
    from s5vec.index.ivf import IVFIndex

    x, labels = clustered(IVF_N + N_QUERIES, IVF_DIM, top=64, sub=16, spread_sub=0.5, spread=0.35, seed=7, labels=True)
    data, qs = x[:IVF_N], x[IVF_N:]
    t0 = time.perf_counter()
    index = IVFIndex(IVF_DIM, nlist=IVF_NLIST, nprobe=IVF_NPROBE, codec="pq", pq_m=PQ_M, lists_per_chunk=1)
    index.add([f"v{i:06d}" for i in range(IVF_N)], data, [{"sub": int(l)} for l in labels[:IVF_N]], None)
    store = make_store([counting_portal.url])
    cid, _ = save(index, store)
    print(f"\n[ivf] built and published {IVF_N}x{IVF_DIM} IVF-PQ in {time.perf_counter() - t0:.1f} s; "
          f"list sizes {int(index.list_sizes().min())}..{int(index.list_sizes().max())}")
    assert index.list_sizes().min() > 0  # every probed list has a chunk to fetch
    manifest = read_manifest(store, cid)
    sizes = {canon(c["cid"]): c["size"] for c in manifest["chunks"]}
    kinds = {canon(c["cid"]): c["kind"] for c in manifest["chunks"]}
    planner = Database.open(cid, [counting_portal.url])  # never searched: its plan is the cold plan
    assert planner.index.lazy
    return {
        "cid": cid, "urls": [counting_portal.url], "data": data, "queries": qs,
        "oracle": kit.flat_oracle([f"v{i:06d}" for i in range(IVF_N)], data),
        "manifest": manifest, "manifest_size": len(store.get(cid)), "sizes": sizes, "kinds": kinds,
        "planner": planner, "ref": Database.open(cid, [counting_portal.url]), "log": counting_portal.get_log,
    }


def cold_plan(ivf, q) -> list[str]:
    """The list chunks a search of ``q`` needs on a freshly loaded (lazy) index, as canonical CIDs."""
    idx = ivf["planner"].index
    plan = [canon(c) for c in ivf["planner"].plan(q, 10, None, {"nprobe": IVF_NPROBE})]
    # cross-check against the probed list numbers (one list per chunk here)
    query = ivf["planner"].prepare(q, 10, None, {"nprobe": IVF_NPROBE})
    assert set(plan) == {canon(idx._chunk_cids[l]) for l in idx.probed_lists(query)}
    assert len(plan) == len(set(plan)) == IVF_NPROBE
    return plan


def open_db(bridge, pub: dict, request) -> int:
    """Open ``pub`` through the bridge; closed when the test ends (frees its caches in a shared worker)."""
    key = bridge.open(pub["cid"], pub["urls"])
    request.addfinalizer(lambda: bridge.run("await window.dbs[arg].close();", key))
    return key


def bstats(bridge, key) -> dict:
    return bridge.js("return await window.dbs[arg].stats();", key)


def test_ivf_open_fetches_only_manifest_and_eager_chunks(harness, ivf):
    """A fresh page: the open downloads the manifest + centroids (+ list summaries), no ivf_list."""
    eager = [c for c, kind in ivf["kinds"].items() if kind != "ivf_list"]
    assert {ivf["kinds"][c] for c in eager} == {"ivf_centroids", "ivf_summaries"}
    ivf["log"].clear()
    key = harness.open(ivf["cid"], ivf["urls"])
    fetched = ivf["log"].blobs()
    stats = bstats(harness, key)
    open_bytes = ivf["manifest_size"] + sum(ivf["sizes"][c] for c in eager)
    print(f"\n[ivf] open: {stats['chunks_fetched']} blobs, {stats['bytes_fetched']} bytes "
          f"(manifest {ivf['manifest_size']} B; {IVF_NLIST} list chunks, "
          f"{sum(s for c, s in ivf['sizes'].items() if ivf['kinds'][c] == 'ivf_list')} B, untouched)")
    # the product's counters: exactly the manifest and the eager chunks
    assert stats["chunks_fetched"] == 1 + len(eager)
    assert stats["bytes_fetched"] == open_bytes
    assert harness.js("return window.dbs[arg].openStats;", key) == {"bytesFetched": open_bytes,
                                                                      "chunksFetched": 1 + len(eager)}
    # the portal's log: each of those once, no inverted list
    assert sorted(fetched) == sorted([canon(ivf["cid"])] + eager), fetched
    info = harness.js("return window.dbs[arg].info;", key)
    assert info["kind"] == "ivf" and info["count"] == IVF_N and info["dim"] == IVF_DIM


def test_ivf_open_stats_count_only_that_open(harness, ivf):
    """Two indexes opened in one worker share the store (and its counters): ``db.openStats`` is what
    each open downloaded, as the portal saw it, not the worker's running total."""
    key = harness.open(ivf["cid"], ivf["urls"])
    assert harness.search(key, ivf["queries"][1], k=10)["ok"]  # traffic of the first database
    total0 = bstats(harness, key)["bytes_fetched"]
    ivf["log"].clear()
    key2 = harness.open(ivf["cid"], ivf["urls"])
    fetched = ivf["log"].blobs()
    second = harness.js("return window.dbs[arg].openStats;", key2)
    want = sum(ivf["manifest_size"] if c == canon(ivf["cid"]) else ivf["sizes"][c] for c in fetched)
    assert second == {"bytesFetched": want, "chunksFetched": len(fetched)}
    assert bstats(harness, key2)["bytes_fetched"] == total0 + want > second["bytesFetched"]


def test_ivf_query_fetches_exactly_the_probed_lists(harness, ivf):
    """First query on a fresh page: chunksFetched/bytesFetched are those of the CPython plan, and the
    portal saw one GET per planned list; the repeat fetches nothing."""
    q = ivf["queries"][0]
    plan = cold_plan(ivf, q)
    key = harness.open(ivf["cid"], ivf["urls"])
    ivf["log"].clear()
    res = harness.search(key, q, k=10, params={"nprobe": IVF_NPROBE})
    assert res["ok"], res
    stats = res["value"]["stats"]
    want_bytes = sum(ivf["sizes"][c] for c in plan)
    print(f"\n[ivf] query: {stats['chunksFetched']} list chunks, {stats['bytesFetched']} bytes")
    assert stats["chunksFetched"] == len(plan)
    assert stats["bytesFetched"] == want_bytes
    assert sorted(ivf["log"].blobs()) == sorted(plan)
    assert_same_hits(res["value"]["hits"], ivf["ref"].search(q, k=10, params={"nprobe": IVF_NPROBE}))

    again = harness.search(key, q, k=10, params={"nprobe": IVF_NPROBE})
    assert again["ok"], again
    assert again["value"]["stats"]["chunksFetched"] == 0
    assert again["value"]["stats"]["bytesFetched"] == 0
    assert again["value"]["hits"] == res["value"]["hits"]
    # the default nprobe of the index is the same 8: no new list either
    default = harness.search(key, q, k=10)
    assert default["ok"] and default["value"]["stats"]["chunksFetched"] == 0
    assert [h["id"] for h in default["value"]["hits"]] == [h["id"] for h in res["value"]["hits"]]
    total = bstats(harness, key)
    assert total["chunks_fetched"] == 1 + 2 + len(plan)  # open (manifest, centroids, summaries) + lists


def test_ivf_second_query_fetches_only_new_lists(shared_harness, ivf, request):
    """Cold vs warm: after q1, a q2 whose probe overlaps q1's fetches only the lists q1 did not."""
    qs = ivf["queries"]
    plans = [set(cold_plan(ivf, q)) for q in qs[:60]]
    pair = next(((i, j) for i in range(len(plans)) for j in range(len(plans))
                 if i != j and 0 < len(plans[i] & plans[j]) < IVF_NPROBE), None)
    assert pair is not None, "no two queries with partly overlapping probes"
    i, j = pair
    key = open_db(shared_harness, ivf, request)
    r1 = shared_harness.search(key, qs[i], k=10, params={"nprobe": IVF_NPROBE})
    assert r1["ok"], r1
    assert r1["value"]["stats"]["chunksFetched"] == IVF_NPROBE
    new = plans[j] - plans[i]
    r2 = shared_harness.search(key, qs[j], k=10, params={"nprobe": IVF_NPROBE})
    assert r2["ok"], r2
    print(f"\n[ivf] warm: q2 probes {IVF_NPROBE} lists, {IVF_NPROBE - len(new)} already fetched by q1; "
          f"fetched {r2['value']['stats']['chunksFetched']} chunks, {r2['value']['stats']['bytesFetched']} bytes")
    assert r2["value"]["stats"]["chunksFetched"] == len(new)
    assert r2["value"]["stats"]["bytesFetched"] == sum(ivf["sizes"][c] for c in new)
    # the CPython planner agrees: after searching q1, plan(q2, missing=True) names exactly the new ones
    from s5vec.api import Database

    cpy = Database.open(ivf["cid"], ivf["urls"])
    first = cpy.search_with_stats(qs[i], k=10, params={"nprobe": IVF_NPROBE})
    assert first["stats"]["chunksFetched"] == IVF_NPROBE
    assert {canon(c) for c in cpy.plan(qs[j], 10, None, {"nprobe": IVF_NPROBE}, missing=True)} == new
    second = cpy.search_with_stats(qs[j], k=10, params={"nprobe": IVF_NPROBE})
    assert second["stats"]["chunksFetched"] == len(new)
    assert_same_hits(r1["value"]["hits"], first["hits"])
    assert_same_hits(r2["value"]["hits"], second["hits"])


def test_ivf_hits_match_cpython_and_recall(shared_harness, ivf, request):
    """10 queries: the browser equals CPython; re-ranked PQ recall@10 vs the flat oracle >= 0.8.
    The centroids chunk is float16 (what the worker opened and probes with)."""
    body = ivf["ref"].reader.get(ivf["manifest"]["index"]["centroids"], "ivf_centroids")
    assert np.asarray(body["centroids"]).dtype == np.float16
    key = open_db(shared_harness, ivf, request)
    qs = ivf["queries"][100:110]
    recall, recall_pq_only, bytes_per_query = [], [], []
    for q in qs:
        truth = {i for i, _ in kit.search(ivf["oracle"], q, 10)}  # the flat index is the oracle
        res = shared_harness.search(key, q, k=10, params={"nprobe": IVF_NPROBE})
        assert res["ok"], res
        hits = res["value"]["hits"]
        bytes_per_query.append(res["value"]["stats"]["bytesFetched"])
        assert_same_hits(hits, ivf["ref"].search(q, k=10, params={"nprobe": IVF_NPROBE}))
        recall.append(len(truth & {h["id"] for h in hits}) / 10)
        raw = shared_harness.search(key, q, k=10, params={"nprobe": IVF_NPROBE, "rerank": 0})
        assert raw["ok"], raw
        assert raw["value"]["stats"]["chunksFetched"] == 0  # same lists, already cached
        assert_same_hits(raw["value"]["hits"], ivf["ref"].search(q, k=10, params={"nprobe": IVF_NPROBE, "rerank": 0}))
        recall_pq_only.append(len(truth & {h["id"] for h in raw["value"]["hits"]}) / 10)
    r, r0 = float(np.mean(recall)), float(np.mean(recall_pq_only))
    print(f"\n[ivf] browser recall@10 (nprobe={IVF_NPROBE}, PQ m={PQ_M} + re-rank): {r:.3f}; "
          f"PQ codes only (rerank=0): {r0:.3f}; bytes per query {min(bytes_per_query)}..{max(bytes_per_query)}")
    assert r >= 0.8
    assert r > r0  # re-ranking with the stored full vectors is what makes the difference here


# ---------------------------------------------------------------- the hybrid index

@pytest.fixture(scope="module")
def hybrid(portals):
    from s5vec.api import Database, make_store, publish, read_manifest

    now = time.time()
    x, labels = clustered(HYB_N + 40, HYB_DIM, top=32, sub=8, spread_sub=0.5, spread=0.35, seed=17, labels=True)
    rng = np.random.default_rng(23)
    recent = np.arange(HYB_N) % 2 == 0
    # recent: 1 hour .. 25 days old (well inside the 30-day window); old: 35 .. 400 days
    ts = np.where(recent, now - rng.uniform(3600, 25 * DAY, HYB_N), now - rng.uniform(35 * DAY, 400 * DAY, HYB_N))
    records = [
        {"id": f"h{i:05d}", "vector": x[i],
         "metadata": {"channel": CHANNELS[int(labels[i] + i) % len(CHANNELS)], "uploaded_ts": float(ts[i])},
         "timestamp": float(ts[i])}
        for i in range(HYB_N)
    ]
    p1 = portals[0]
    store = make_store([p1.url])
    t0 = time.perf_counter()
    cid = publish(records, store, kind="hybrid",
                  params={"recent_threshold": "30d", "nlist": 64, "nprobe": 16})
    print(f"\n[hybrid] published {HYB_N}x{HYB_DIM} in {time.perf_counter() - t0:.1f} s")
    return {"cid": cid, "urls": [p1.url], "records": records, "recent": recent, "now": now,
            "queries": x[HYB_N:], "manifest": read_manifest(store, cid), "ref": Database.open(cid, [p1.url])}


@pytest.mark.parametrize("variant", ["plain", "filter", "filter+time", "ef+nprobe"])
def test_hybrid_browser_matches_cpython(shared_harness, hybrid, variant, request):
    flt = {
        "filter": {"channel": "music"},
        "filter+time": {"channel": {"$in": ["news", "science"]}, "uploaded_ts": {"$gte": hybrid["now"] - 120 * DAY}},
    }.get(variant)
    params = {"ef": 100, "nprobe": 8} if variant == "ef+nprobe" else None
    key = open_db(shared_harness, hybrid, request)
    ref = hybrid["ref"]
    sources = set()
    for q in hybrid["queries"][:20]:
        res = shared_harness.search(key, q, k=10, filter=flt, params=params)
        assert res["ok"], res
        hits = res["value"]["hits"]
        assert len(hits) == 10
        assert_same_hits(hits, ref.search(q, k=10, filter=flt, params=params))
        for h in hits:
            sources.add(bool(hybrid["recent"][int(h["id"][1:])]))
            if variant == "filter":
                assert h["metadata"]["channel"] == "music"
            if variant == "filter+time":
                assert h["metadata"]["channel"] in ("news", "science")
                assert h["metadata"]["uploaded_ts"] >= hybrid["now"] - 120 * DAY
    assert sources == {True, False}, "the 20 queries should draw hits from both parts"
