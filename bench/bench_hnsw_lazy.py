"""Eager vs lazily fetched HNSW base layer (s5vec.index.hnsw_lazy) on one graph, on CPython.

Builds (or reads from --cache) a standalone HNSW over synthetic sentence-like data (default
100k x 384, float16 vectors, M=16, ef_construction=200), saves it twice into one in-memory S5
client through the real layout and chunk store -- eager (every node chunk fetched at open) and
lazy (upper layers, records and PQ navigation codes at open; layer-0 rows + vectors in small
hnsw_base chunks fetched by the walk) -- and for each prints: open bytes/chunks/seconds,
cold bytes/chunks/rounds per query (store and index caches emptied before each query), warm
bytes per query (the same queries again), warm p50/p99 ms and recall@10 against exact search.

    PYTHONPATH=pkg .venv/bin/python bench/bench_hnsw_lazy.py [--n 100000 --dim 384 --queries 200]

``--tab`` also publishes both layouts to a local portal and opens each in the Chromium Pyodide
worker (bench_browser.browser_measure: open, a cold first query, a first pass, a warm pass):
open bytes/ms, the cold query's bytes, first-pass bytes per query, worker p50/p99 and recall@10.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import fmt_bytes, ground_truth, pct, recall, synthetic  # noqa: E402  (pins BLAS first)

import numpy as np  # noqa: E402

from s5vec import api  # noqa: E402
from s5vec.index import hnsw_lazy  # noqa: E402
from s5vec.index.hnsw import HNSWIndex  # noqa: E402
from s5vec.s5.client import MemoryClient  # noqa: E402
from s5vec.store import ChunkStore  # noqa: E402


def build(n: int, dim: int, cache: str | None) -> tuple[HNSWIndex, np.ndarray, np.ndarray]:
    base, queries, ts = synthetic(n, dim, 1000)
    if cache and os.path.exists(cache):
        with open(cache, "rb") as f:
            idx = pickle.load(f)
        idx.__dict__.setdefault("_lazy", None)
        idx.__dict__.setdefault("lazy_base", None)
        if idx._n != n or idx.dim != dim:
            raise SystemExit(f"{cache} holds {idx._n} x {idx.dim}, not {n} x {dim}")
        return idx, base, queries
    idx = HNSWIndex(dim, "cosine", vectors_dtype="float16")
    t = time.process_time()
    idx.add([f"v{i:06d}" for i in range(n)], base, [{"g": i % 10} for i in range(n)], ts)
    print(f"# built {n} x {dim} in {time.process_time() - t:.0f} CPU s", flush=True)
    if cache:
        with open(cache, "wb") as f:
            pickle.dump(idx, f, protocol=5)
    return idx, base, queries


def measure(name: str, client: MemoryClient, cid: str, queries: np.ndarray, truth: np.ndarray, cold_n: int) -> dict:
    store = ChunkStore(client, cache_bytes=1 << 31)
    t0, c0 = time.perf_counter(), time.process_time()
    db = api.Database.open(cid, store=store)
    open_s, open_cpu = time.perf_counter() - t0, time.process_time() - c0
    st = store.stats()
    row = {"layout": name, "open bytes": st["bytes_fetched"], "open chunks": st["chunks_fetched"],
           "open s": open_s, "open CPU s": open_cpu}
    cold_b, cold_c, cold_r = [], [], []
    for q in queries[:cold_n]:  # cold: nothing of the base layer held before each query
        store.clear()  # the base blocks too: they live in the store
        s = db.search_with_stats(q, 10)["stats"]
        cold_b.append(s["bytesFetched"])
        cold_c.append(s["chunksFetched"])
        cold_r.append(s["rounds"])
    for q in queries:  # first pass fills the caches
        db.search(q, 10)
    warm_b, lat, found = [], [], []
    for q in queries:
        t = time.perf_counter()
        out = db.search_with_stats(q, 10)
        lat.append((time.perf_counter() - t) * 1000)
        warm_b.append(out["stats"]["bytesFetched"])
        found.append([int(h["id"][1:]) for h in out["hits"]])
    row.update({"cold KB/q": np.mean(cold_b) / 1024, "cold chunks/q": np.mean(cold_c),
                "cold rounds/q": np.mean(cold_r), "max rounds": max(cold_r),
                "warm B/q": np.mean(warm_b), "p50 ms": pct(lat, 50), "p99 ms": pct(lat, 99),
                "recall@10": recall(found, truth)})
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--cold", type=int, default=100, help="queries measured cold (caches emptied)")
    ap.add_argument("--cache", default=None, help="pickle of the built index (reused when present)")
    ap.add_argument("--tab", action="store_true", help="also measure both layouts in the Chromium worker")
    ap.add_argument("--build", action="store_true", help="with --tab: run build_wheel.sh first")
    args = ap.parse_args()
    idx, base, queries = build(args.n, args.dim, args.cache)
    queries = queries[: args.queries]
    truth = ground_truth(base, queries, 10)
    client = MemoryClient()
    store = ChunkStore(client)
    rows = []
    for name, lazy in (("eager", False), ("lazy", True)):
        idx.lazy_base = lazy
        t = time.process_time()
        cid, writer = api.save(idx, store)
        size = sum(c["size"] for c in writer.chunks)
        print(f"# {name}: saved {fmt_bytes(size)} in {len(writer.chunks)} chunks, {time.process_time() - t:.1f} CPU s",
              flush=True)
        rows.append(measure(name, client, cid, queries, truth, args.cold))
    print(f"# {args.n} x {args.dim} float16, M=16, ef=64, k=10, {args.queries} queries; in-memory S5 client "
          f"(no HTTP), CPython; base chunks of {hnsw_lazy.BASE_ROWS} nodes, walk width {hnsw_lazy.WIDTH}, "
          f"read-ahead {hnsw_lazy.READ_AHEAD}; load: {os.getloadavg()[0]:.2f}")
    for r in rows:
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    if args.tab:
        tab(idx, queries, truth, args.build)


def tab(idx: HNSWIndex, queries: np.ndarray, truth: np.ndarray, build_first: bool) -> None:
    import tempfile

    import bench_browser as BB

    if build_first:
        BB.build_bundle()
    id_index = {f"v{i:06d}": i for i in range(idx._n)}
    with tempfile.TemporaryDirectory() as d, BB.portal(d) as srv, BB.web_root() as url, BB.chromium() as browser:
        store = api.make_store([srv.url])
        cids = {}
        for name, lazy in (("eager", False), ("lazy", True)):
            idx.lazy_base = lazy
            cids[name] = api.save(idx, store)[0]
        for name, cid in cids.items():  # one fresh worker each: the open counts only its own blobs
            with BB.fresh_page(browser, url) as page:
                print(f"# tab {name}: " + BB.startup_line(BB.browser_startup(page)), flush=True)
                s = BB.summarise(BB.browser_measure(page, cid, [srv.url], queries, None), truth, id_index)
                print(f"tab {name}: open {fmt_bytes(s['open bytes'])} / {s['open chunks']} blobs in {s['open ms']:.0f} ms; "
                      f"cold first query {fmt_bytes(s['cold bytes'])} ({s['cold chunks']} chunks, {s['cold ms']:.1f} ms); "
                      f"first pass {fmt_bytes(s['pass1 B/q'])}/q; warm {s['warm B/q']:.0f} B/q, "
                      f"worker p50 {s['p50']:.2f} ms p99 {s['p99']:.2f} ms; recall@10 {s['recall@10']:.3f}", flush=True)
    print(f"# tab: local portal on 127.0.0.1 over HTTP, the worker's chunk cache sized from the manifest; "
          f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
