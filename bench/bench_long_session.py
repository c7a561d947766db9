"""A long session in one Chromium worker: many searches over an index built elsewhere, printing after
every step the worker's wasm heap, its free C stack and the chunks fetched so far.

    .venv/bin/python bench/bench_long_session.py --portal-dir .cache/i11scale/portal-s3m \
        --manifest blobb5232t... --queries-npy .cache/i11scale/s3m.queries.npy --mode batch --n 2500 --step 500

What it is for: a worker must survive any number of requests. With Pyodide 0.27's stack switching
(JSPI) on, each asyncio callback lost 16 bytes of the 5 MiB C stack; ~800 cold searches of the 3M
index (~20k fetched chunks) killed the worker. `free C stack` must stay the same from step to step,
and the heap must level off once the chunk cache is full (--cache-bytes to shrink it), near the cache
budget: `cache` is what the store counts (one copy per chunk, decoded bodies by their footprint), the
heap is that plus the Pyodide runtime (~70 MB) and the allocator's slack.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

import bench_browser as BB  # noqa: E402

JS_STEP = """async ([key, queries, k, mode]) => {
  const db = window.dbs[key];
  const vs = queries.map((q) => new Float32Array(q));
  const t0 = performance.now();
  if (mode === 'batch') await db.searchBatch(vs, { k });
  else for (const v of vs) await db.search(v, { k });
  return { ms: performance.now() - t0, stats: await db.stats() };
}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portal-dir", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--queries-npy", required=True)
    ap.add_argument("--mode", choices=("single", "batch"), default="batch")
    ap.add_argument("--n", type=int, default=2000, help="queries in all")
    ap.add_argument("--step", type=int, default=500, help="queries per step (one searchBatch in batch mode)")
    ap.add_argument("--start", type=int, default=0, help="first query row")
    ap.add_argument("--cache-bytes", type=int, default=None, help="the worker's chunk cache (default: from the manifest)")
    args = ap.parse_args()
    qs = np.load(args.queries_npy)
    t00 = time.perf_counter()
    print(f"# bench_long_session {args.mode} n={args.n} step={args.step} cacheBytes={args.cache_bytes}; "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load average {os.getloadavg()}", flush=True)
    with BB.portal(args.portal_dir) as srv, BB.web_root() as url, BB.chromium() as browser:
        with BB.fresh_page(browser, url) as page:
            BB.browser_startup(page)
            op = page.evaluate(BB.JS_OPEN, [args.manifest, [srv.url], args.cache_bytes])
            st = page.evaluate("async (k) => await window.dbs[k].stats()", op["key"])
            stack0 = st.get("wasmStackFreeBytes")
            print(f"open: heap {st['wasmMemoryBytes'] / 2**20:.1f} MB, free C stack {stack0} B, "
                  f"cache limit {st.get('cache_limit', 0) / 2**20:.0f} MB", flush=True)
            for a in range(args.start, args.start + args.n, args.step):
                chunk = [[float(x) for x in q] for q in qs[a : a + args.step]]
                try:
                    r = page.evaluate(JS_STEP, [op["key"], chunk, 10, args.mode])
                except Exception as exc:  # the worker died
                    print(f"WORKER DIED during queries {a}..{a + len(chunk)}: {str(exc)[:300]}", flush=True)
                    sys.exit(1)
                s = r["stats"]
                print(f"queries {a + len(chunk)}: {r['ms']:.0f} ms, heap {s['wasmMemoryBytes'] / 2**20:.1f} MB, "
                      f"free C stack {s.get('wasmStackFreeBytes')} B (lost {stack0 - s.get('wasmStackFreeBytes', 0)}), "
                      f"cache {s.get('cache_bytes', 0) / 2**20:.0f} MB (resident {s.get('resident_bytes', 0) / 2**20:.0f}), "
                      f"chunks fetched {s.get('chunks_fetched')}, "
                      f"evictions {s.get('evictions')}, {time.perf_counter() - t00:.0f} s", flush=True)
    print(f"# load average {os.getloadavg()} at the end")


if __name__ == "__main__":
    main()
