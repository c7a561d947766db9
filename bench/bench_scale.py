"""The default indexes at scale, in the Chromium Pyodide worker: what `publish` picks with no params.

    .venv/bin/python bench/bench_scale.py                 # 100,000 x 384 synthetic, hybrid + ivf
    .venv/bin/python bench/bench_scale.py --n 20000       # quick
    .venv/bin/python bench/bench_scale.py --manifest CID --portal-dir DIR --queries-npy Q.npy --truth T.npy \
        --queries 1000                                    # an index built elsewhere (e.g. 1M, bench_build.py)
    .venv/bin/python bench/bench_scale.py --workers 1,2 --batch-only   # searchBatch QPS with a pool of 1, then 2 workers

For each kind, `api.publish(records, store, kind=...)` with NO params (the defaults picked from N,
dim and a held-out sample; the choice is printed), published once to a local portal whose directory
is cached in --cache-dir. Then, in one worker: a fresh `S5Vec.open` (chunk cache sized from the
manifest), a cold first query, a first pass over all queries, a warm second pass (the same topics:
worker p50/p99 from `lastStats.ms`, bytes per query), recall@10 against exact search, and
`db.searchBatch` over all queries (warm) -> QPS; with `--workers 1,2` that once per pool size
(`S5Vec.open({ workers: n })`, the batch split across the pool), each in a fresh tab. Targets from issue 11: default hybrid at 100k x 384
warm p99 <= 10 ms, <= 300 KiB per cold query, 0 per warm query; searchBatch >= 1,000 QPS.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import single_thread_env  # noqa: E402

single_thread_env()
import common as C  # noqa: E402

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import bench_browser as BB  # noqa: E402

K = 10

JS_OPEN_POOL = """async ([manifest, portals, workers]) => {
  const t0 = performance.now();
  const db = await S5Vec.open({ manifest, portals, workers });
  const key = Object.keys(window.dbs).length + 1; window.dbs[key] = db;
  return { key, ms: performance.now() - t0, workers: db.workers, cap: S5Vec.maxWorkers() };
}"""

JS_BATCH = """async ([key, queries, k, reps]) => {
  const db = window.dbs[key];
  const vs = queries.map((q) => new Float32Array(q));
  const first = await db.searchBatch(vs, { k });
  const firstStats = db.lastStats;
  const times = [];
  let stats = null;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await db.searchBatch(vs, { k });
    times.push(performance.now() - t0);
    stats = db.lastStats;
  }
  return { ids: first.map((hits) => hits.map((h) => h.id)), firstStats, stats, times, lastMs: times[times.length - 1] };
}"""


def publish_default(kind: str, ids: list[str], base: np.ndarray, ts: np.ndarray, store) -> tuple[str, float, dict]:
    from s5vec import api

    picked: dict = {}
    t0 = time.perf_counter()
    recs = [{"id": i, "vector": v, "timestamp": float(t)} for i, v, t in zip(ids, base, ts)]
    cid = api.publish(recs, store, kind=kind, explain=lambda c: (picked.update(c.record), print("# " + c.line())))
    return cid, time.perf_counter() - t0, picked


def tune_table(n: int, dims: list[int], seeds: tuple[int, int] = (1, 2)) -> None:
    """Defaults checked on data they were not picked on: the choice is made on one draw (seed A),
    the index is built on another (seed B) and measured against exact search with fresh queries."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import kit

    from s5vec.index import ivf_tune
    from s5vec.index.ivf import IVFIndex
    from s5vec.layout import StoreWriter
    from s5vec.s5.client import MemoryClient
    from s5vec.store import ChunkStore

    rows = []
    for dim in dims:
        for shape, kw in (("isotropic", {"clusters": 100}), ("two-level", {"top": 16, "sub": 16, "spread": 0.3})):
            a = kit.clustered(n, dim, seed=seeds[0], **kw)
            t0 = time.perf_counter()
            choice = ivf_tune.choose(a, "cosine")
            tune_s = time.perf_counter() - t0
            b = kit.clustered(n + 100, dim, seed=seeds[1], **kw)
            b /= np.linalg.norm(b, axis=1, keepdims=True)  # ground_truth takes unit vectors (cosine)
            base, qs = b[:n], b[n:]
            idx = IVFIndex(dim, "cosine", **choice.params)
            idx.add([str(i) for i in range(n)], base)
            w = StoreWriter(ChunkStore(MemoryClient()))
            idx.save(w)
            truth = C.ground_truth(base, qs, K)
            from s5vec import api

            found = []
            for q in qs:
                hits = idx.search(api.prepare_query(idx, q, K)).hits  # resident: no fetching
                found.append([int(h.id) for h in hits])
            ev = choice.record.get("evidence", {})
            p = choice.params
            rows.append({"dim": dim, "data": shape, "n": n, "picked": idx.spec(), "nprobe": p["nprobe"],
                         "rerank": p.get("rerank", 0), "held-out recall": ev.get("recall", float("nan")),
                         "recall@10 (other seed)": C.recall(found, truth),
                         "B/vec": sum(c["size"] for c in w.chunks) / n,
                         "est. cold KiB": ev.get("cold_bytes", 0) / 1024, "tune s": tune_s})
            print(rows[-1], flush=True)
    print()
    print(C.table(rows, ["dim", "data", "n", "picked", "nprobe", "rerank", "held-out recall", "recall@10 (other seed)",
                         "B/vec", "est. cold KiB", "tune s"]))


