"""HTTP API throughput: ``POST /v1/search`` QPS and p50/p99 with N concurrent clients against a
real ``s5vec serve`` process, plus the time from starting ``s5vec serve`` to ready, and
(``--mixed``) the 50-client mixed search/upsert run of issue 12 with lost writes counted.

    .venv/bin/python bench/bench_serve.py                      # 20,000 demo videos x 384, hybrid
    .venv/bin/python bench/bench_serve.py --n 58000            # the size of the film catalogue
    .venv/bin/python bench/bench_serve.py --cid CID --portal URL   # an index already published
    .venv/bin/python bench/bench_serve.py --mixed --seconds 30

The load generator runs on the same 2 cores as the server; it is as light as it can be made:
``--load raw`` (default: keep-alive HTTP/1.1 on raw asyncio streams, the 200 queries in turn),
``--load ab`` (ApacheBench, C, but one query body repeated), ``--load python`` (httpx clients,
the heaviest). Client-side latency includes the generator's own queueing.
Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pkg"))

import numpy as np  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "pkg"))
TOKEN = "bench-token"


def build_films(n: int | None, portal_url: str) -> tuple[str, list[list[float]], list[str]]:
    """The ggplot2movies films (58,788), embedded with the static MiniLM table, published as the
    tab's film index is (hybrid, SQ8, keyword titles); queries: 200 films' own vectors, and titles."""
    import random

    from s5vec import api, embed
    from s5vec.demo import movie_records

    t0 = time.perf_counter()
    records = list(movie_records(n))
    model = embed.load_local()
    embed.embed_records(records, model)
    store = api.make_store([portal_url], timeout=60)
    model_cid = embed.publish_model(model, store)
    cid = api.publish(records, store, kind="hybrid", params={"codec": "sq8", "store_full": False},
                      text_field="text", extra=embed.manifest_extra(model_cid, "text"))
    print(f"published {len(records)} films in {time.perf_counter() - t0:.1f} s: {cid}", flush=True)
    rng = random.Random(7)
    picked = rng.sample(records, 200)
    return cid, [r["vector"] if isinstance(r["vector"], list) else list(map(float, r["vector"])) for r in picked], \
        [r["metadata"]["title"] for r in picked]


def build(n: int, dim: int, portal_url: str) -> tuple[str, list[list[float]]]:
    from s5vec import api
    from s5vec.demo import demo_records

    recs = list(demo_records(n + 200, dim=dim))
    queries = [r["vector"] for r in recs[n:]]
    t0 = time.perf_counter()
    cid = api.publish(recs[:n], api.make_store([portal_url], timeout=60), kind="hybrid",
                      params={"recent_threshold": "90d", "vectors_dtype": "float16"})
    print(f"published {n} x {dim} hybrid in {time.perf_counter() - t0:.1f} s: {cid}", flush=True)
    return cid, queries


def start_server(cid: str, portal: str, workdir: Path, workers: int) -> tuple[subprocess.Popen, str, float, float]:
    tok = workdir / "token"
    tok.write_text(TOKEN)
    args = [sys.executable, "-m", "s5vec", "serve", cid, "--portal", portal, "--port", "0"]
    args += ["--workers", str(workers)] if workers > 1 else ["--auth-token-file", str(tok)]  # many: reads only
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=ENV)
    line = proc.stdout.readline()
    url = line.split("listening on", 1)[1].split()[0]
    t_listen = time.perf_counter() - t0
    import httpx
    while True:
        try:
            if httpx.get(f"{url}/v1/health").json().get("status") == "ready":
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    return proc, url, t_listen, time.perf_counter() - t0


# -- load generators -----------------------------------------------------------------------------
def _py_worker(url: str, bodies: list[bytes], conc: int, seconds: float, out: "mp.Queue") -> None:
    import httpx

    async def one(i: int, stop: float, lat: list[float], errs: list[int]) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            n = i
            while time.monotonic() < stop:
                t = time.perf_counter()
                r = await c.post("/v1/search", content=bodies[n % len(bodies)],
                                 headers={"content-type": "application/json"})
                lat.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    errs.append(r.status_code)
                n += conc

    async def main() -> tuple[list[float], list[int]]:
        lat: list[float] = []
        errs: list[int] = []
        stop = time.monotonic() + seconds
        await asyncio.gather(*(one(i, stop, lat, errs) for i in range(conc)))
        return lat, errs

    out.put(asyncio.run(main()))


def load_python(url: str, bodies: list[bytes], clients: int, seconds: float, procs: int) -> dict:
    q: mp.Queue = mp.Queue()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    ps = [mp.Process(target=_py_worker, args=(url, bodies, c, seconds, q)) for c in per if c]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    lat, errs = [], []
    for _ in ps:
        a, b = q.get()
        lat += a
        errs += b
    for p in ps:
        p.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat)
    return {"requests": ms.size, "errors": len(errs), "qps": ms.size / seconds,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "wall": wall}


def load_raw(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """A minimal keep-alive HTTP/1.1 client on raw asyncio streams (uvloop when installed):
    each of ``clients`` connections sends the next query body as soon as its last answer is in.
    Much lighter than httpx, so more of the 2 cores go to the server; queries vary (ab's cannot)."""
    host, port = url.split("//", 1)[1].split(":")
    reqs = [(f"POST /v1/search HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
    lat: list[float] = []
    errs = [0]

    async def one(i: int, stop: float) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        n = i
        while time.monotonic() < stop:
            t = time.perf_counter()
            writer.write(reqs[n % len(reqs)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            lat.append((time.perf_counter() - t) * 1000)
            if not head.startswith(b"HTTP/1.1 200"):
                errs[0] += 1
            n += clients
        writer.close()

    async def main() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(one(i, stop) for i in range(clients)))

    try:
        import uvloop
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    ms = np.array(lat)
    return {"requests": ms.size, "errors": errs[0], "qps": ms.size / seconds,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def load_ab(url: str, body: bytes, clients: int, seconds: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        f.write(body)
    out = subprocess.run(["ab", "-k", "-q", "-t", str(int(seconds)), "-n", "10000000", "-c", str(clients),
                          "-p", f.name, "-T", "application/json", f"{url}/v1/search"],
                         capture_output=True, text=True)
    os.unlink(f.name)
    txt = out.stdout
    def grab(prefix: str) -> str:
        return next(l for l in txt.splitlines() if l.strip().startswith(prefix)).split(":", 1)[1]
    pct = {int(l.split("%")[0]): float(l.split()[1]) for l in txt.splitlines()
           if l.strip() and l.strip()[0].isdigit() and "%" in l}
    # ab counts a body whose length differs from the first one as "failed" (Length); ours vary
    # (scores, timings), so only connection/receive/exception failures and non-2xx are errors
    detail = next((l for l in txt.splitlines() if "(Connect:" in l), "")
    hard = sum(int(part.split(":")[1]) for part in detail.strip(" ()").split(",")
               if part.strip().split(":")[0] in ("Connect", "Receive", "Exceptions")) if detail else 0
    non2xx = int(grab("Non-2xx responses").strip()) if "Non-2xx" in txt else 0
    return {"requests": int(grab("Complete requests").strip()), "errors": hard + non2xx,
            "qps": float(grab("Requests per second").split()[0]), "p50": pct.get(50), "p99": pct.get(99)}


def _holds(db, id: str) -> bool:
    from s5vec.errors import UnknownIdError

    try:
        db.get(id)
        return True
    except UnknownIdError:
        return False


def mixed(url: str, clients: int, seconds: float, dim: int, portal: str) -> None:
    import httpx

    from s5vec import api

    auth = {"Authorization": f"Bearer {TOKEN}"}
    start = httpx.get(f"{url}/v1/info").json()["count"]
    written: set[str] = set()
    errors: list = []
    lat: list[float] = []

    async def client(n: int, stop: float) -> None:
        rng = np.random.default_rng(n)
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            i = 0
            while time.monotonic() < stop:
                i += 1
                t = time.perf_counter()
                if rng.random() < 0.2:
                    recs = [{"id": f"mix-{n}-{i}-{j}", "vector": rng.standard_normal(dim).tolist(),
                             "metadata": {"title": f"mixed video {n} {i} {j}", "client": n}, "timestamp": time.time()} for j in range(3)]
                    r = await c.post("/v1/records", json={"records": recs}, headers=auth)
                    if r.status_code == 200:
                        written.update(x["id"] for x in recs)
                    else:
                        errors.append(r.text[:100])
                else:
                    r = await c.post("/v1/search", json={"vector": rng.standard_normal(dim).tolist(), "k": 10})
                    if r.status_code != 200:
                        errors.append(r.text[:100])
                lat.append((time.perf_counter() - t) * 1000)

    async def main() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(client(n, stop) for n in range(clients)))

    asyncio.run(main())
    r = httpx.post(f"{url}/v1/commit", headers=auth, timeout=600).json()
    db = api.Database.open(r["manifest"], [portal])
    lost = sum(1 for i in written if not _holds(db, i))
    ms = np.array(lat)
    print(f"mixed: {clients} clients x {seconds:g} s: {ms.size} requests ({ms.size / seconds:.0f}/s), "
          f"errors {len(errors)}, {len(written)} records written, lost after commit+reopen {lost} "
          f"(count {db.info()['count']} = {start} + {db.info()['count'] - start}); "
          f"client p50 {np.percentile(ms, 50):.1f} ms p99 {np.percentile(ms, 99):.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["demo", "films"], default="demo",
                    help="demo: synthetic videos (--n, --dim); films: the 58,788 ggplot2movies films, embedded")
    ap.add_argument("--text", action="store_true", help="films: also POST /v1/search with text (the titles)")
    ap.add_argument("--n", type=int, default=None, help="records (default 20,000 demo videos / every film)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--cid")
    ap.add_argument("--portal")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--load", choices=["raw", "ab", "python"], default="raw",
                    help="raw: light asyncio client, varied queries (default); ab: ApacheBench, one query; "
                         "python: httpx clients in --procs processes")
    ap.add_argument("--procs", type=int, default=1, help="python load generator processes")
    ap.add_argument("--workers", type=int, default=1, help="s5vec serve --workers (read-only when > 1)")
    ap.add_argument("--mixed", action="store_true", help="also the 50-client mixed search/upsert run")
    ap.add_argument("--mixed-clients", type=int, default=50)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    portal_srv = None
    try:
        titles: list[str] = []
        if args.data == "demo" and args.n is None:
            args.n = 20_000
        if args.data == "films":
            from s5vec.s5.portal import serve as serve_portal
            portal_srv, _ = serve_portal(workdir / "portal")
            portal = portal_srv.url
            cid, queries, titles = build_films(args.n, portal)
        elif args.cid:
            cid, portal = args.cid, args.portal
            from itertools import islice

            from s5vec.demo import demo_records
            # queries: the next 200 demo videos after the first --n (the demo index's distribution)
            queries = [r["vector"] for r in islice(demo_records(args.n + 200, dim=args.dim), args.n, None)]
        else:
            from s5vec.s5.portal import serve as serve_portal
            portal_srv, _ = serve_portal(workdir / "portal")
            portal = portal_srv.url
            cid, queries = build(args.n, args.dim, portal)
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores, shared)")
        proc, url, t_listen, t_ready = start_server(cid, portal, workdir, args.workers)
        print(f"s5vec serve: listening after {t_listen * 1000:.0f} ms, ready (index open) after {t_ready * 1000:.0f} ms")
        try:
            bodies = [json.dumps({"vector": q, "k": 10}).encode() for q in queries]
            import httpx
            for b in bodies[:50]:  # warm: the IVF lists a query touches are fetched once
                httpx.post(f"{url}/v1/search", content=b, headers={"content-type": "application/json"})
            kind = args.load
            before = httpx.get(f"{url}/v1/stats").json()
            if kind == "ab":
                res = load_ab(url, bodies[0], args.clients, args.seconds)
            elif kind == "raw":
                res = load_raw(url, bodies, args.clients, args.seconds)
            else:
                res = load_python(url, bodies, args.clients, args.seconds, args.procs)
            st = httpx.get(f"{url}/v1/stats").json()
            print(f"POST /v1/search (vectors), {args.clients} clients, {args.seconds:g} s, load={kind}, workers={args.workers}: "
                  f"{res['qps']:.0f} QPS, client p50 {res['p50']:.2f} ms, p99 {res['p99']:.2f} ms, "
                  f"{res['requests']} requests, {res['errors']} errors")
            print(f"  server-side (/v1/stats of one worker, last {st['latency_ms']['window']} requests): "
                  f"p50 {st['latency_ms']['p50']} ms, p99 {st['latency_ms']['p99']} ms; "
                  f"queries {st['queries'] - before['queries']}")
            if args.text and titles:
                tbodies = [json.dumps({"text": t, "k": 10}).encode() for t in titles]
                for b in tbodies[:50]:
                    httpx.post(f"{url}/v1/search", content=b, headers={"content-type": "application/json"})
                res = load_raw(url, tbodies, args.clients, args.seconds)
                print(f"POST /v1/search (text), {args.clients} clients, {args.seconds:g} s: {res['qps']:.0f} QPS, "
                      f"client p50 {res['p50']:.2f} ms, p99 {res['p99']:.2f} ms, {res['requests']} requests, "
                      f"{res['errors']} errors")
            print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            if args.mixed and args.workers > 1:
                print("mixed run skipped: --workers > 1 serves reads only")
            elif args.mixed:
                mixed(url, args.mixed_clients, args.seconds, len(queries[0]), portal)
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        if portal_srv is not None:
            portal_srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
