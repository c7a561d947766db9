"""IVF-PQ with separate refine chunks at 200,000 vectors, through the bridge in real Chromium.

The index (200,000 x 64, IVF512,PQ32 + float16 refine rows in chunks of 16 rows of one list) is built
once and its portal directory cached under ``.cache/i11idx-e2e/`` (keyed by the build parameters),
so later sessions only serve it. The portal logs every GET, so what the browser downloads is checked
at the portal, not only through the product's counters:

* a cold search fetches the probed list chunks (the CPython plan, round 1) plus refine chunks only for
  the PQ pass's candidates (round 2): at most ``rerank`` of them, out of thousands;
* the browser's hits equal CPython's; a repeat fetches nothing;
* recall@10 against exact brute force >= 0.9.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import kit
import pytest

N, DIM, NQ = 200_000, 64, 20
PARAMS = {"nlist": 512, "nprobe": 12, "codec": "pq", "pq_m": 32, "refine": "float16", "refine_rows": 16, "rerank": 64}
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "i11idx-e2e"


def _data():
    x = kit.clustered(N + NQ, DIM, top=64, sub=16, spread_sub=0.5, spread=0.35, seed=17)
    return x[:N], x[N:]


def canon(cid: str) -> str:
    from s5vec.s5.cid import BlobId

    return BlobId.parse(cid).to_string()


@pytest.fixture(scope="module")
def big():
    from s5vec import api
    from s5vec.s5 import portal as portal_mod

    key = hashlib.sha256(json.dumps([N, DIM, PARAMS, 17, "unlisted"], sort_keys=True).encode()).hexdigest()[:12]
    root = CACHE / key
    (root / "portal").mkdir(parents=True, exist_ok=True)
    log = kit.GetLog()
    server, _ = portal_mod.serve(root / "portal", on_request=log.record)
    data, qs = _data()
    cid_file = root / "cid.json"
    store = api.make_store([server.url])
    if cid_file.exists():
        cid = json.loads(cid_file.read_text())["cid"]
    else:
        t0 = time.perf_counter()
        cid = api.publish([{"id": f"v{i:06d}", "vector": v, "metadata": {"n": i}, "timestamp": 1.0}
                           for i, v in enumerate(data)], store, kind="ivf", params=PARAMS)
        cid_file.write_text(json.dumps({"cid": cid}))
        print(f"\n[scale] built and published {N}x{DIM} {PARAMS} in {time.perf_counter() - t0:.0f} s")
    manifest = api.read_manifest(store, cid)
    kinds = {canon(c["cid"]): c["kind"] for c in manifest["chunks"]}
    sizes = {canon(c["cid"]): c["size"] for c in manifest["chunks"]}
    # refine chunks are named by the list chunks, not the manifest (it must not grow with N)
    from s5vec import layout
    from s5vec.s5.cid import BlobId

    assert not any(k == "ivf_refine" for k in kinds.values())
    lists = [c for c, k in kinds.items() if k == "ivf_list"]
    store.prefetch_sync(lists)
    for c in lists:
        for entry in layout.decode_chunk(store.get(c), "ivf_list")["lists"]:
            for r in entry["refine"]:
                kinds[canon(r)] = "ivf_refine"
                sizes[canon(r)] = BlobId.parse(r).size
    assert manifest["extra"]["unlisted"]["ivf_refine"]["count"] == sum(1 for k in kinds.values() if k == "ivf_refine")
    xn = data / np.linalg.norm(data, axis=1, keepdims=True)
    yield {"cid": cid, "urls": [server.url], "queries": qs, "xn": xn, "kinds": kinds, "sizes": sizes,
           "log": log, "ref": api.Database.open(cid, [server.url]), "manifest": manifest}
    server.stop()


def test_published_bytes_and_chunk_kinds(big):
    per_kind: dict[str, int] = {}
    for c, kind in big["kinds"].items():
        per_kind[kind] = per_kind.get(kind, 0) + big["sizes"][c]
    total = sum(per_kind.values())
    print(f"\n[scale] published {total / N:.0f} B/vector: "
          + ", ".join(f"{k} {v / N:.0f}" for k, v in sorted(per_kind.items())))
    assert set(per_kind) == {"ivf_centroids", "ivf_summaries", "ivf_list", "ivf_refine"}
    # the list chunks (what every probe downloads) carry codes, not the 128 B of float16 refine rows
    assert per_kind["ivf_list"] / N < per_kind["ivf_refine"] / N == pytest.approx(2 * DIM, rel=0.15)


def test_cold_search_fetches_probed_lists_then_only_candidates_refine_chunks(harness, big):
    q = big["queries"][0]
    plan = [canon(c) for c in big["ref"].plan(q, 10)]
    assert plan and all(big["kinds"][c] == "ivf_list" for c in plan)
    key = harness.open(big["cid"], big["urls"])
    big["log"].clear()
    res = harness.search(key, q, k=10)
    assert res["ok"], res
    stats = res["value"]["stats"]
    got = big["log"].blobs()
    lists = [c for c in got if big["kinds"].get(c) == "ivf_list"]
    refine = [c for c in got if big["kinds"].get(c) == "ivf_refine"]
    n_refine_total = sum(1 for k in big["kinds"].values() if k == "ivf_refine")
    print(f"\n[scale] cold query: {len(lists)} list chunks + {len(refine)} of {n_refine_total} refine chunks, "
          f"{stats['bytesFetched']} bytes, {stats['rounds']} rounds, {stats['ms']} ms")
    assert sorted(lists) == sorted(plan)
    assert 0 < len(refine) <= PARAMS["rerank"]
    assert len(got) == len(set(got)) == len(plan) + len(refine)
    assert stats["chunksFetched"] == len(got) and stats["rounds"] == 2
    assert stats["bytesFetched"] == sum(big["sizes"][c] for c in got)
    want = big["ref"].search(q, 10)
    assert [h["id"] for h in res["value"]["hits"]] == [h["id"] for h in want]
    for g, w in zip(res["value"]["hits"], want):
        assert abs(g["score"] - w["score"]) <= 1e-4 and g["metadata"] == w["metadata"]
    again = harness.search(key, q, k=10)
    assert again["ok"] and again["value"]["stats"]["bytesFetched"] == 0
    assert again["value"]["hits"] == res["value"]["hits"]


def test_recall_in_the_browser(harness, big):
    key = harness.open(big["cid"], big["urls"])
    found = 0
    for q in big["queries"]:
        res = harness.search(key, q, k=10)
        assert res["ok"], res
        s = big["xn"] @ (q / np.linalg.norm(q))
        truth = {f"v{i:06d}" for i in np.argpartition(-s, 10)[:10].tolist()}
        found += len(truth & {h["id"] for h in res["value"]["hits"]})
    recall = found / (10 * len(big["queries"]))
    print(f"\n[scale] recall@10 in the browser over {len(big['queries'])} queries: {recall:.3f}")
    assert recall >= 0.9


def test_search_batch_equals_one_by_one_in_the_browser(harness, big):
    """db.searchBatch through the bridge: the same hits as db.search query by query (cold: the batch
    fetches each list / refine chunk once), then again warm with nothing fetched; bad input is typed."""
    qs = [[float(v) for v in q] for q in big["queries"]]
    one_key = harness.open(big["cid"], big["urls"])
    batch_key = harness.open(big["cid"], big["urls"])
    singles = [harness.search(one_key, q, k=10)["value"] for q in qs]
    out = harness.js(
        """const db = window.dbs[arg.key];
           const t0 = performance.now();
           const cold = await db.searchBatch(arg.qs.map((q) => new Float32Array(q)), { k: 10 });
           const coldStats = db.lastStats;
           const t1 = performance.now();
           const warm = await db.searchBatch(arg.qs, { k: 10 });
           const warmStats = db.lastStats;
           const t2 = performance.now();
           return { cold, coldStats, warm, warmStats, coldMs: t1 - t0, warmMs: t2 - t1 };""",
        {"key": batch_key, "qs": qs}, timeout=120_000)
    cold_one = sum(s["stats"]["bytesFetched"] for s in singles)
    print(f"\n[scale] searchBatch of {len(qs)}: cold {out['coldStats']['bytesFetched']} B "
          f"({out['coldStats']['chunksFetched']} chunks, one by one {cold_one} B) in {out['coldMs']:.0f} ms; "
          f"warm {out['warmMs']:.1f} ms page-side = {len(qs) / out['warmMs'] * 1000:.0f} QPS")
    assert out["coldStats"]["queries"] == len(qs) and out["coldStats"]["rounds"] == 2
    assert out["coldStats"]["bytesFetched"] <= cold_one
    assert out["warmStats"]["bytesFetched"] == 0
    for got in (out["cold"], out["warm"]):
        for g, w in zip(got, singles):
            assert [h["id"] for h in g] == [h["id"] for h in w["hits"]]
            for a, b in zip(g, w["hits"]):
                assert abs(a["score"] - b["score"]) <= 1e-4 and a["metadata"] == b["metadata"]
    bad = harness.run("return await window.dbs[arg.key].searchBatch([arg.q, [1, 2]], { k: 3 });",
                      {"key": batch_key, "q": qs[0]})
    assert not bad["ok"] and bad["name"] == "DimensionError"
    empty = harness.run("return await window.dbs[arg].searchBatch([]);", batch_key)
    assert not empty["ok"] and empty["name"] == "InvalidArgumentError"