JS_STATS = """async (key) => await window.dbs[key].stats()"""

JS_IDS_BATCH = """async ([key, queries, k]) => {
  const hits = await window.dbs[key].searchBatch(queries.map((q) => new Float32Array(q)), { k });
  return hits.map((h) => h.map((x) => x.id));
}"""


def renderer_rss() -> int:
    """Largest resident set of a Chromium renderer process (the tab, its worker and Pyodide's heap)."""
    best = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"chrom" not in cmd or b"--type=renderer" not in cmd:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return best


def load_line() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def measure_manifest(args: argparse.Namespace) -> None:
    """An index built elsewhere (bench_build.py / `s5vec publish`), ids = row numbers of --npy:
    open, cold, pass 1 (all --queries), warm pass 2 (the same), recall@10 against --truth (exact,
    computed by `bench_build.py truth`), worker memory, searchBatch QPS on the first 100."""
    from s5vec.api import make_store, read_manifest

    qs_all = np.load(args.queries_npy)[: args.queries]
    truth = np.load(args.truth)[: args.queries, :K]
    qs_lat = qs_all[: args.latency_queries] if args.latency_queries else qs_all
    print(f"# bench_scale --manifest {args.manifest[:20]}...  {time.strftime('%Y-%m-%d %H:%M %Z')}  "
          f"{os.cpu_count()} cores, {load_line()}; {len(qs_all)} queries, k={K}, cacheBytes {args.cache_bytes}")
    with BB.portal(args.portal_dir) as srv, BB.web_root() as url, BB.chromium() as browser:
        store = make_store([srv.url])
        man = read_manifest(store, args.manifest)
        unlisted = (man.get("extra") or {}).get("unlisted") or {}
        listed_b = sum(c["size"] for c in man["chunks"])
        total = listed_b + sum(u["bytes"] for u in unlisted.values())
        n = int(man["count"])
        print(f"# {man.get('spec')}: {n} vectors, published {C.fmt_bytes(total)} = {total / n:.1f} B/vector "
              f"(listed {C.fmt_bytes(listed_b)}, unlisted {unlisted})")
        auto = (man.get("extra") or {}).get("auto")
        if auto:
            print(f"# picked: {auto.get('picked')} evidence: {auto.get('evidence')}")
        with BB.fresh_page(browser, url) as page:
            print("# " + BB.startup_line(BB.browser_startup(page)))
            rss0 = renderer_rss()
            m = BB.browser_measure(page, args.manifest, [srv.url], qs_lat, None, args.cache_bytes)
            print(f"# one-by-one passes over {len(qs_lat)} queries done; {load_line()}", flush=True)
            op = page.evaluate(BB.JS_OPEN, [args.manifest, [srv.url], args.cache_bytes])
            q100 = [[float(x) for x in q] for q in qs_all[:100]]
            page.evaluate(BB.JS_PASS, [op["key"], q100, K, None])
            b = page.evaluate(JS_BATCH, [op["key"], q100, K, args.batch_reps])
            st = page.evaluate(JS_STATS, op["key"])
            rss1 = renderer_rss()
            page.evaluate(BB.JS_CLOSE, op["key"])
        id_index = {str(i): i for i in range(n)}
        s = BB.summarise(m, truth[: len(qs_lat)], id_index)
        print("# one by one: " + json.dumps({k: v for k, v in s.items()}, default=float)
              + f"; wasm memory {C.fmt_bytes(st.get('wasmMemoryBytes', float('nan')))}; batch QPS (100) "
              f"{len(q100) / (min(b['times']) / 1000):.0f}", flush=True)
        all_ids: list = []
        heap = []
        if len(qs_all) > len(qs_lat):  # recall of every query, in a fresh tab (a new worker) per --recall-fresh
            fresh = args.recall_fresh or len(qs_all)
            t0 = time.perf_counter()
            for seg in range(args.recall_from, len(qs_all), fresh):
                with BB.fresh_page(browser, url) as page2:
                    op2 = page2.evaluate(BB.JS_OPEN, [args.manifest, [srv.url], args.cache_bytes])
                    try:
                        for a in range(seg, min(seg + fresh, len(qs_all)), args.recall_batch):
                            chunk = [[float(x) for x in q] for q in qs_all[a : min(a + args.recall_batch, seg + fresh)]]
                            if args.recall_mode == "batch":
                                all_ids += page2.evaluate(JS_IDS_BATCH, [op2["key"], chunk, K])
                            else:
                                all_ids += [r["ids"] for r in page2.evaluate(BB.JS_PASS, [op2["key"], chunk, K, None])]
                            heap.append(page2.evaluate(JS_STATS, op2["key"]).get("wasmMemoryBytes"))
                            found = [[id_index[i] for i in hits] for hits in all_ids]
                            lo = args.recall_from
                            print(f"# recall pass ({args.recall_mode}): queries {lo}..{lo + len(all_ids)}, recall@10 "
                                  f"{C.recall(found, truth[lo : lo + len(found)]):.4f}, {time.perf_counter() - t0:.0f} s, "
                                  f"wasm {C.fmt_bytes(heap[-1] or float('nan'))}; {load_line()}", flush=True)
                    except Exception as exc:  # the worker died: report how far it got
                        print(f"# recall pass stopped after {len(all_ids)} queries: {str(exc)[:200]}", flush=True)
                        break
                    page2.evaluate(BB.JS_CLOSE, op2["key"])
        p1 = [[id_index[i] for i in r["ids"]] for r in m["pass1"]]
        warm_bytes = [r["bytes"] for r in m["warm"]]
        row = {
            "spec": man.get("spec", ""), "n": n, "B/vec": total / n, "queries": len(qs_lat),
            "recall@10": s["recall@10"], "pass1 recall@10": C.recall(p1, truth[: len(qs_lat)]),
            "open ms": s["open ms"], "open B": C.fmt_bytes(s["open bytes"]),
            "cold ms": s["cold ms"], "cold B": C.fmt_bytes(s["cold bytes"]), "cold chunks": s["cold chunks"],
            "pass1 B/q": C.fmt_bytes(s["pass1 B/q"]), "pass1 p50 ms": C.pct([r["ms"] for r in m["pass1"]], 50),
            "pass1 p99 ms": C.pct([r["ms"] for r in m["pass1"]], 99),
            "warm B/q": C.fmt_bytes(s["warm B/q"]), "warm q with 0 B": f"{np.mean([w == 0 for w in warm_bytes]):.0%}",
            "warm p50 ms": s["p50"], "warm p99 ms": s["p99"], "rtt p99 ms": s["rtt p99"],
            "batch QPS (100)": len(q100) / (min(b["times"]) / 1000),
            "wasm memory": C.fmt_bytes(st.get("wasmMemoryBytes", float("nan"))),
            "renderer RSS": f"{C.fmt_bytes(rss0)} -> {C.fmt_bytes(rss1)}",
        }
        if all_ids:
            found = [[id_index[i] for i in hits] for hits in all_ids]
            lo = args.recall_from
            same = sum(f == [id_index[i] for i in r["ids"]] for f, r in zip(found, m["warm"][lo:]))
            row.update({f"recall@10 (queries {lo}.., {args.recall_mode})": C.recall(found, truth[lo : lo + len(found)]),
                        "queries (all)": len(found), "same as pass 2": f"{same}/{min(len(found), len(qs_lat))}",
                        "wasm memory (recall tab)": C.fmt_bytes(max(h or 0 for h in heap))})
    print(json.dumps(row, default=float))
    print()
    print(C.table([row], ["spec", "B/vec", "recall@10", "open ms", "open B", "cold B", "pass1 B/q", "warm B/q",
                          "warm p50 ms", "warm p99 ms", "wasm memory"]))
    print(f"# {load_line()} at the end")


