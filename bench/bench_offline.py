"""The demo page's second visit with the network off: time to first result (target <= 3 s).

    .venv/bin/python bench/bench_offline.py                 # 20,000 demo videos, hybrid (as demo.sh)
    .venv/bin/python bench/bench_offline.py --n 5000 --runs 3

What it does: publishes ``s5vec.demo.demo_records(n)`` as demo.sh does (hybrid, recent_threshold
120d, float16 vectors) to a local portal, serves a copy of ``web/dist`` with a demo-config.json, and
in one fresh Chromium context:

  visit 1 (online, empty browser)   page load -> ready -> first "more like this" result
  visit 2 (online, service worker)  the same, runtime and chunks from the service worker
  visit 3.. (network off: web server and portal stopped, context offline)  the same, ``--runs`` times

"first result" = wall time from ``page.goto`` until the first result list is rendered (the sample
search is clicked as soon as the page says ready); "ready" is the page's own page-to-ready time.
Not a test: nothing is asserted. Chromium: /usr/bin/chromium (override with S5VEC_CHROMIUM).
"""
from __future__ import annotations

import argparse
import json
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

from s5vec.api import make_store, publish  # noqa: E402
from s5vec.demo import demo_records, write_demo_config  # noqa: E402
from s5vec.s5.portal import serve  # noqa: E402
from s5vec.webserver import serve_web  # noqa: E402

CHROMIUM = os.environ.get("S5VEC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def visit(page, url: str) -> dict[str, float]:
    t0 = time.perf_counter()
    page.goto(url + "index.html")
    page.wait_for_function("document.body.dataset.ready", timeout=180_000)
    if page.evaluate("document.body.dataset.ready") != "1":
        raise SystemExit(f"demo failed: {page.inner_text('#status')}")
    t_ready = time.perf_counter()
    page.locator("#samples li button.more").first.click()
    page.wait_for_function("document.querySelector('#search-stats').textContent.includes('results in')"
                           " || !document.querySelector('#error').hidden", timeout=60_000)
    if not page.locator("#error").is_hidden():
        raise SystemExit(f"search failed: {page.inner_text('#error')}")
    t1 = time.perf_counter()
    return {"first_result_s": t1 - t0, "ready_s": t_ready - t0,
            "page_ready_ms": float(page.evaluate("document.body.dataset.readyMs")),
            "register_ms": float(page.evaluate("document.body.dataset.offlineMs")),
            "steps": page.inner_text("#steps").replace("\n", ", "),
            "controlled": page.evaluate("navigator.serviceWorker.controller !== null")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
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
        records = list(demo_records(a.n, dim=384, seed=7))
        t = time.perf_counter()
        cid = publish(records, make_store([portal.url]), kind="hybrid",
                      params={"recent_threshold": "120d", "vectors_dtype": "float16"})
        print(f"published {a.n} x 384 hybrid in {time.perf_counter() - t:.1f} s: {cid}")
        (tmp / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        site = tmp / "site"
        shutil.copytree(ROOT / "web" / "dist", site)
        write_demo_config(str(tmp / "records.jsonl"), cid, [portal.url], str(site / "demo-config.json"), samples=20)
        web, _ = serve_web(str(site), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{web.server_address[1]}/"
        rows = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx = browser.new_context()
            page = ctx.new_page()
            rows.append(("visit 1, online, empty browser", visit(page, url)))
            page.close()
            page = ctx.new_page()
            rows.append(("visit 2, online, service worker", visit(page, url)))
            page.close()
            web.shutdown()
            web.server_close()
            portal.stop()
            ctx.set_offline(True)
            offline = []
            for i in range(a.runs):
                page = ctx.new_page()
                r = visit(page, url)
                page.close()
                offline.append(r)
                rows.append((f"visit {i + 3}, network off", r))
            browser.close()
    print(f"\n{'visit':<36} {'first result s':>15} {'ready s':>8} {'page-to-ready ms':>17} {'register ms':>12} {'SW':>4}")
    for name, r in rows:
        print(f"{name:<36} {r['first_result_s']:>15.2f} {r['ready_s']:>8.2f} {r['page_ready_ms']:>17.0f} "
              f"{r['register_ms']:>12.0f} {'yes' if r['controlled'] else 'no':>4}")
        print(f"{'':<36} start-up steps: {r['steps']}")
    med = statistics.median(r["first_result_s"] for r in offline)
    print(f"\nnetwork off, time to first result: median {med:.2f} s over {a.runs} visits (target <= 3 s)")


if __name__ == "__main__":
    main()
