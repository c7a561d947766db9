"""Long fuzz run: prints counts of outcomes, untyped errors and hangs (it asserts nothing).

    .venv/bin/python bench/bench_fuzz.py                      # 100,000 chunks + 10,000 worker requests
    .venv/bin/python bench/bench_fuzz.py --chunks 2000 --requests 500 --browser 0   # quick
    .venv/bin/python bench/bench_fuzz.py --browser 2000       # also 2,000 raw requests into the real worker

Three runs, all with the strategies of tests/fuzzkit.py (the CI fuzz tests use the same ones, bounded):

* chunks: random bytes and byte-mutated real chunks/manifests of flat, hnsw, ivf and hybrid
  indexes through ``layout.decode_manifest`` / ``decode_chunk``; every 10th one also through
  ``Database.open`` + two searches (the index loaders);
* worker requests: ``s5vec.rpc.handle(op, args)`` on CPython with random and near-valid
  requests against real local blob servers (one of them hangs); each must answer JSON with a known
  error name within 10 s;
* browser (``--browser N``): N raw protocol messages posted to the real worker in Chromium (not
  through the bridge, so the bridge's own checks are bypassed); counts replies, typed errors,
  requests left unanswered and worker deaths (a final ``version`` call must still answer).
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "pkg"), str(ROOT / "tests")]

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fuzzkit as fk  # noqa: E402
from s5vec import api, layout  # noqa: E402
from s5vec.store import ChunkStore  # noqa: E402

QUIET = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def run_chunks(n: int) -> None:
    blobs, manifests = fk.sample_index_blobs()
    valid = sorted(blobs)
    query = np.random.default_rng(1).standard_normal(8).astype(np.float32)
    outcomes: collections.Counter[str] = collections.Counter()
    untyped: collections.Counter[str] = collections.Counter()
    hangs = 0
    opened = 0
    t0 = time.perf_counter()
    inputs = st.one_of(st.binary(max_size=400), st.sampled_from(valid).flatmap(lambda c: fk.mutations(blobs[c])))

    @settings(max_examples=n, **QUIET)
    @given(inputs, st.integers(0, 9), st.sampled_from(sorted(manifests.values())))
    def one(data, pick, manifest):
        nonlocal hangs, opened
        try:
            outcomes[fk.run_bounded(lambda: fk.decode_any(data))] += 1
            if pick == 0:  # also through the loaders: re-address the mutated blob into an index
                chunks = [manifest] + [c["cid"] for c in layout.decode_manifest(blobs[manifest])["chunks"]]
                target = chunks[len(data) % len(chunks)]
                outcomes["open:" + fk.run_bounded(lambda: fk.open_with_mutated(blobs, manifest, target, data, query))] += 1
                opened += 1
        except fk.Hang:
            hangs += 1
        except Exception as e:  # noqa: BLE001 - what this run counts
            untyped[f"{type(e).__name__}: {str(e)[:100]}"] += 1

    one()
    dt = time.perf_counter() - t0
    total = sum(v for k, v in outcomes.items() if not k.startswith("open:")) + sum(untyped.values()) + hangs
    print(f"chunks: {total} fuzzed ({opened} also opened and searched) in {dt:.1f} s; "
          f"untyped errors {sum(untyped.values())}, hangs {hangs}")
    print("  outcomes:", dict(sorted(outcomes.items())))
    for k, v in untyped.most_common(10):
        print(f"  UNTYPED x{v}: {k}")


def _world():
    from blobserver import BlobServer, MirrorClient

    good, hanging = BlobServer(), BlobServer(mode="hang")
    x = np.random.default_rng(2).standard_normal((300, 8)).astype(np.float32)
    recs = [{"id": f"r{i}", "vector": x[i].tolist(), "metadata": {"g": i % 3, "t": f"t{i % 7}"}} for i in range(300)]
    cids = [api.publish(recs, ChunkStore(MirrorClient(good)), kind=k, params=p)
            for k, p in (("flat", None), ("ivf", {"nlist": 4}), ("hnsw", None), ("hybrid", {"nlist": 4}))]
    return good, hanging, cids


def run_requests(n: int) -> None:
    good, hanging, cids = _world()
    closed = "http://127.0.0.1:9"
    handles = []
    for c in cids:
        msg = fk.rpc_call("open", {"manifest": c, "portals": [good.url]})
        handles.append(msg["result"]["handle"])
    outcomes: collections.Counter[str] = collections.Counter()
    untyped: collections.Counter[str] = collections.Counter()
    hangs = 0
    t0 = time.perf_counter()

    @settings(max_examples=n, **QUIET)
    @given(fk.rpc_requests(handles, cids, [good.url, closed, hanging.url]))
    def one(req):
        nonlocal hangs
        op, args = req
        if op == "close":
            args = {"handle": -1}
        if isinstance(args, dict):
            t = args.get("timeoutMs")
            args["timeoutMs"] = 300 if t is None else min(t, 300) if isinstance(t, (int, float)) else t
        try:
            msg = fk.rpc_call(op, args)
            outcomes["ok" if msg["ok"] else msg["error"]["name"]] += 1
        except fk.Hang:
            hangs += 1
            print(f"  HANG: {op!r} {repr(args)[:300]}", flush=True)
        except Exception as e:  # noqa: BLE001
            untyped[f"{type(e).__name__}: {str(e)[:100]}"] += 1

    one()
    dt = time.perf_counter() - t0
    total = sum(outcomes.values()) + sum(untyped.values()) + hangs
    print(f"worker requests (CPython rpc.handle): {total} in {dt:.1f} s; untyped/InternalError "
          f"{sum(untyped.values()) + outcomes.get('InternalError', 0)}, hangs {hangs}")
    print("  outcomes:", dict(sorted(outcomes.items())))
    for k, v in untyped.most_common(10):
        print(f"  UNTYPED x{v}: {k}")
    good.stop()
    hanging.stop()


def run_browser(n: int, build: bool) -> None:
    import subprocess

    from playwright.sync_api import sync_playwright

    from s5vec.webserver import serve_web

    dist = ROOT / "web" / "dist"
    if build or not (dist / "worker.js").exists():
        subprocess.run(["bash", str(ROOT / "build_wheel.sh")], cwd=ROOT, check=True)
    shutil.copy(ROOT / "e2e" / "harness.html", dist / "harness.html")
    good, hanging, cids = _world()
    closed = "http://127.0.0.1:9"
    reqs = []

    @settings(max_examples=n, **QUIET)
    @given(fk.rpc_requests([1, 2, 3, 4], cids, [good.url, closed, hanging.url]))
    def collect(req):
        op, args = req
        if isinstance(args, dict):
            t = args.get("timeoutMs")
            args["timeoutMs"] = 300 if t is None else min(t, 300) if isinstance(t, (int, float)) else t
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 50_000))  # json.dumps of the deepest fuzzed filters
        try:
            text = json.dumps([op, args], allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return  # memoryviews (the bridge sends Float32Arrays) and NaN (not JSON): covered by e2e
        finally:
            sys.setrecursionlimit(limit)
        reqs.append(text)

    collect()
    server, _ = serve_web(str(dist), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    t0 = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(url + "harness.html")
        page.wait_for_function("window.harnessReady === true")
        res = page.evaluate(
            """async ([reqs, manifests, portal]) => {
                const { MSG } = await import("./protocol.js");
                let w, pending, nextId = 1, errorEvents = 0;
                const boot = async () => {
                    w = new Worker("./worker.js", { type: "module" });
                    pending = new Map();
                    w.addEventListener("error", (e) => { errorEvents++; e.preventDefault(); });
                    const ready = new Promise((res, rej) => w.addEventListener("message", (ev) => {
                        const m = ev.data;
                        if (m.type === MSG.READY) res();
                        if (m.type === MSG.STARTUP_FAILED) rej(new Error(m.error.message));
                        if (m.type === MSG.REPLY && pending.has(m.id)) { pending.get(m.id)(m); pending.delete(m.id); }
                    }));
                    w.postMessage({ type: MSG.INIT, pyodideIndexUrl: null });
                    await ready;
                    for (const m of manifests) await call("open", { manifest: m, portals: [portal] });
                };
                const call = (op, args, ms = 8000) => new Promise((res) => {
                    const id = nextId++;
                    const t = setTimeout(() => { pending.delete(id); res({ hang: true }); }, ms);
                    pending.set(id, (m) => { clearTimeout(t); res(m); });
                    try { w.postMessage({ type: MSG.CALL, id, op, args }); }
                    catch (e) { clearTimeout(t); pending.delete(id); res({ sendError: String(e) }); }
                });
                await boot();
                const counts = {}, offenders = [];
                let hangs = 0, sendErrors = 0, deaths = 0;
                for (const text of reqs) {
                    const [op, args] = JSON.parse(text);  // deep documents: JSON.parse copes, evaluate args do not
                    const a = (args && typeof args === "object" && !Array.isArray(args) && "vector" in args && Array.isArray(args.vector))
                        ? { ...args, vector: new Float32Array(args.vector) } : args;
                    const m = await call(op === "close" ? "stats" : op, a);
                    if (m.sendError) { sendErrors++; continue; }
                    if (m.hang) {
                        hangs++;
                        const probe = await call("version", {}, 5000);
                        if (probe.hang) {  // the worker is gone: count it, remember why, start a new one
                            deaths++;
                            offenders.push(text.slice(0, 300));
                            w.terminate();
                            await boot();
                        } else offenders.push("(unanswered, worker alive) " + text.slice(0, 300));
                        continue;
                    }
                    const k = m.ok ? "ok" : m.error.name;
                    counts[k] = (counts[k] || 0) + 1;
                }
                const last = await call("version", {});
                w.terminate();
                return { counts, hangs, sendErrors, died: deaths, errorEvents, offenders: offenders.slice(0, 5),
                         aliveAtEnd: !!(last && last.ok) };
            }""",
            [reqs, cids, good.url],
        )
        browser.close()
    server.shutdown()
    good.stop()
    hanging.stop()
    dt = time.perf_counter() - t0
    internal = res["counts"].get("InternalError", 0)
    print(f"browser worker (Chromium, raw protocol): {len(reqs)} requests in {dt:.1f} s; worker deaths "
          f"{res['died']}, alive at the end {res['aliveAtEnd']}, unanswered {res['hangs']}, "
          f"InternalError {internal}, not sendable {res['sendErrors']}")
    print("  outcomes:", dict(sorted(res["counts"].items())))
    for o in res["offenders"]:
        print("  UNANSWERED:", o)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--browser", type=int, default=0, help="raw requests into the Chromium worker (0: skip)")
    ap.add_argument("--build", action="store_true", help="rebuild web/dist first")
    a = ap.parse_args()
    if a.chunks:
        run_chunks(a.chunks)
    if a.requests:
        run_requests(a.requests)
    if a.browser:
        run_browser(a.browser, a.build)


if __name__ == "__main__":
    main()
