"""Text search on the film collection in Chromium (Pyodide worker): the numbers issue 8 asks for.

    .venv/bin/python bench/bench_text_browser.py              # all 58,788 films
    .venv/bin/python bench/bench_text_browser.py --n 8000     # quick

What it does: converts ggplot2movies (``s5vec.demo.movie_records``), embeds the films with the
model built at set-up (``s5vec.embed.load_local``), publishes model + hybrid index + keyword index
to a local S5 portal (as demo.sh does), serves ``web/dist`` and a harness page, then:

  blank tab     a fresh Chromium context: page-side wall time from ``S5Vec.runtime()`` through
                ``S5Vec.open`` to the first ``searchText`` result (an exact title), and its parts
  model bytes   per cold query (fresh database per query, CPython, same chunks as the worker):
                bytes of the token-table chunks the query's tokens need
  warm          every query of a mixed set (free text + titles) twice in one tab; the second pass:
                worker-side ms (``lastStats.ms``: embed + keyword + vector + fuse) p50/p99, and
                the page round trip p50/p99

Not a test: nothing is asserted. Chromium: /usr/bin/chromium (override with S5VEC_CHROMIUM).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import single_thread_env  # noqa: E402

single_thread_env()
import common as C  # noqa: E402

import argparse  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

DIST = C.ROOT / "web" / "dist"
CHROMIUM = os.environ.get("S5VEC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HARNESS = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>s5vec text bench</title></head><body><script type="module">
  import * as s5vec from "./s5vec.js";
  window.S5Vec = s5vec.S5Vec; window.benchReady = true;
</script></body></html>"""
FREE_TEXT = ["documentary about space", "romantic comedy in paris", "cartoon cat and mouse", "war drama",
             "vampire horror", "a boxer's comeback", "jazz musician biography", "high school love story",
             "alien invasion", "western gunfight", "silent slapstick comedy", "robots in the future",
             "ghost story in an old house", "heist gone wrong", "coming of age summer", "nature documentary ocean",
             "martial arts revenge", "musical on broadway", "detective mystery in london", "zombie apocalypse"]

JS_COLD = """async ([manifest, portals, title]) => {
  const t0 = performance.now();
  const rt = await S5Vec.runtime();
  const t1 = performance.now();
  const db = await S5Vec.open({ manifest, portals });
  const t2 = performance.now();
  const opened = await db.stats();
  const hits = await db.searchText(title, { k: 10 });
  const t3 = performance.now();
  window.db = db;
  return { runtimeMs: t1 - t0, openMs: t2 - t1, firstQueryMs: t3 - t2, totalMs: t3 - t0,
           first: hits[0] && hits[0].metadata.title, stats: db.lastStats, open: opened };
}"""

JS_PASS = """async ([queries]) => {
  const out = [];
  for (const q of queries) {
    const t0 = performance.now();
    await window.db.searchText(q, { k: 10 });
    out.push([performance.now() - t0, window.db.lastStats.ms, window.db.lastStats.bytesFetched]);
  }
  return out;
}"""


def pct(xs, p):
    return float(np.percentile(np.asarray(xs, dtype=np.float64), p)) if len(xs) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="films (default: all 58,788)")
    ap.add_argument("--titles", type=int, default=200, help="title queries in the warm set")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from s5vec import api, embed
    from s5vec.demo import movie_records
    from s5vec.keyword import tokenize
    from s5vec.s5.portal import serve
    from s5vec.webserver import serve_web

    tmp = Path(tempfile.mkdtemp(prefix="s5vec-textbench-"))
    try:
        t = time.perf_counter()
        records = list(movie_records(args.n))
        model = embed.load_local()
        embed.embed_records(records, model)
        print(f"films: {len(records)}, embedded in {time.perf_counter() - t:.1f} s (CPython)")
        portal = serve(tmp / "portal")[0]
        store = api.make_store([portal.url])
        t = time.perf_counter()
        model_cid = embed.publish_model(model, store)
        cid = api.publish(records, store, kind="hybrid", params={"codec": "sq8", "store_full": False}, text_field="text",
                          extra=embed.manifest_extra(model_cid, "text"))
        print(f"published in {time.perf_counter() - t:.1f} s: {store.stats()['bytes_uploaded'] / 2**20:.1f} MiB")

        rng = random.Random(7)
        titles = [r["metadata"]["title"] for r in rng.sample(records, args.titles) if tokenize(r["metadata"]["title"])]
        queries = FREE_TEXT + titles

        # model bytes per cold query (CPython, a fresh database per query: nothing decoded yet)
        per_query = []
        for q in FREE_TEXT + titles[:30]:
            db = api.Database.open(cid, [portal.url])
            before = db.store.stats()["bytes_fetched"]
            db.store.prefetch_sync(db.model.plan(db.model.tokenize(q)))
            per_query.append(db.store.stats()["bytes_fetched"] - before)
        print(f"model bytes per cold query: mean {np.mean(per_query) / 1024:.1f} KiB, p50 "
              f"{pct(per_query, 50) / 1024:.1f} KiB, max {max(per_query) / 1024:.1f} KiB "
              f"({len(per_query)} queries)")

        web = tmp / "web"
        shutil.copytree(DIST, web, ignore=shutil.ignore_patterns("demo-config.json"))
        (web / "bench.html").write_text(HARNESS)
        server, _ = serve_web(str(web), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.server_address[1]}/bench.html"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx = browser.new_context()
            page = ctx.new_page()
            page.set_default_timeout(300_000)
            page.goto(url)
            page.wait_for_function("window.benchReady === true")
            cold = page.evaluate(JS_COLD, [cid, [portal.url], titles[0]])
            st = cold["stats"]
            print(f"blank tab -> first result: {cold['totalMs']:.0f} ms (runtime {cold['runtimeMs']:.0f}, open "
                  f"{cold['openMs']:.0f} ms / {cold['open']['bytes_fetched'] / 2**20:.2f} MiB, first query "
                  f"{cold['firstQueryMs']:.0f} ms / {st['bytesFetched'] / 1024:.1f} KiB in {st['chunksFetched']} chunks,"
                  f" planned {st['planned']}); first hit {cold['first']!r} for {titles[0]!r}")
            first_pass = page.evaluate(JS_PASS, [queries])
            warm = page.evaluate(JS_PASS, [queries])
            cold_kib = [b / 1024 for _, _, b in first_pass]
            print(f"first pass ({len(queries)} queries): bytes per query p50 {pct(cold_kib, 50):.1f} KiB, "
                  f"p99 {pct(cold_kib, 99):.1f} KiB")
            w_ms = [m for _, m, _ in warm]
            rt_ms = [r for r, _, _ in warm]
            print(f"warm text query in the worker (embed + keyword + vector + fuse): p50 {pct(w_ms, 50):.2f} ms, "
                  f"p99 {pct(w_ms, 99):.2f} ms; page round trip p50 {pct(rt_ms, 50):.2f} ms, p99 {pct(rt_ms, 99):.2f} ms")
            browser.close()
        server.shutdown()
        # the same warm queries on CPython for scale
        db = api.Database.open(cid, [portal.url])
        for q in queries:
            db.search_text(q)
        cp = []
        for q in queries:
            t = time.perf_counter()
            db.search_text(q)
            cp.append((time.perf_counter() - t) * 1000)
        print(f"warm text query on CPython: p50 {pct(cp, 50):.2f} ms, p99 {pct(cp, 99):.2f} ms")
        portal.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
