"""The demo page's second visit with the network off: time to first result (target <= 3 s).

    .venv/bin/python bench/bench_offline.py                 # the 58,788 films, as demo.sh publishes them
    .venv/bin/python bench/bench_offline.py --n 8000 --runs 3

What it does: publishes ``s5vec.demo.movie_records(n)`` as demo.sh does (embedded by the local text
model, hybrid with SQ8 codes and no full vectors, keyword index, model chunks) to a local portal,
serves a copy of ``web/dist`` with a demo-config.json, and in one fresh Chromium context:

  visit 1 (online, empty browser)   page load -> ready -> first text search result
  visit 2 (online, service worker)  the same, runtime and chunks from the service worker
  visit 3.. (network off: web server and portal stopped, context offline)  the same, ``--runs`` times

"first result" = wall time from ``page.goto`` until the first result list is rendered (the page's
first example query is typed as soon as the page says ready; the same query on every visit); "ready" is the page's own page-to-ready time.
Not a test: nothing is asserted. Chromium: /usr/bin/chromium (override with S5VEC_CHROMIUM).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pkg"))

from s5vec import embed  # noqa: E402
from s5vec.api import make_store, publish  # noqa: E402
from s5vec.demo import EXAMPLE_QUERIES, movie_records, write_demo_config, write_records  # noqa: E402
from s5vec.s5.portal import serve  # noqa: E402
from s5vec.webserver import serve_web  # noqa: E402

CHROMIUM = os.environ.get("S5VEC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def visit(page, url: str, query: str) -> dict[str, float]:
    t0 = time.perf_counter()
    page.goto(url + "index.html")
    page.wait_for_function("document.body.dataset.ready", timeout=180_000)
    if page.evaluate("document.body.dataset.ready") != "1":
        raise SystemExit(f"demo failed: {page.inner_text('#boot-label')}")
    t_ready = time.perf_counter()
    page.fill("#q", query)   # an input event: searched at once (after the page's short debounce)
    page.wait_for_function("arg => document.body.dataset.query === arg", arg=query, timeout=60_000)
    if not page.locator("#error").is_hidden():
        raise SystemExit(f"search failed: {page.inner_text('#error')}")
    t1 = time.perf_counter()
    return {"first_result_s": t1 - t0, "ready_s": t_ready - t0,
            "page_ready_ms": float(page.evaluate("document.body.dataset.readyMs")),
            "register_ms": float(page.evaluate("document.body.dataset.offlineMs")),
            "steps": page.eval_on_selector_all("#dev-stats dt, #dev-stats dd", "els => els.map(e => e.textContent)"),
            "controlled": page.evaluate("navigator.serviceWorker.controller !== null")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="films (default: all 58,788)")
    ap.add_argument("--runs", type=int, default=3, help="offline visits")
    ap.add_argument("--build", action="store_true", help="run build_wheel.sh first")
    a = ap.parse_args()
    if a.build or not (ROOT / "web" / "dist" / "sw.js").exists():
        subprocess.run(["bash", str(ROOT / "build_wheel.sh")], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHON": sys.executable})
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        portal, _ = serve(tmp / "blobs")
        records = list(movie_records(a.n)) if a.n else list(movie_records())
        t = time.perf_counter()
        model = embed.load_local()
        embed.embed_records(records, model)
        store = make_store([portal.url])
        model_cid = embed.publish_model(model, store)
        cid = publish(records, store, kind="hybrid", params={"codec": "sq8", "store_full": False},
                      text_field="text", extra=embed.manifest_extra(model_cid, "text"))
        print(f"embedded and published {len(records)} films in {time.perf_counter() - t:.1f} s: {cid}")
        write_records(str(tmp / "records.jsonl"), records)
        site = tmp / "site"
        shutil.copytree(ROOT / "web" / "dist", site)
        write_demo_config(str(tmp / "records.jsonl"), cid, [portal.url], str(site / "demo-config.json"))
        query = EXAMPLE_QUERIES[0]
        web, _ = serve_web(str(site), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{web.server_address[1]}/"
        rows = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx = browser.new_context()
            page = ctx.new_page()
            rows.append(("visit 1, online, empty browser", visit(page, url, query)))
            page.close()
            page = ctx.new_page()
            rows.append(("visit 2, online, service worker", visit(page, url, query)))
            page.close()
            web.shutdown()
            web.server_close()
            portal.stop()
            ctx.set_offline(True)
            offline = []
            for i in range(a.runs):
                page = ctx.new_page()
                r = visit(page, url, query)
                page.close()
                offline.append(r)
                rows.append((f"visit {i + 3}, network off", r))
            browser.close()
    print(f"\n{'visit':<36} {'first result s':>15} {'ready s':>8} {'page-to-ready ms':>17} {'register ms':>12} {'SW':>4}")
    for name, r in rows:
        print(f"{name:<36} {r['first_result_s']:>15.2f} {r['ready_s']:>8.2f} {r['page_ready_ms']:>17.0f} "
              f"{r['register_ms']:>12.0f} {'yes' if r['controlled'] else 'no':>4}")
        steps = r["steps"]
        print(f"{'':<36} {', '.join(f'{k}: {v}' for k, v in zip(steps[::2], steps[1::2]))}")
    med = statistics.median(r["first_result_s"] for r in offline)
    print(f"\nnetwork off, time to first result: median {med:.2f} s over {a.runs} visits (target <= 3 s)")


if __name__ == "__main__":
    main()
