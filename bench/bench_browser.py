"""The demo collection searched in Chromium (Pyodide worker) next to the same searches on CPython.

    .venv/bin/python bench/bench_browser.py                        # 20,000 demo videos, hybrid + flat
    .venv/bin/python bench/bench_browser.py --n 5000 --index flat  # quick
    .venv/bin/python bench/bench_browser.py --build                # rebuild web/dist first (bash build_wheel.sh)

What it does: generates ``s5vec.demo.demo_records(n + queries, dim=384)`` (the last ``--queries``
records are held out as query vectors), publishes the first n to a local S5 portal (an index per
``--index`` kind; hybrid keeps the newest ``--recent-share`` of the videos, by timestamp, in HNSW),
serves ``web/dist`` plus a tiny harness page from a temp directory, and per kind, in a *fresh*
Chromium context (fresh worker, empty HTTP cache):

  startup   ``S5Vec.runtime()``: Pyodide + numpy + wheels + import, per step (worker-side ms)
            and page-side wall time
  open      ``S5Vec.open``: page-side ms, bytes and chunks fetched (``db.stats()``)
  cold      first search after the open: worker ms (``db.lastStats.ms``), page round trip, bytes
  pass 1    every query once (lazy IVF lists get fetched here): bytes per query
  warm      every query again: worker-side p50/p99 (``lastStats.ms``) and page round-trip p50/p99

and the same on CPython (``Database.open(cid, [portal])`` + ``search_with_stats``; portal over
HTTP on localhost), with the browser/CPython ratio. recall@10 is against exact search.

Not a test: nothing is asserted. Chromium: /usr/bin/chromium (override with S5VEC_CHROMIUM).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import single_thread_env  # noqa: E402

single_thread_env()  # CPython side single-threaded like the Pyodide worker (before NumPy loads)
import common as C  # noqa: E402

import argparse  # noqa: E402
import contextlib  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import numpy as np  # noqa: E402

ROOT = C.ROOT
DIST = ROOT / "web" / "dist"
CHROMIUM = os.environ.get("S5VEC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HARNESS = """<!doctype html><html><head><meta charset="utf-8"><title>s5vec bench</title></head><body>
<script type="module">
  import * as s5vec from "./s5vec.js";
  window.S5Vec = s5vec.S5Vec; window.dbs = {}; window.benchReady = true;
