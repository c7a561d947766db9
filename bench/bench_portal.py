"""The local S5 portal under load and abuse (issue 10): prints numbers, asserts nothing.

    .venv/bin/python bench/bench_portal.py            # 200 uploads + 200 GETs, 1,000 half-open, 1 GiB upload
    .venv/bin/python bench/bench_portal.py --big-mib 256 --half-open 500   # quicker

The portal runs as a separate process (``python -m s5vec portal``), as users run it, so its peak RSS
(``VmHWM`` from /proc) is the portal's alone.  Clients are threads of this process.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pkg"))

from s5vec.s5.cid import blob_cid  # noqa: E402


def start_portal(directory: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "s5vec", "portal", "--dir", str(directory), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "pkg")})
    url = re.search(r"(http://\S+)", proc.stdout.readline()).group(1)
    return proc, url


def vm_kib(pid: int, field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def timed(fn, *a):
    t0 = time.perf_counter()
    try:
        ok = fn(*a)
    except Exception:  # noqa: BLE001 - a bench counts failures of any kind
        ok = False
    return ok, (time.perf_counter() - t0) * 1000


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def http_ok(url: str, data: bytes | None = None, expect: bytes | None = None) -> bool:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
        return r.status == 200 and (expect is None or body == expect)


def bench_parallel(url: str, n: int, size: int) -> None:
    blobs = [os.urandom(size) for _ in range(n)]
    with cf.ThreadPoolExecutor(n) as ex:
        t0 = time.perf_counter()
        ups = list(ex.map(lambda b: timed(http_ok, url + "/s5/upload", b), blobs))
        t_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        gets = list(ex.map(lambda b: timed(http_ok, f"{url}/s5/blob/{blob_cid(b)}", None, b), blobs))
        t_get = time.perf_counter() - t0
    for name, res, wall in (("uploads", ups, t_up), ("GETs", gets, t_get)):
        ms = [m for _, m in res]
        errors = sum(1 for ok, _ in res if not ok)
        print(f"{n} parallel {name} of {size} B: errors {errors}, p50 {pct(ms, 50):.0f} ms, "
              f"p99 {pct(ms, 99):.0f} ms, wall {wall:.2f} s")


def bench_half_open(url: str, n: int, probes: int) -> None:
    host, port = url[7:].rsplit(":", 1)
    cid = blob_cid(b"probe")
    http_ok(url + "/s5/upload", b"probe")
    socks = []
    for i in range(n):
        s = socket.create_connection((host, int(port)))
        if i % 3 == 1:
            s.sendall(b"GET /s5/blob/")  # half a request line
        elif i % 3 == 2:
            s.sendall(b"POST /s5/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc")  # stalled body
        socks.append(s)
    res = [timed(http_ok, f"{url}/s5/blob/{cid}", None, b"probe") for _ in range(probes)]
    ms = [m for _, m in res]
    print(f"{n} half-open connections held: {sum(ok for ok, _ in res)}/{probes} normal GETs served, "
          f"p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms")
    t0 = time.monotonic()
    closed = 0
    for s in socks:
        s.settimeout(max(0.05, 45 - (time.monotonic() - t0)))
        try:
            while s.recv(65536):
                pass
            closed += 1
        except (socket.timeout, OSError):
            pass
        s.close()
    print(f"  ... {closed}/{n} closed by the portal's deadlines within {time.monotonic() - t0:.1f} s")


def bench_big_upload(directory: Path, mib: int) -> None:
    proc, url = start_portal(directory, "--max-body", str((mib + 1) * 2**20))
    try:
        http_ok(url + "/s5/upload", b"warm-up")
        base = vm_kib(proc.pid, "VmRSS")
        host, port = url[7:].rsplit(":", 1)
        block = os.urandom(1 << 20)
        c = http.client.HTTPConnection(host, int(port), timeout=120)
        c.putrequest("POST", "/s5/upload")
        c.putheader("Content-Length", str(mib << 20))
        c.endheaders()
        t0 = time.perf_counter()
        for i in range(mib):
            c.send(block[:-4] + i.to_bytes(4, "little"))
        r = c.getresponse()
        body = r.read()
        dt = time.perf_counter() - t0
        peak = vm_kib(proc.pid, "VmHWM")
        print(f"{mib} MiB upload: HTTP {r.status} {json.loads(body).get('cid', body)[:20]}..., {dt:.1f} s "
              f"({mib / dt:.0f} MiB/s); portal RSS before {base / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB "
              f"(+{(peak - base) / 1024:.1f} MiB)")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parallel", type=int, default=200)
    ap.add_argument("--size", type=int, default=16_384, help="bytes per blob in the parallel test")
    ap.add_argument("--half-open", type=int, default=1000)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--big-mib", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_portal(Path(tmp) / "p")
        try:
            bench_parallel(url, args.parallel, args.size)
            bench_half_open(url, args.half_open, args.probes)
        finally:
            proc.terminate()
            proc.wait(10)
        bench_big_upload(Path(tmp) / "big", args.big_mib)


if __name__ == "__main__":
    main()
