"""Every index kind opened in the Chromium Pyodide worker: per-query latency, recall, bytes.

    .venv/bin/python bench/bench_worker_kinds.py              # 100,000 x 384 synthetic
    .venv/bin/python bench/bench_worker_kinds.py --n 20000    # quick

Kinds: hnsw, ivf-flat, ivf-sq8, ivf-pq, hybrid (newest 10% in HNSW), each published once from
CPython to a local S5 portal (the portal directory is cached in --cache-dir, keyed by data and
parameters, so a second run skips the builds), then for each search setting, in one worker:
a fresh ``S5Vec.open`` (empty chunk cache), a cold first query, a first pass over all queries,
and a warm second pass that gives worker-side p50/p99 (``db.lastStats.ms``), page round-trip
p50/p99 and recall@10 against exact search. Bytes are per query, from ``lastStats.bytesFetched``.

Targets reported against (from the issue): worker p99 <= 20 ms at recall@10 >= 0.95 on
100k x 384.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import single_thread_env  # noqa: E402

single_thread_env()
import common as C  # noqa: E402

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import bench_browser as BB  # noqa: E402

K = 10


def kind_specs(n: int, recent_share: float, ts: np.ndarray, pq_m: int, nprobes: list[int], efs: list[int]
               ) -> dict[str, tuple[str, dict, list[dict]]]:
    nlist = max(16, int(round(math.sqrt(n))))
    hyb, _ = BB.hybrid_params(ts, recent_share)
    nl_h = max(16, int(round(math.sqrt(n * (1 - recent_share)))))
    return {
        "hnsw": ("hnsw", {"M": 16, "ef_construction": 200}, [{"ef": e} for e in efs]),
        "ivf-flat": ("ivf", {"nlist": nlist, "codec": "flat"}, [{"nprobe": p} for p in nprobes]),
        "ivf-sq8": ("ivf", {"nlist": nlist, "codec": "sq8"}, [{"nprobe": p} for p in nprobes]),
        "ivf-pq": ("ivf", {"nlist": nlist, "codec": "pq", "pq_m": pq_m},
                   [{"nprobe": p, "rerank": 100} for p in nprobes]),
        "ivf-pq-nofull": ("ivf", {"nlist": nlist, "codec": "pq", "pq_m": pq_m, "store_full": False},
                          [{"nprobe": p} for p in nprobes]),
        "hybrid": ("hybrid", {**hyb, "hnsw": {"M": 16, "ef_construction": 200}, "ivf": {"nlist": nl_h}},
                   [{"ef": 64, "nprobe": p} for p in nprobes]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--data", choices=["synthetic", "demo"], default="synthetic")
    ap.add_argument("--kinds", default="hnsw,ivf-flat,ivf-sq8,ivf-pq,ivf-pq-nofull,hybrid")
    ap.add_argument("--pq-m", type=int, default=48)
    ap.add_argument("--ef", default="16,32,64,128", help="HNSW search ef values")
    ap.add_argument("--nprobe", default="4,8,16,32", help="IVF / hybrid nprobe values")
    ap.add_argument("--recent-share", type=float, default=0.10)
    ap.add_argument("--cache-dir", default="/tmp/s5vec-bench-cache", help="portal blobs + manifest CIDs reused across runs")
    ap.add_argument("--cache-bytes", type=int, default=0,
                    help="S5Vec.open cacheBytes (default: the worker's 64 MiB); e.g. 536870912 to keep every "
                         "IVF list of a 100k x 384 index resident")
    ap.add_argument("--build", action="store_true", help="run `bash build_wheel.sh` first")
    args = ap.parse_args()
    if args.build:
        BB.build_bundle()

    from s5vec.api import make_store

    print(f"# bench_worker_kinds  {time.strftime('%Y-%m-%d %H:%M %Z')}  {os.cpu_count()} cores; data {args.data} "
          f"n={args.n} dim={args.dim}, {args.queries} queries, k={K}; Pyodide worker in Chromium; "
          f"portal + web server on 127.0.0.1; chunk cache "
          f"{(str(args.cache_bytes >> 20) + ' MiB') if args.cache_bytes else '64 MiB (default)'}")
    t0 = time.perf_counter()
    if args.data == "synthetic":
        base, queries, ts = C.synthetic(args.n, args.dim, args.queries)
        metas = None
    else:
        base, queries, ts, recs = C.demo(args.n, args.dim, args.queries)
        metas = [r["metadata"] for r in recs]
    ids = [f"{i}" for i in range(args.n)]
    id_index = {i: n for n, i in enumerate(ids)}
    truth = C.ground_truth(base, queries, K)
    print(f"# data + ground truth {time.perf_counter() - t0:.1f} s")

    specs = kind_specs(args.n, args.recent_share, ts, args.pq_m, [int(x) for x in args.nprobe.split(",")],
                       [int(x) for x in args.ef.split(",")])
    cache = C.PublishCache(args.cache_dir)

    rows = []
    with BB.portal(str(cache.portal)) as srv, BB.web_root() as url, BB.chromium() as browser:
        store = make_store([srv.url])
        with BB.fresh_page(browser, url) as page:
            st = BB.browser_startup(page)
            print("# " + BB.startup_line(st))
            for name in args.kinds.split(","):
                kind, params, sweep = specs[name]
                pkey = {k: v for k, v in params.items() if k not in ("clock", "recent_threshold")}
                key = [args.data, args.n, args.dim, name, pkey]
                if (hit := cache.get(key)) is not None:
                    cid, build_s, size = hit["cid"], hit["build_s"], hit["bytes"]
                    print(f"# {name}: reusing cached publish {cid[:16]}... (built in {build_s:.0f} s earlier)", flush=True)
                else:
                    print(f"# {name}: building ...", flush=True)
                    cid, build_s, size = BB.publish_index(kind, params, ids, base, metas, ts, store)
                    cache.put(key, {"cid": cid, "build_s": build_s, "bytes": size})
                    print(f"# {name}: built + published in {build_s:.0f} s, {C.fmt_bytes(size)}", flush=True)
                for p in sweep:
                    label = ",".join(f"{k}={v}" for k, v in p.items())
                    try:
                        m = BB.browser_measure(page, cid, [srv.url], queries, p, args.cache_bytes or None)
                    except Exception as exc:
                        rows.append({"index": name, "params": label, "worker p50 ms": f"FAILED: {str(exc).splitlines()[0][:90]}"})
                        print(f"  {name} {label}: FAILED {str(exc).splitlines()[0]}", flush=True)
                        break
                    s = BB.summarise(m, truth, id_index)
                    rows.append({
                        "index": name, "params": label, "recall@10": s["recall@10"],
                        "worker p50 ms": s["p50"], "worker p99 ms": s["p99"],
                        "rtt p50 ms": s["rtt p50"], "rtt p99 ms": s["rtt p99"],
                        "open": f"{C.fmt_bytes(s['open bytes'])}/{s['open ms']:.0f}ms",
                        "cold ms": s["cold ms"], "cold B": C.fmt_bytes(s["cold bytes"]),
                        "pass1 B/q": C.fmt_bytes(s["pass1 B/q"]), "warm B/q": C.fmt_bytes(s["warm B/q"]),
                        "chunks MB": size / 2**20,
                    })
                    print(f"  {name} {label}: recall {s['recall@10']:.3f} p50 {s['p50']:.2f} p99 {s['p99']:.2f} ms",
                          flush=True)

    print()
    print(C.table(rows, ["index", "params", "recall@10", "worker p50 ms", "worker p99 ms", "rtt p50 ms", "rtt p99 ms",
                         "open", "cold ms", "cold B", "pass1 B/q", "warm B/q", "chunks MB"]))
    ok = [r for r in rows if isinstance(r.get("recall@10"), float) and r["recall@10"] >= 0.95]
    print()
    if ok:
        best = min(ok, key=lambda r: r["worker p99 ms"])
        verdict = "MET" if best["worker p99 ms"] <= 20 and args.n >= 100_000 else \
            ("met at this n (target is for n=100k)" if best["worker p99 ms"] <= 20 else "NOT met")
        print(f"Target worker p99 <= 20 ms at recall@10 >= 0.95 (100k x 384): {verdict} -- best: {best['index']} "
              f"[{best['params']}] recall {best['recall@10']:.3f}, worker p99 {best['worker p99 ms']:.2f} ms "
              f"(page round trip p99 {best['rtt p99 ms']:.2f} ms), n={args.n}")
    else:
        print("Target worker p99 <= 20 ms at recall@10 >= 0.95: no setting reached recall 0.95")
    print("warm = second pass over the same queries after a fresh open (chunk cache as above); cold = first query "
          "after the open; worker ms = lastStats.ms (Python perf_counter in the worker: fetch + search + result "
          "building); rtt = page-side performance.now() around db.search (adds postMessage + JS<->Python conversion)")


if __name__ == "__main__":
    main()