</script></body></html>"""
K = 10

# ------------------------------------------------------------------ JS run inside the page

JS_STARTUP = """async () => {
  const t0 = performance.now();
  const rt = await S5Vec.runtime();
  return { wallMs: performance.now() - t0, rt };
}"""

JS_OPEN = """async ([manifest, portals, cacheBytes]) => {
  const t0 = performance.now();
  const opts = { manifest, portals };
  if (cacheBytes) opts.cacheBytes = cacheBytes;
  const db = await S5Vec.open(opts);
  const ms = performance.now() - t0;
  const st = await db.stats();
  const key = Object.keys(window.dbs).length + 1; window.dbs[key] = db;
  // openStats: this open's own traffic (stats() counts every database the worker opened on these portals)
  const own = db.openStats;
  return { key, ms, bytes: own ? own.bytesFetched : st.bytes_fetched, chunks: own ? own.chunksFetched : st.chunks_fetched,
           info: db.info };
}"""

JS_PASS = """async ([key, queries, k, params]) => {
  const db = window.dbs[key];
  const out = [];
  for (const q of queries) {
    const v = new Float32Array(q);
    const opts = { k };
    if (params) opts.params = params;
    const t0 = performance.now();
    const hits = await db.search(v, opts);
    const rtt = performance.now() - t0;
    const s = db.lastStats;
    out.push({ rtt, ms: s.ms, bytes: s.bytesFetched, chunks: s.chunksFetched, ids: hits.map(h => h.id) });
  }
  return out;
}"""

JS_CLOSE = """async (key) => { await window.dbs[key].close(); delete window.dbs[key]; }"""


# ------------------------------------------------------------------ servers / browser

def build_bundle() -> None:
    subprocess.run(["bash", str(ROOT / "build_wheel.sh")], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)})


@contextlib.contextmanager
def web_root() -> Iterator[str]:
    """web/dist served through symlinks from a temp dir that also holds the bench page
    (nothing is written into web/dist)."""
    from s5vec.webserver import serve_web

    if not (DIST / "s5vec.js").exists():
        raise SystemExit("web/dist is missing: run `bash build_wheel.sh` (or pass --build)")
    with tempfile.TemporaryDirectory(prefix="s5vec-bench-web-") as d:
        for entry in DIST.iterdir():
            if entry.name == "bench.html":
                continue
            os.symlink(entry, os.path.join(d, entry.name))
        Path(d, "bench.html").write_text(HARNESS)
        server, _ = serve_web(d, "127.0.0.1", 0)
        host, port = server.server_address[:2]
        try:
            yield f"http://{host}:{port}/bench.html"
        finally:
            server.shutdown()
            server.server_close()


@contextlib.contextmanager
def portal(directory: str | None = None) -> Iterator[Any]:
    from s5vec.s5.portal import serve

    tmp = None
    if directory is None:
        tmp = tempfile.mkdtemp(prefix="s5vec-bench-portal-")
        directory = tmp
    server, _ = serve(directory)
    try:
        yield server
    finally:
        server.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def fresh_page(browser: Any, url: str) -> Iterator[Any]:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(600_000)
    page.on("pageerror", lambda e: print(f"[browser pageerror] {e}", file=sys.stderr))
    page.on("console", lambda m: print(f"[browser {m.type}] {m.text}", file=sys.stderr)
            if m.type in ("error",) else None)
    page.goto(url)
    page.wait_for_function("window.benchReady === true")
    try:
        yield page
    finally:
        ctx.close()


# ------------------------------------------------------------------ measuring

def browser_startup(page: Any) -> dict:
    return page.evaluate(JS_STARTUP)


def browser_measure(page: Any, cid: str, portals: list[str], queries: np.ndarray, params: dict | None,
                    cache_bytes: int | None = None) -> dict:
    """Open (fresh store) -> cold first query -> pass 1 -> pass 2 (warm)."""
    qs = [[float(x) for x in q] for q in queries]
    op = page.evaluate(JS_OPEN, [cid, portals, cache_bytes])
    cold = page.evaluate(JS_PASS, [op["key"], qs[:1], K, params or None])[0]
    p1 = page.evaluate(JS_PASS, [op["key"], qs, K, params or None])
    p2 = page.evaluate(JS_PASS, [op["key"], qs, K, params or None])
    page.evaluate(JS_CLOSE, op["key"])
    return {"open": op, "cold": cold, "pass1": p1, "warm": p2}


def cpython_measure(cid: str, portals: list[str], queries: np.ndarray, params: dict | None) -> dict:
    from s5vec.api import Database

    t0 = time.perf_counter()
    db = Database.open(cid, portals)
    open_ms = (time.perf_counter() - t0) * 1000
    st = db.store.stats()
    op = {"ms": open_ms, "bytes": st["bytes_fetched"], "chunks": st["chunks_fetched"]}

    def one(q: np.ndarray) -> dict:
        t = time.perf_counter()
        r = db.search_with_stats(q, K, None, params or None)
        rtt = (time.perf_counter() - t) * 1000
        s = r["stats"]
        return {"rtt": rtt, "ms": s["ms"], "bytes": s["bytesFetched"], "chunks": s["chunksFetched"],
                "ids": [h["id"] for h in r["hits"]]}

    cold = one(queries[0])
    p1 = [one(q) for q in queries]
    p2 = [one(q) for q in queries]
    db.close()
    return {"open": op, "cold": cold, "pass1": p1, "warm": p2}


def summarise(m: dict, truth: np.ndarray, id_index: dict[str, int]) -> dict:
    warm = m["warm"]
    found = [[id_index[i] for i in r["ids"]] for r in warm]
    return {
        "open ms": m["open"]["ms"], "open bytes": m["open"]["bytes"], "open chunks": m["open"]["chunks"],
        "cold ms": m["cold"]["ms"], "cold rtt": m["cold"]["rtt"], "cold bytes": m["cold"]["bytes"],
        "cold chunks": m["cold"]["chunks"],
        "pass1 B/q": float(np.mean([r["bytes"] for r in m["pass1"]])),
        "warm B/q": float(np.mean([r["bytes"] for r in warm])),
        "p50": C.pct([r["ms"] for r in warm], 50), "p99": C.pct([r["ms"] for r in warm], 99),
        "rtt p50": C.pct([r["rtt"] for r in warm], 50), "rtt p99": C.pct([r["rtt"] for r in warm], 99),
        "recall@10": C.recall(found, truth),
    }


def comparison_table(b: dict, c: dict) -> str:
    rows = []

    def add(label: str, key: str, fmt: str = "ms") -> None:
        bv, cv = b.get(key), c.get(key)
        f0 = (lambda v: C.fmt_bytes(v)) if fmt == "bytes" else (lambda v: f"{v:.0f}") if fmt == "n" else \
            (lambda v: f"{v:.3f}") if fmt == "r" else (lambda v: f"{v:.2f} ms")
        f = lambda v: "-" if v is None or v != v else f0(v)  # noqa: E731
        ratio = f"{bv / cv:.1f}x" if fmt == "ms" and cv and bv == bv else ""
        rows.append({"": label, "Chromium (Pyodide worker)": f(bv), "CPython": f(cv), "browser/CPython": ratio})

    add("open: time", "open ms")
    add("open: bytes fetched", "open bytes", "bytes")
    add("open: chunks fetched", "open chunks", "n")
    add("cold search: engine ms (lastStats.ms)", "cold ms")
    add("cold search: round trip", "cold rtt")
    add("cold search: bytes fetched", "cold bytes", "bytes")
    add("pass 1: bytes / query", "pass1 B/q", "bytes")
    add("warm: bytes / query", "warm B/q", "bytes")
    add("warm: engine p50", "p50")
    add("warm: engine p99", "p99")
    add("warm: round trip p50", "rtt p50")
    add("warm: round trip p99", "rtt p99")
    add("recall@10 vs exact", "recall@10", "r")
    return C.table(rows, ["", "Chromium (Pyodide worker)", "CPython", "browser/CPython"])


def startup_line(s: dict) -> str:
    rt = s["rt"]
    steps = ", ".join(f"{k} {v:.0f} ms" for k, v in rt["steps"].items())
    return (f"Pyodide {rt['pyodideVersion']} + numpy {rt['numpyVersion']} cold start: {rt['startupMs']:.0f} ms "
            f"(page wall {s['wallMs']:.0f} ms; worker-side {rt['workerStartupMs']:.0f} ms: {steps})")


def hybrid_params(ts: np.ndarray, share: float) -> tuple[dict, str]:
    cut = float(np.quantile(ts, 1 - share))
    now = max(time.time(), float(ts.max()) + 1)
    thr = now - cut
    return {"recent_threshold": thr, "clock": (lambda: now)}, f"recent_threshold={thr / 86400:.0f}d (newest {share:.0%})"


def publish_index(kind: str, params: dict, ids: list[str], base: np.ndarray, metas: list[dict] | None,
                  ts: np.ndarray, store: Any) -> tuple[str, float, Any]:
    from s5vec.api import new_index, save

    t0 = time.perf_counter()
    idx = new_index(kind, base.shape[1], "cosine", params)
    idx.add(ids, base, metas, ts.tolist())
    build = time.perf_counter() - t0
    cid, writer = save(idx, store)
    return cid, build, sum(c["size"] for c in writer.chunks)


# ------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--index", default="hybrid,flat", help="comma list of flat, hnsw, ivf, hybrid")
    ap.add_argument("--recent-share", type=float, default=0.10)
    ap.add_argument("--build", action="store_true", help="run `bash build_wheel.sh` first")
    args = ap.parse_args()
    if args.build:
        build_bundle()

    from s5vec.api import make_store

    print(f"# bench_browser  {time.strftime('%Y-%m-%d %H:%M %Z')}  {os.cpu_count()} cores, "
          f"CPython {platform.python_version()} NumPy {np.__version__}; Chromium {CHROMIUM}")
    t0 = time.perf_counter()
    base, queries, ts, recs = C.demo(args.n, 384, args.queries)
    metas = [r["metadata"] for r in recs]
    ids = [r["id"] for r in recs]
    id_index = {i: n for n, i in enumerate(ids)}
    truth = C.ground_truth(base, queries, K)
    print(f"# demo collection: {args.n} records x 384 (+{args.queries} held-out query vectors), "
          f"generated in {time.perf_counter() - t0:.1f} s; portal and web server on 127.0.0.1 (HTTP)")

    with portal() as srv, web_root() as url, chromium() as browser:
        store = make_store([srv.url])
        for kind in args.index.split(","):
            params: dict = {}
            note = "default parameters"
            if kind == "hybrid":
                params, note = hybrid_params(ts, args.recent_share)
                note += ", other parameters default"
            cid, build_s, size = publish_index(kind, params, ids, base, metas, ts, store)
            print(f"\n## --index {kind} ({note}): built+published in {build_s:.1f} s, "
                  f"{C.fmt_bytes(size)} of chunks, manifest {cid[:16]}...")
            cm = cpython_measure(cid, [srv.url], queries, None)
            c = summarise(cm, truth, id_index)
            with fresh_page(browser, url) as page:
                st = browser_startup(page)
                print(startup_line(st))
                try:
                    b = summarise(browser_measure(page, cid, [srv.url], queries, None), truth, id_index)
                except Exception as exc:  # report, keep going with the other kinds
                    print(f"BROWSER SEARCH FAILED for --index {kind}: {str(exc).splitlines()[0]}")
                    b = {k: float("nan") for k in c}
            print(f"warm = {args.queries} queries after a first pass over the same queries; k={K}")
            print(comparison_table(b, c))


if __name__ == "__main__":
    main()