def load() -> str:
    """The machine's load averages (1, 5, 15 min): benchmarks here share 2 cores with other work."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def pool_qps(browser, url: str, cid: str, portals: list[str], qs: list, pools: list[int], reps: int) -> dict:
    """searchBatch QPS with a pool of each size, each in a fresh tab (fresh workers): the first batch
    warms every worker's chunk cache for its part, then the fastest of `reps` warm batches counts."""
    out = {}
    for w in pools:
        with BB.fresh_page(browser, url) as page:
            op = page.evaluate(JS_OPEN_POOL, [cid, portals, w])
            b = page.evaluate(JS_BATCH, [op["key"], qs, K, reps])
            page.evaluate(BB.JS_CLOSE, op["key"])
        qps = len(qs) / (min(b["times"]) / 1000)
        found = [[int(i) for i in hits] for hits in b["ids"]]
        parts = b["stats"].get("parts") or [{"worker": 0, "ms": b["stats"]["ms"]}]
        # worker time summed over the parts / page-side time of that batch: ~n when the n parts overlapped
        overlap = sum(p["ms"] for p in parts) / b["lastMs"]
        print(f"    workers={w} (cap {op['cap']}): open {op['ms']:.0f} ms, searchBatch of {len(qs)}: {qps:.0f} QPS "
              f"(fastest {min(b['times']):.1f} ms, median {sorted(b['times'])[len(b['times']) // 2]:.1f} ms; "
              f"parts {[round(p['ms']) for p in parts]} ms in the workers, overlap {overlap:.2f}; load {load()})", flush=True)
        out[w] = (qps, b, found)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kinds", default="hybrid,ivf")
    ap.add_argument("--recent-share", type=float, default=0.10, help="share of records newer than 30 days")
    ap.add_argument("--batch-reps", type=int, default=5)
    ap.add_argument("--workers", default="1", help="comma-separated pool sizes for the searchBatch QPS (e.g. 1,2)")
    ap.add_argument("--batch-only", action="store_true", help="only searchBatch QPS (skip the one-by-one passes)")
    ap.add_argument("--cache-dir", default="/tmp/s5vec-bench-scale")
    ap.add_argument("--build", action="store_true", help="run `bash build_wheel.sh` first")
    ap.add_argument("--tune-table", action="store_true",
                    help="instead: pick defaults on one draw, measure on another (dims --dims, n --n), CPython only")
    ap.add_argument("--dims", default="96,384,768")
    ap.add_argument("--manifest", help="measure this index instead (ids = row numbers of the base the truth was computed on)")
    ap.add_argument("--portal-dir", help="with --manifest: the portal directory that holds it")
    ap.add_argument("--queries-npy", help="with --manifest: query vectors (.npy)")
    ap.add_argument("--truth", help="with --manifest: exact top-10 row numbers per query (.npy; bench_build.py truth)")
    ap.add_argument("--latency-queries", type=int, default=None,
                    help="with --manifest: one-by-one passes (latency, bytes) on the first N of --queries only; "
                         "recall@10 of all --queries by searchBatch")
    ap.add_argument("--recall-batch", type=int, default=500, help="queries per call in the recall pass")
    ap.add_argument("--recall-fresh", type=int, default=None, help="a fresh tab every N queries of the recall pass")
    ap.add_argument("--recall-from", type=int, default=0, help="start the recall pass at this query")
    ap.add_argument("--recall-mode", choices=["batch", "single"], default="batch",
                    help="recall pass by searchBatch or one query at a time (a fresh tab either way)")
    ap.add_argument("--cache-bytes", type=int, default=None,
                    help="with --manifest: the chunk cache (default: sized from the manifest, api.cache_bytes_for)")
    args = ap.parse_args()
    if args.manifest:
        if args.build:
            BB.build_bundle()
        measure_manifest(args)
        return
    if args.tune_table:
        tune_table(args.n, [int(d) for d in args.dims.split(",")])
        return
    if args.build:
        BB.build_bundle()

    from s5vec.api import make_store

    print(f"# bench_scale  {time.strftime('%Y-%m-%d %H:%M %Z')}  {os.cpu_count()} cores; synthetic n={args.n} "
          f"dim={args.dim}, {args.queries} queries, k={K}; default params (publish without params)")
    print(f"# load: {load()}", flush=True)
    pools = [int(w) for w in args.workers.split(",")]
    base, queries, ts0 = C.synthetic(args.n, args.dim, args.queries)
    # timestamps: the newest --recent-share within the last 30 days, the rest older
    now = time.time()
    order = np.argsort(np.argsort(-ts0))  # rank 0 = newest
    n_recent = int(args.n * args.recent_share)
    ts = np.where(order < n_recent, now - 86400 * (order / max(n_recent, 1)) * 29,
                  now - 40 * 86400 - (order - n_recent) * 60.0)
    ids = [f"{i}" for i in range(args.n)]
    id_index = {i: n for n, i in enumerate(ids)}
    truth = C.ground_truth(base, queries, K)
    cache = C.PublishCache(args.cache_dir)
    rows = []
    with BB.portal(str(cache.portal)) as srv, BB.web_root() as url, BB.chromium() as browser:
        store = make_store([srv.url])
        with BB.fresh_page(browser, url) as page:
            print("# " + BB.startup_line(BB.browser_startup(page)))
            for kind in args.kinds.split(","):
                key = C.scale_key(args.n, args.dim, args.recent_share, kind)
                if (hit := cache.get(key)) is not None:
                    cid, build_s, picked = hit["cid"], hit["build_s"], hit["picked"]
                    print(f"# {kind}: reusing {cid[:16]}... (built in {build_s:.0f} s); picked {picked.get('picked')}")
                else:
                    cid, build_s, picked = publish_default(kind, ids, base, ts, store)
                    cache.put(key, {"cid": cid, "build_s": build_s, "picked": picked})
                    print(f"# {kind}: built + published in {build_s:.0f} s", flush=True)
                from s5vec.api import read_manifest

                man = read_manifest(store, cid)
                unlisted = (man.get("extra") or {}).get("unlisted") or {}
                total = sum(c["size"] for c in man["chunks"]) + sum(u["bytes"] for u in unlisted.values())
                qs = [[float(x) for x in q] for q in queries]
                if args.batch_only:
                    for w, (qps, b, found) in pool_qps(browser, url, cid, [srv.url], qs, pools, args.batch_reps).items():
                        rows.append({"index": kind, "workers": w, "batch recall": C.recall(found, truth),
                                     "batch QPS": qps, "batch ms (worker)": b["stats"]["ms"], "load": load()})
                    continue
                m = BB.browser_measure(page, cid, [srv.url], queries, None, None)
                s = BB.summarise(m, truth, id_index)
                op = page.evaluate(BB.JS_OPEN, [cid, [srv.url], None])
                page.evaluate(BB.JS_PASS, [op["key"], qs, K, None])  # warm the cache
                b = page.evaluate(JS_BATCH, [op["key"], qs, K, args.batch_reps])
                page.evaluate(BB.JS_CLOSE, op["key"])
                found = [[id_index[i] for i in hits] for hits in b["ids"]]
                qps = len(qs) / (min(b["times"]) / 1000)
                pooled = {w: r[0] for w, r in pool_qps(browser, url, cid, [srv.url], qs, [w for w in pools if w > 1],
                                                       args.batch_reps).items()}
                rows.append({
                    "index": kind, "spec": man.get("spec", "")[:60], "B/vec": total / args.n,
                    "recall@10": s["recall@10"], "batch recall": C.recall(found, truth),
                    "warm p50 ms": s["p50"], "warm p99 ms": s["p99"], "rtt p99 ms": s["rtt p99"],
                    "open": f"{C.fmt_bytes(s['open bytes'])}/{s['open ms']:.0f}ms",
                    "cold B": C.fmt_bytes(s["cold bytes"]), "pass1 B/q": C.fmt_bytes(s["pass1 B/q"]),
                    "warm B/q": C.fmt_bytes(s["warm B/q"]), "batch QPS": qps,
                    "batch ms (worker)": b["stats"]["ms"],
                    **{f"QPS {w} workers": q for w, q in pooled.items()},
                })
                print(f"  {kind}: recall {s['recall@10']:.3f} warm p50 {s['p50']:.2f} p99 {s['p99']:.2f} ms, "
                      f"cold {C.fmt_bytes(s['cold bytes'])}, warm {C.fmt_bytes(s['warm B/q'])}/q, "
                      f"searchBatch {qps:.0f} QPS", flush=True)
    print()
    if args.batch_only:
        print(C.table(rows, ["index", "workers", "batch recall", "batch QPS", "batch ms (worker)", "load"]))
        print("batch QPS = queries / page-side time of the fastest of --batch-reps warm db.searchBatch calls "
              "(a fresh tab per pool size; with 2+ workers the batch is split across the pool)")
        return
    print(C.table(rows, ["index", "spec", "B/vec", "recall@10", "batch recall", "warm p50 ms", "warm p99 ms",
                         "rtt p99 ms", "open", "cold B", "pass1 B/q", "warm B/q", "batch QPS", "batch ms (worker)"]
                  + [f"QPS {w} workers" for w in pools if w > 1]))
    print("warm = second pass over the same queries (same topics) after a fresh open; worker ms = lastStats.ms; "
          "batch QPS = queries / page-side time of the fastest of --batch-reps warm db.searchBatch calls")


if __name__ == "__main__":
    main()
