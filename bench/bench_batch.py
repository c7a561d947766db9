"""searchBatch throughput and single-query latency on the 100k x 384 default indexes of
bench_scale.py (run that first: it builds and caches them), on CPython and in Pyodide (Node).

    .venv/bin/python bench/bench_scale.py            # once: builds/caches the indexes (+ Chromium figures)
    .venv/bin/python bench/bench_batch.py            # CPython + Pyodide CPU-time figures

Why CPU time: on a shared 2-core machine a wall-clock QPS mostly measures the other processes.
CPython uses ``time.process_time``; the Pyodide run (tests/fixtures/pyodide_boot.mjs, the worker's
runtime in Node) reads ``process.cpuUsage``. Both also check that the batch's hits equal one-by-one
search exactly (ids, scores, metadata). Wall-clock figures are printed next to them.
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
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WHEELS = [ROOT / ".cache" / "wheels" / "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl",
          ROOT / ".cache" / "wheels" / "cbor2-5.9.0-py3-none-any.whl"]


def cpython(cids: dict[str, str], url: str, qs: np.ndarray, reps: int) -> list[dict]:
    from s5vec import api

    rows = []
    for kind, cid in cids.items():
        db = api.Database.open(cid, [url])
        for q in qs:
            db.search(q, 10)
        single, batch, wall, lat = [], [], [], []
        for _ in range(reps):
            c0 = time.process_time()
            for q in qs:
                t0 = time.perf_counter()
                db.search(q, 10)
                lat.append((time.perf_counter() - t0) * 1e3)
            c1, t1 = time.process_time(), time.perf_counter()
            res = db.search_batch(qs, 10)
            wall.append((time.perf_counter() - t1) * 1e3)
            batch.append((time.process_time() - c1) * 1e3)
            single.append((c1 - c0) * 1e3 / len(qs))
        one = [db.search(q, 10) for q in qs]
        rows.append({"kind": kind, "single_cpu_ms": min(single), "p50": float(np.median(lat)),
                     "p99": float(np.percentile(lat, 99)), "batch_cpu_ms": min(batch), "batch_wall_ms": min(wall),
                     "equal": all(map(same_hits, one, res))})
    return rows


def same_hits(a: list[dict], b: list[dict]) -> bool:
    """Same ids in the same order, scores within float32 rounding (a matrix product and a
    vector product round the last bit differently)."""
    return [h["id"] for h in a] == [h["id"] for h in b] and \
        all(abs(x["score"] - y["score"]) <= 1e-5 for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--recent-share", type=float, default=0.10)
    ap.add_argument("--kinds", default="hybrid,ivf")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cache-dir", default="/tmp/s5vec-bench-scale")
    ap.add_argument("--no-pyodide", action="store_true")
    ap.add_argument("--pkg", default=str(ROOT / "pkg"), help="the s5vec package dir to measure (e.g. an older checkout)")
    args = ap.parse_args()
    sys.path.insert(0, args.pkg)
    cache = C.PublishCache(args.cache_dir)
    cids = {}
    for kind in args.kinds.split(","):
        hit = cache.get(C.scale_key(args.n, args.dim, args.recent_share, kind))
        if hit is None:
            raise SystemExit(f"no cached {kind} index for n={args.n} dim={args.dim} in {cache.dir}: run bench_scale.py first")
        cids[kind] = hit["cid"]
    _, qs, _ = C.synthetic(args.n, args.dim, args.queries)
    from s5vec.s5.portal import serve

    import s5vec

    print(f"# bench_batch  {time.strftime('%Y-%m-%d %H:%M %Z')}  load {os.getloadavg()[0]:.1f}; "
          f"{args.queries} queries, k=10, n={args.n} dim={args.dim}; package {os.path.dirname(s5vec.__file__)}")
    server, _ = serve(str(cache.portal))
    rows = []
    try:
        for r in cpython(cids, server.url, qs, args.reps):
            rows.append({"runtime": "CPython", **r})
        node = shutil.which("node")
        if not args.no_pyodide and node and (ROOT / "node_modules" / "pyodide").is_dir() and all(w.exists() for w in WHEELS):
            with tempfile.TemporaryDirectory() as tmp:
                qf = Path(tmp) / "queries.npy"
                np.save(qf, qs)
                proc = subprocess.run([node, str(ROOT / "bench" / "pyodide_batch.mjs"), args.pkg, server.url,
                                       json.dumps({"cids": cids, "queries": str(qf), "reps": args.reps}),
                                       *map(str, WHEELS)], cwd=ROOT, capture_output=True, text=True, timeout=3600)
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            for r in json.loads(proc.stdout.strip().splitlines()[-1]):
                rows.append({"runtime": "Pyodide (Node)", **r})
    finally:
        server.stop()
    n = args.queries
    table = [{"runtime": r["runtime"], "index": r["kind"], "single CPU ms/q": r["single_cpu_ms"],
              "single wall p50 ms": r["p50"], "single wall p99 ms": r["p99"],
              "batch CPU ms": r["batch_cpu_ms"], "batch QPS (CPU)": n / r["batch_cpu_ms"] * 1e3,
              "batch QPS (wall)": n / r["batch_wall_ms"] * 1e3, "batch == one by one": r["equal"]} for r in rows]
    print(C.table(table, list(table[0])))
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
