"""Recall@10 vs QPS of the s5vec index kinds next to hnswlib and faiss-cpu, on the same data.

    .venv/bin/python bench/bench_indexes.py                 # 100,000 x 384, 200 queries
    .venv/bin/python bench/bench_indexes.py --n 20000       # quick run

Everything runs single-threaded (BLAS/OpenMP pinned to 1 thread before NumPy is imported,
faiss.omp_set_num_threads(1), hnswlib set_num_threads(1)); queries are issued one at a time
(batch size 1) to every library, because that is how s5vec serves them.

For s5vec each kind is measured twice:
  * in memory  -- ``prepare_query`` + ``index.search`` on the freshly built index (the engine alone), which
    gives recall@10, QPS and p50;
  * published  -- saved as chunks into an in-memory S5 client, then opened with
    ``Database.open(cid, store=ChunkStore(client))`` (default 64 MiB caches) and searched through
    ``search_with_stats``: bytes fetched by the open, by the first query on a fresh open (cold,
    mean over 5 fresh opens), per query during a first pass over all queries, and per query in a
    second pass (warm), plus the API-level p50 ms of the warm pass (includes fetch + blake3
    verification + CBOR decode of whatever the cache could not hold, and result building).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import single_thread_env  # noqa: E402  (common imports numpy: pin threads first)

single_thread_env()

import argparse  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

import common as C  # noqa: E402

K = 10


# ---------------------------------------------------------------- s5vec

def s5_build(kind: str, params: dict, ids: list[str], base: np.ndarray, ts: np.ndarray,
             budget_s: float | None = None, batch: int = 5000, label: str = "") -> tuple[Any, float, int]:
    """Build an index; HNSW is added in batches so a time budget can cut it short.
    Returns (index, build seconds, number of vectors actually added)."""
    from s5vec.api import new_index

    idx = new_index(kind, base.shape[1], "cosine", params)
    n = len(ids)
    t0 = time.perf_counter()
    if budget_s is None:
        idx.add(ids, base, None, ts.tolist())
        return idx, time.perf_counter() - t0, n
    done = 0
    while done < n:
        e = min(n, done + batch)
        idx.add(ids[done:e], base[done:e], None, ts[done:e].tolist())
        done = e
        el = time.perf_counter() - t0
        # insertion cost grows ~log n: project the rest at the current rate x 1.15
        proj = el / done * n * 1.15
        print(f"  [{label}] {done}/{n} vectors in {el:.0f} s (projected total {proj:.0f} s)", file=sys.stderr, flush=True)
        if done < n and proj > budget_s:
            print(f"  [{label}] stopping at {done}: projected build > budget {budget_s:.0f} s", file=sys.stderr)
            break
    return idx, time.perf_counter() - t0, done


def s5_publish(idx: Any) -> tuple[Any, str, int, int]:
    """Save into an in-memory S5 client; returns (client, manifest cid, total bytes, chunks)."""
    from s5vec.api import save
    from s5vec.s5.client import MemoryClient
    from s5vec.store import ChunkStore

    client = MemoryClient()
    cid, writer = save(idx, ChunkStore(client))
    total = sum(len(b) for b in client.blobs.values())
    return client, cid, total, len(client.blobs)


def s5_open(client: Any, cid: str) -> tuple[Any, int, int, float]:
    from s5vec.api import Database
    from s5vec.store import ChunkStore

    store = ChunkStore(client)
    t0 = time.perf_counter()
    db = Database.open(cid, store=store)
    ms = (time.perf_counter() - t0) * 1000
    st = store.stats()
    return db, st["bytes_fetched"], st["chunks_fetched"], ms


def run_s5(name: str, idx: Any, n_used: int, params_list: list[dict], queries: np.ndarray, truth: np.ndarray,
           build_s: float, client: Any, cid: str, pub_bytes: int, pub_chunks: int) -> list[dict]:
    from s5vec.api import prepare_query

    rows = []
    mem = C.numpy_nbytes(idx)
    db0, open_bytes, open_chunks, open_ms = s5_open(client, cid)
    del db0
    for p in params_list:
        # --- in memory: the engine alone
        found, lat = [], []
        for q in queries:
            t0 = time.perf_counter()
            res = idx.search(prepare_query(idx, q, K, None, p)).hits  # validate once + search
            lat.append(time.perf_counter() - t0)
            found.append([int(h.id) for h in res])
        rec = C.recall(found, truth)
        # --- published: cold = first query on a fresh open (mean over 5 opens)
        cold = []
        for j in range(5):
            db, *_ = s5_open(client, cid)
            cold.append(db.search_with_stats(queries[j], K, None, p)["stats"]["bytesFetched"])
        db, *_ = s5_open(client, cid)
        pass1 = [db.search_with_stats(q, K, None, p)["stats"] for q in queries]
        pass2 = [db.search_with_stats(q, K, None, p)["stats"] for q in queries]
        del db
        gc.collect()
        rows.append({
            "index": name, "n": n_used, "params": ",".join(f"{k}={v}" for k, v in p.items()) or "-",
            "recall@10": rec, "QPS": len(queries) / sum(lat), "p50 ms": C.pct(lat, 50) * 1000,
            "p99 ms": C.pct(lat, 99) * 1000, "build s": build_s,
            "mem B/vec": mem / n_used, "chunks B/vec": pub_bytes / n_used,
            "open": f"{C.fmt_bytes(open_bytes)}/{open_chunks}ch/{open_ms:.0f}ms",
            "cold B/q": C.fmt_bytes(float(np.mean(cold))),
            "pass1 B/q": C.fmt_bytes(float(np.mean([s["bytesFetched"] for s in pass1]))),
            "warm B/q": C.fmt_bytes(float(np.mean([s["bytesFetched"] for s in pass2]))),
            "api p50 ms": C.pct([s["ms"] for s in pass2], 50),
        })
        print(f"  {name} {rows[-1]['params']}: recall {rec:.3f}, {rows[-1]['QPS']:.0f} QPS", file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------- baselines

def timed_queries(fn: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[list, list[float]]:
    found, lat = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids = fn(q)
        lat.append(time.perf_counter() - t0)
        found.append([int(i) for i in ids if i >= 0])
    return found, lat


def base_row(name: str, n: int, params: str, found: list, lat: list[float], truth: np.ndarray, build_s: float,
             size: int) -> dict:
    return {"index": name, "n": n, "params": params, "recall@10": C.recall(found, truth),
            "QPS": len(lat) / sum(lat), "p50 ms": C.pct(lat, 50) * 1000, "p99 ms": C.pct(lat, 99) * 1000,
            "build s": build_s, "mem B/vec": size / n}


def run_hnswlib(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, M: int, efc: int, efs: list[int]) -> list[dict]:
    import hnswlib

    n, d = base.shape
    idx = hnswlib.Index(space="cosine", dim=d)
    idx.set_num_threads(1)
    t0 = time.perf_counter()
    idx.init_index(max_elements=n, M=M, ef_construction=efc, random_seed=0)
    idx.add_items(base, np.arange(n), num_threads=1)
    build = time.perf_counter() - t0
    with tempfile.NamedTemporaryFile(suffix=".hnsw") as f:
        idx.save_index(f.name)
        size = os.path.getsize(f.name)
    rows = []
    for ef in efs:
        idx.set_ef(max(ef, K))
        found, lat = timed_queries(lambda q: idx.knn_query(q[None, :], k=K, num_threads=1)[0][0], queries)
        rows.append(base_row("hnswlib", n, f"ef={ef}", found, lat, truth, build, size))
    return rows


def run_faiss(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, M: int, efc: int, efs: list[int],
              nlist: int, nprobes: list[int], pq_m: int, pq_rerank: list[int], which: set[str]) -> tuple[list[dict], list[dict]]:
    import faiss

    faiss.omp_set_num_threads(1)
    n, d = base.shape
    IP = faiss.METRIC_INNER_PRODUCT
    hnsw_rows, ivf_rows = [], []

    def size_of(index: Any) -> int:
        return int(faiss.serialize_index(index).size)

    def search_fn(index: Any) -> Callable[[np.ndarray], np.ndarray]:
        return lambda q: index.search(q[None, :], K)[1][0]

    if "hnsw" in which:
        idx = faiss.IndexHNSWFlat(d, M, IP)
        idx.hnsw.efConstruction = efc
        t0 = time.perf_counter()
        idx.add(base)
        build = time.perf_counter() - t0
        size = size_of(idx)
        for ef in efs:
            idx.hnsw.efSearch = max(ef, K)
            found, lat = timed_queries(search_fn(idx), queries)
            hnsw_rows.append(base_row("faiss HNSWFlat", n, f"ef={ef}", found, lat, truth, build, size))

    def ivf(name: str, make: Callable[[Any], Any], sweep: list[tuple[int, int]]) -> None:
        quant = faiss.IndexFlatIP(d)
        ivf_index = make(quant)
        t0 = time.perf_counter()
        ivf_index.train(base)
        refine = None
        if any(rr for _, rr in sweep):
            refine = faiss.IndexRefineFlat(ivf_index)  # adds to the IVF and keeps full vectors for re-ranking
            refine.add(base)
        else:
            ivf_index.add(base)
        build = time.perf_counter() - t0
        size = size_of(ivf_index)
        for nprobe, rr in sweep:
            ivf_index.nprobe = nprobe
            index = ivf_index
            label = f"nprobe={nprobe}"
            if rr:
                refine.k_factor = rr / K
                index = refine
                label += f",rerank={rr}"
            found, lat = timed_queries(search_fn(index), queries)
            sz = size if not rr else size + base.nbytes
            ivf_rows.append(base_row(name, n, label, found, lat, truth, build, sz))

    if "ivf-flat" in which:
        ivf("faiss IVFFlat", lambda q: faiss.IndexIVFFlat(q, d, nlist, IP), [(p, 0) for p in nprobes])
    if "ivf-sq8" in which:
        ivf("faiss IVFSQ8", lambda q: faiss.IndexIVFScalarQuantizer(q, d, nlist, faiss.ScalarQuantizer.QT_8bit, IP),
            [(p, 0) for p in nprobes])
    if "ivf-pq" in which:
        ivf("faiss IVFPQ", lambda q: faiss.IndexIVFPQ(q, d, nlist, pq_m, 8, IP),
            [(p, r) for r in pq_rerank for p in nprobes])
    return hnsw_rows, ivf_rows


# ---------------------------------------------------------------- main

def within(s5_rows: list[dict], ref_rows: list[dict], target: float = 0.95) -> str:
    """s5vec's fastest setting with recall >= target vs the reference's fastest setting with at
    least that recall."""
    ok = [r for r in s5_rows if r["recall@10"] >= target]
    if not ok:
        best = max(s5_rows, key=lambda r: r["recall@10"]) if s5_rows else None
        return f"no s5vec setting reached recall {target} (best {best['recall@10']:.3f})" if best else "n/a"
    s = max(ok, key=lambda r: r["QPS"])
    refs = [r for r in ref_rows if r["recall@10"] >= s["recall@10"] - 1e-9]
    if not refs:
        refs = [max(ref_rows, key=lambda r: r["recall@10"])]
        note = " (reference never reached that recall; compared with its best-recall setting)"
    else:
        note = ""
    ref = max(refs, key=lambda r: r["QPS"])
    ratio = ref["QPS"] / s["QPS"]
    return (f"{s['index']} [{s['params']}] recall {s['recall@10']:.3f} at {s['QPS']:.0f} QPS vs "
            f"{ref['index']} [{ref['params']}] recall {ref['recall@10']:.3f} at {ref['QPS']:.0f} QPS "
            f"-> s5vec is within {ratio:.1f}x{note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--data", choices=["synthetic", "demo"], default="synthetic")
    ap.add_argument("--latent", type=int, default=32, help="latent dimension of the synthetic data")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default="10,16,32,64,128,256")
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (default round(sqrt(n)))")
    ap.add_argument("--nprobe", default="4,8,16,32,64")
    ap.add_argument("--pq-m", type=int, default=48)
    ap.add_argument("--recent-share", type=float, default=0.10, help="hybrid: newest share held in HNSW")
    ap.add_argument("--hnsw-budget", type=float, default=600.0,
                    help="seconds; if the s5vec HNSW build is projected to take longer, stop adding and "
                         "benchmark every HNSW on the vectors added so far (said in the output)")
    ap.add_argument("--kinds", default="hnsw,ivf-flat,ivf-sq8,ivf-pq,hybrid",
                    help="comma list of hnsw, ivf-flat, ivf-sq8, ivf-pq, hybrid")
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args()

    kinds = set(args.kinds.split(","))
    efs = [int(x) for x in args.ef.split(",")]
    nlist = args.nlist or max(16, int(round(math.sqrt(args.n))))
    nprobes = [p for p in (int(x) for x in args.nprobe.split(",")) if p <= nlist]
    hybrid_nlist = max(16, int(round(math.sqrt(args.n * (1 - args.recent_share)))))

    print(f"# bench_indexes  {time.strftime('%Y-%m-%d %H:%M %Z')}  {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}")
    print(f"# data: {args.data}, n={args.n}, dim={args.dim}, queries={args.queries}, k={K}, metric=cosine"
          + (f", latent dim {args.latent}" if args.data == "synthetic" else ""))
    print("# single-threaded: OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1, faiss.omp_set_num_threads(1), "
          "hnswlib set_num_threads(1); one query per call (batch size 1) for every library")
    t0 = time.perf_counter()
    if args.data == "synthetic":
        base, queries, ts = C.synthetic(args.n, args.dim, args.queries, latent=args.latent)
    else:
        base, queries, ts, _ = C.demo(args.n, args.dim, args.queries)
    truth = C.ground_truth(base, queries, K)
    print(f"# data + exact ground truth: {time.perf_counter() - t0:.1f} s", flush=True)
    ids = [str(i) for i in range(args.n)]

    s5_rows: dict[str, list[dict]] = {}
    notes: list[str] = []
    hnsw_n = args.n

    if "hnsw" in kinds:
        params = {"M": args.M, "ef_construction": args.ef_construction}
        idx, build, hnsw_n = s5_build("hnsw", params, ids, base, ts, budget_s=args.hnsw_budget, label="s5vec hnsw")
        if hnsw_n < args.n:
            notes.append(f"s5vec HNSW build was projected past --hnsw-budget {args.hnsw_budget:.0f} s, so it was "
                         f"stopped at n={hnsw_n} (after {build:.0f} s); every HNSW row (s5vec, hnswlib, faiss) "
                         f"uses those first {hnsw_n} vectors with their own exact ground truth")
        truth_h = truth if hnsw_n == args.n else C.ground_truth(base[:hnsw_n], queries, K)
        client, cid, pb, pc = s5_publish(idx)
        s5_rows["hnsw"] = run_s5("s5vec hnsw", idx, hnsw_n, [{"ef": e} for e in efs], queries, truth_h, build,
                                 client, cid, pb, pc)
        del idx, client
        gc.collect()
    ivf_specs = {
        "ivf-flat": ({"codec": "flat"}, [{"nprobe": p} for p in nprobes]),
        "ivf-sq8": ({"codec": "sq8"}, [{"nprobe": p} for p in nprobes] + [{"nprobe": nprobes[-1], "rerank": 0}]),
        "ivf-pq": ({"codec": "pq", "pq_m": args.pq_m},
                   [{"nprobe": p, "rerank": 0} for p in nprobes] + [{"nprobe": p, "rerank": 100} for p in nprobes]),
        "ivf-pq-nofull": ({"codec": "pq", "pq_m": args.pq_m, "store_full": False}, [{"nprobe": p} for p in nprobes]),
    }
    if "ivf-pq" in kinds:
        kinds.add("ivf-pq-nofull")
    for name, (extra, sweep) in ivf_specs.items():
        if name not in kinds:
            continue
        params = {"nlist": nlist, **extra}
        idx, build, _ = s5_build("ivf", params, ids, base, ts)
        print(f"  s5vec {name}: built in {build:.1f} s", file=sys.stderr, flush=True)
        client, cid, pb, pc = s5_publish(idx)
        s5_rows[name] = run_s5(f"s5vec {name}", idx, args.n, sweep, queries, truth, build, client, cid, pb, pc)
        del idx, client
        gc.collect()
    if "hybrid" in kinds:
        cut = float(np.quantile(ts, 1 - args.recent_share))
        now = float(ts.max()) + 1.0
        params = {"recent_threshold": now - cut, "clock": (lambda: now),
                  "hnsw": {"M": args.M, "ef_construction": args.ef_construction},
                  "ivf": {"nlist": hybrid_nlist, "codec": "flat"}}
        idx, build, _ = s5_build("hybrid", params, ids, base, ts)
        notes.append(f"hybrid: newest {args.recent_share:.0%} by timestamp in HNSW ({len(idx.recent)} vectors), "
                     f"the rest in IVF-Flat with nlist={hybrid_nlist} ({len(idx.historical)} vectors)")
        client, cid, pb, pc = s5_publish(idx)
        sweep = [{"ef": 64, "nprobe": p} for p in nprobes] + [{"ef": 128, "nprobe": nprobes[-1]}]
        s5_rows["hybrid"] = run_s5("s5vec hybrid", idx, args.n, sweep, queries, truth, build, client, cid, pb, pc)
        del idx, client
        gc.collect()

    base_h: list[dict] = []
    base_i: list[dict] = []
    if not args.no_baselines:
        import faiss
        import hnswlib  # noqa: F401

        truth_h = truth if hnsw_n == args.n else C.ground_truth(base[:hnsw_n], queries, K)
        base_h = run_hnswlib(base[:hnsw_n], queries, truth_h, args.M, args.ef_construction, efs)
        which = {k for k in kinds if k in ("hnsw", "ivf-flat", "ivf-sq8", "ivf-pq")} or {"hnsw"}
        fh, fi = run_faiss(base[:hnsw_n] if hnsw_n < args.n else base, queries, truth_h, args.M, args.ef_construction,
                           efs, nlist, nprobes, args.pq_m, [0, 100], which - {"ivf-flat", "ivf-sq8", "ivf-pq"})
        _, fi = run_faiss(base, queries, truth, args.M, args.ef_construction, efs, nlist, nprobes, args.pq_m,
                          [0, 100], which - {"hnsw"})
        base_h += fh
        base_i = fi
        print(f"# versions: hnswlib (pip), faiss-cpu {faiss.__version__}")

    print()
    print(f"## Graph indexes (M={args.M}, ef_construction={args.ef_construction}; n={hnsw_n})")
    cols = ["index", "params", "recall@10", "QPS", "p50 ms", "p99 ms", "build s", "mem B/vec"]
    s5cols = cols + ["chunks B/vec", "open", "cold B/q", "pass1 B/q", "warm B/q", "api p50 ms"]
    print(C.table(s5_rows.get("hnsw", []), s5cols))
    print()
    print(C.table(base_h, cols))
    print()
    print(f"## IVF indexes (nlist={nlist}, pq_m={args.pq_m}, 8-bit PQ codes; n={args.n})")
    ivf_rows = [r for k in ("ivf-flat", "ivf-sq8", "ivf-pq", "ivf-pq-nofull") for r in s5_rows.get(k, [])]
    print(C.table(ivf_rows, s5cols))
    print()
    print(C.table(base_i, cols))
    if "hybrid" in s5_rows:
        print()
        print(f"## Hybrid (n={args.n})")
        print(C.table(s5_rows["hybrid"], s5cols))
    print()
    print("## Summary (target: CPython within 5x of hnswlib's QPS at equal recall)")
    if base_h:
        hl = [r for r in base_h if r["index"] == "hnswlib"]
        if "hnsw" in s5_rows:
            print("- HNSW vs hnswlib: " + within(s5_rows["hnsw"], hl))
        all_s5 = [r for v in s5_rows.values() for r in v if r["n"] == hnsw_n]
        if all_s5:
            print("- best s5vec kind vs hnswlib: " + within(all_s5, hl))
        if base_i:
            for kind, fname in (("ivf-flat", "faiss IVFFlat"), ("ivf-sq8", "faiss IVFSQ8"), ("ivf-pq", "faiss IVFPQ")):
                if kind in s5_rows:
                    print(f"- {kind} vs {fname}: " + within(s5_rows[kind], [r for r in base_i if r["index"] == fname]))
    for note in notes:
        print("- note: " + note)
    print("- columns: QPS/p50/p99 = in-memory index.search, one query per call; mem B/vec = NumPy arrays' nbytes "
          "of the built s5vec index (allocated capacity, ids/metadata Python objects not counted) or the "
          "serialized index size for hnswlib/faiss (+ the raw vectors for faiss IndexRefineFlat rows); "
          "chunks B/vec = all published chunk bytes / n; open = bytes/chunks/ms fetched by Database.open; "
          "cold = first query after a fresh open; pass1/warm = mean bytes per query over a first/second "
          "pass of all queries (64 MiB caches); api p50 = search_with_stats ms in the warm pass")


if __name__ == "__main__":
    main()
