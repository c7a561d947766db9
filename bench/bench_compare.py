"""s5vec next to hnswlib and faiss in one run, on the same data: CPython, and s5vec in the Chromium worker.

    .venv/bin/python bench/bench_compare.py                  # 100,000 x 384, 200 queries
    .venv/bin/python bench/bench_compare.py --n 20000        # quick
    .venv/bin/python bench/bench_compare.py --no-browser     # CPython only

Data: ``common.synthetic`` (clustered unit vectors: anisotropic clusters in a 32-d latent space mapped
to ``--dim``, fresh queries), exact top-10 by brute force. Everything single-threaded (BLAS/OpenMP
pinned before NumPy loads, ``faiss.omp_set_num_threads(1)``, hnswlib ``num_threads=1``).

- s5vec: ``api.publish`` with no params (what a user gets) for ``hnsw`` (M=16, ef_construction=200,
  ef_search=64), ``ivf`` and ``hybrid`` (parameters picked from N and dim, printed; hybrid: the newest
  ``--recent-share`` in HNSW) to a local portal; build = publish (build + save + upload), wall and CPU
  seconds. CPython: ``Database.open`` over HTTP, one pass to fill the cache, then per query
  ``db.search`` (p50/p99, QPS = 1 / mean) and ``db.search_batch`` of all queries (best of
  ``--batch-reps``). Bytes/vector = published chunk bytes (manifest listed + unlisted) / n.
- hnswlib: M=16, ef_construction=200, ef=64 (file size of ``save_index`` / n).
- faiss: IndexHNSWFlat (M=16, efConstruction=200, efSearch=64), IndexIVFFlat and IndexIVFPQ (m=dim/8,
  8 bits, IndexRefineFlat re-ranking 10x k) at s5vec's default IVF nlist/nprobe
  (``serialize_index`` size / n; + the float32 vectors for the refine).
- Chromium (Pyodide worker, ``bench_browser``/``bench_scale`` helpers): per s5vec index a fresh
  ``S5Vec.open`` (cache sized from the manifest), cold first query, a first pass, then a warm pass:
  worker p50/p99 (``lastStats.ms``), recall; ``db.searchBatch`` of all queries (warm) -> QPS.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import single_thread_env  # noqa: E402

single_thread_env()
import common as C  # noqa: E402

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

import bench_browser as BB  # noqa: E402
import bench_scale as BS  # noqa: E402

K = 10


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall s, CPU s of this process)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def row(system: str, index: str, params: str, where: str, build: tuple[float, float] | None, found: list,
        lat: list[float], batch_s: float | None, nbytes: float, n: int, truth: np.ndarray) -> dict:
    return {"system": system, "index": index, "params": params, "where": where,
            "build s": build[0] if build else float("nan"), "build CPU s": build[1] if build else float("nan"),
            "recall@10": C.recall(found, truth), "p50 ms": C.pct(lat, 50) * 1000, "p99 ms": C.pct(lat, 99) * 1000,
            "QPS": len(lat) / sum(lat), "batch QPS": len(lat) / batch_s if batch_s else float("nan"),
            "B/vec": nbytes / n}


def single(fn: Callable[[np.ndarray], Any], queries: np.ndarray) -> tuple[list[list[int]], list[float]]:
    found, lat = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids = fn(q)
        lat.append(time.perf_counter() - t0)
        found.append([int(i) for i in ids if int(i) >= 0])
    return found, lat


def best_of(fn: Callable[[], Any], reps: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def run_s5vec(kind: str, ids: list[str], base: np.ndarray, ts: np.ndarray, queries: np.ndarray, truth: np.ndarray,
              store: Any, url: str, reps: int) -> tuple[dict, str, dict]:
    from s5vec.api import Database, read_manifest

    (cid, _, picked), wall, cpu = timed(lambda: BS.publish_default(kind, ids, base, ts, store))
    man = read_manifest(store, cid)
    unlisted = (man.get("extra") or {}).get("unlisted") or {}
    total = sum(c["size"] for c in man["chunks"]) + sum(u["bytes"] for u in unlisted.values())
    db = Database.open(cid, [url], timeout=120)
    for q in queries:  # fill the chunk cache (lazy IVF lists): the table is the warm pass
        db.search(q, K)
    found, lat = single(lambda q: [int(h["id"]) for h in db.search(q, K)], queries)
    batch_s = best_of(lambda: db.search_batch(queries, K), reps)
    db.close()
    spec = man.get("spec", "")
    print(f"# s5vec {kind}: {spec}; published in {wall:.0f} s ({cpu:.0f} CPU s), {total / len(ids):.0f} B/vector",
          flush=True)
    return row("s5vec", kind, spec, "CPython", (wall, cpu), found, lat, batch_s, total, len(ids), truth), cid, picked


def run_browser(page: Any, kind: str, spec: str, cid: str, url: str, queries: np.ndarray, truth: np.ndarray,
                id_index: dict[str, int], nbytes: float, reps: int) -> dict:
    m = BB.browser_measure(page, cid, [url], queries, None)
    s = BB.summarise(m, truth, id_index)
    op = page.evaluate(BB.JS_OPEN, [cid, [url], None])
    qs = [[float(x) for x in q] for q in queries]
    page.evaluate(BB.JS_PASS, [op["key"], qs, K, None])
    b = page.evaluate(BS.JS_BATCH, [op["key"], qs, K, reps])
    page.evaluate(BB.JS_CLOSE, op["key"])
    n = len(queries)
    out = {"system": "s5vec", "index": kind, "params": spec, "where": "Chromium worker",
           "build s": float("nan"), "build CPU s": float("nan"), "recall@10": s["recall@10"],
           "p50 ms": s["p50"], "p99 ms": s["p99"], "QPS": 1000 * n / sum(r["ms"] for r in m["warm"]),
           "batch QPS": n / (min(b["times"]) / 1000), "B/vec": nbytes,
           "open": f"{C.fmt_bytes(s['open bytes'])}/{s['open ms']:.0f}ms", "cold B": C.fmt_bytes(s["cold bytes"])}
    print(f"# chromium {kind}: recall {s['recall@10']:.3f} p50 {s['p50']:.2f} p99 {s['p99']:.2f} ms, "
          f"batch {out['batch QPS']:.0f} QPS, open {out['open']}", flush=True)
    return out


def run_hnswlib(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, reps: int) -> dict:
    import hnswlib

    n, d = base.shape
    idx = hnswlib.Index(space="cosine", dim=d)
    idx.set_num_threads(1)

    def build() -> None:
        idx.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
        idx.add_items(base, np.arange(n), num_threads=1)

    _, wall, cpu = timed(build)
    with tempfile.NamedTemporaryFile(suffix=".hnsw") as f:
        idx.save_index(f.name)
        size = os.path.getsize(f.name)
    idx.set_ef(64)
    found, lat = single(lambda q: idx.knn_query(q[None, :], k=K, num_threads=1)[0][0], queries)
    batch_s = best_of(lambda: idx.knn_query(queries, k=K, num_threads=1), reps)
    return row("hnswlib", "HNSW", "M=16,efC=200,ef=64", "CPython", (wall, cpu), found, lat, batch_s, size, n, truth)


def run_faiss(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, nlist: int, nprobe: int, reps: int,
              graphs: bool = True) -> list[dict]:
    import faiss

    faiss.omp_set_num_threads(1)
    n, d = base.shape
    IP = faiss.METRIC_INNER_PRODUCT
    rows = []

    def measure(name: str, params: str, index: Any, build: tuple[float, float], size: int) -> None:
        found, lat = single(lambda q: index.search(q[None, :], K)[1][0], queries)
        batch_s = best_of(lambda: index.search(queries, K), reps)
        rows.append(row("faiss", name, params, "CPython", build, found, lat, batch_s, size, n, truth))
        print(f"# faiss {name}: recall {rows[-1]['recall@10']:.3f}, build {build[0]:.0f} s", flush=True)

    if graphs:
        h = faiss.IndexHNSWFlat(d, 16, IP)
        h.hnsw.efConstruction = 200
        _, wall, cpu = timed(lambda: h.add(base))
        h.hnsw.efSearch = 64
        measure("HNSWFlat", "M=16,efC=200,ef=64", h, (wall, cpu), int(faiss.serialize_index(h).size))

    flat = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, IP)
    _, wall, cpu = timed(lambda: (flat.train(base), flat.add(base)))
    flat.nprobe = nprobe
    measure("IVFFlat", f"nlist={nlist},nprobe={nprobe}", flat, (wall, cpu), int(faiss.serialize_index(flat).size))

    m = max(1, d // 8)
    pq = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, 8, IP)
    refine = faiss.IndexRefineFlat(pq)  # adds to the IVF-PQ and keeps the full vectors for re-ranking
    _, wall, cpu = timed(lambda: (refine.train(base), refine.add(base)))
    pq.nprobe = nprobe
    refine.k_factor = 10
    measure("IVFPQ+RefineFlat", f"nlist={nlist},nprobe={nprobe},m={m},rerank={10 * K}", refine, (wall, cpu),
            int(faiss.serialize_index(pq).size) + base.nbytes)
    return rows


def recent_timestamps(ts0: np.ndarray, share: float) -> np.ndarray:
    """As bench_scale: the newest ``share`` within the last 30 days, the rest older (hybrid's split)."""
    now = time.time()
    order = np.argsort(np.argsort(-ts0))
    n_recent = int(ts0.shape[0] * share)
    return np.where(order < n_recent, now - 86400 * (order / max(n_recent, 1)) * 29,
                    now - 40 * 86400 - (order - n_recent) * 60.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kinds", default="hnsw,ivf,hybrid", help="s5vec kinds (published with default params)")
    ap.add_argument("--recent-share", type=float, default=0.10)
    ap.add_argument("--batch-reps", type=int, default=3)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--build", action="store_true", help="run `bash build_wheel.sh` first")
    ap.add_argument("--npy", help="base vectors from this .npy (e.g. bench_build.py gen's 1M) instead of synthetic")
    ap.add_argument("--queries-npy", help="with --npy: the queries")
    ap.add_argument("--truth", help="with --npy: their exact top-10 row numbers (bench_build.py truth)")
    ap.add_argument("--baselines", default="hnswlib,faiss-hnsw,faiss-ivf",
                    help="which baselines (comma-separated; the graph builds take ~10 min each at 1M here)")
    ap.add_argument("--nlist", type=int, help="faiss IVF nlist (default: s5vec ivf's pick, else 4 sqrt(n))")
    ap.add_argument("--nprobe", type=int, help="faiss IVF nprobe (default: s5vec ivf's pick, else 16)")
    args = ap.parse_args()
    if args.build:
        BB.build_bundle()
    from s5vec.api import make_store

    load = os.getloadavg()
    print(f"# bench_compare  {time.strftime('%Y-%m-%d %H:%M %Z')}  {os.cpu_count()} cores, load {load[0]:.1f} "
          f"{load[1]:.1f} {load[2]:.1f}; {args.npy or 'synthetic'} n={'(file)' if args.npy else args.n} dim={args.dim}, "
          f"{args.queries} queries, k={K}; "
          "one thread everywhere", flush=True)
    if args.npy:
        base = np.load(args.npy, mmap_mode="r")
        base = np.ascontiguousarray(base / np.linalg.norm(base, axis=1, keepdims=True), dtype=np.float32)
        queries = np.load(args.queries_npy)[: args.queries].astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        args.n = base.shape[0]
        ts0 = np.arange(args.n, dtype=np.float64)
    else:
        base, queries, ts0 = C.synthetic(args.n, args.dim, args.queries)
    ts = recent_timestamps(ts0, args.recent_share)
    ids = [str(i) for i in range(args.n)]
    id_index = {i: n for n, i in enumerate(ids)}
    truth = np.load(args.truth)[: args.queries, :K] if args.truth else C.ground_truth(base, queries, K)
    rows: list[dict] = []
    browser_rows: list[dict] = []
    published: list[tuple[str, str, str, float]] = []
    nlist, nprobe = int(round(4 * np.sqrt(args.n))), 16
    with BB.portal() as srv:
        store = make_store([srv.url], timeout=120)
        for kind in [k for k in args.kinds.split(",") if k]:
            r, cid, picked = run_s5vec(kind, ids, base, ts, queries, truth, store, srv.url, args.batch_reps)
            rows.append(r)
            published.append((kind, r["params"], cid, r["B/vec"]))
            got = picked.get("picked") or {}
            if kind == "ivf" and "nlist" in got:  # faiss IVF at the same nlist / nprobe as s5vec's default
                nlist, nprobe = int(got["nlist"]), int(got.get("nprobe", nprobe))
        nlist, nprobe = args.nlist or nlist, args.nprobe or nprobe
        want = set(args.baselines.split(","))
        if not args.no_baselines:
            if "hnswlib" in want:
                rows.append(run_hnswlib(base, queries, truth, args.batch_reps))
                print(f"# hnswlib: recall {rows[-1]['recall@10']:.3f}, build {rows[-1]['build s']:.0f} s", flush=True)
            if want & {"faiss-hnsw", "faiss-ivf"}:
                rows.extend(run_faiss(base, queries, truth, nlist, nprobe, args.batch_reps, "faiss-hnsw" in want))
        if not args.no_browser:
            with BB.web_root() as url, BB.chromium() as browser, BB.fresh_page(browser, url) as page:
                print("# " + BB.startup_line(BB.browser_startup(page)), flush=True)
                for kind, spec, cid, nbytes in published:
                    browser_rows.append(run_browser(page, kind, spec, cid, srv.url, queries, truth, id_index,
                                                    nbytes, args.batch_reps))
    load = os.getloadavg()
    print()
    print(C.table(rows + browser_rows, ["system", "index", "params", "where", "build s", "build CPU s", "recall@10",
                                        "p50 ms", "p99 ms", "QPS", "batch QPS", "B/vec"]))
    if browser_rows:
        print()
        print(C.table(browser_rows, ["index", "open", "cold B"]))
    print(f"load at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; QPS = 1 / mean single-query latency; "
          f"batch QPS = {args.queries} queries in one call (best of {args.batch_reps}); s5vec CPython = Database over "
          "HTTP to a local portal, warm cache; Chromium p50/p99 = worker lastStats.ms (warm pass)")


if __name__ == "__main__":
    main()
