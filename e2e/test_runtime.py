"""The browser runtime: worker start-up in real Chromium, numpy version, start-up timeout, TypeScript types."""
from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["load-pyodide", "load-numpy", "load-wheels", "import-s5vec"]


def test_web_server_mime_types(web_url):
    expect = {
        "pyodide/pyodide.asm.wasm": "application/wasm",
        "pyodide/pyodide.mjs": "text/javascript",
        "s5vec.js": "text/javascript",
        "worker.js": "text/javascript",
        "wheels/manifest.json": "application/json",
        "pyodide/numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl": "application/octet-stream",
    }
    for path, ctype in expect.items():
        req = urllib.request.Request(web_url + path, method="HEAD")
        with urllib.request.urlopen(req) as r:
            assert r.headers["Content-Type"] == ctype, path
            assert r.headers["Cache-Control"] == "no-cache"


def test_worker_boots_with_official_numpy(harness):
    t0 = time.perf_counter()
    info = harness.js(
        """const rt = await S5Vec.runtime({ onProgress: (e) => window.progress.push(e) });
           return { rt, progress: window.progress };""",
        timeout=120_000,
    )
    wall = time.perf_counter() - t0
    rt, progress = info["rt"], info["progress"]
    assert rt["numpyVersion"] == "2.0.2"
    assert rt["s5vecVersion"]
    assert rt["pythonVersion"].startswith("3.12")
    assert rt["platform"] == "emscripten"
    assert rt["pyodideVersion"] == "0.27.7"
    # every named step reported start and done, in order
    assert [e["step"] for e in progress if e["phase"] == "start"] == STEPS
    assert [e["step"] for e in progress if e["phase"] == "done"] == STEPS
    assert set(rt["steps"]) == set(STEPS)
    print(f"\nstart-up in Chromium: total {rt['startupMs']:.0f} ms (wall {wall * 1000:.0f} ms); "
          + ", ".join(f"{s} {rt['steps'][s]:.0f} ms" for s in STEPS))


def test_one_worker_shared_by_all_calls(harness):
    res = harness.js(
        """const [a, b] = await Promise.all([S5Vec.runtime(), S5Vec.runtime()]);
           const c = await S5Vec.runtime();
           return { same: a === b && b === c, numpy: c.numpyVersion };""",
        timeout=120_000,
    )
    assert res == {"same": True, "numpy": "2.0.2"}


def test_startup_timeout_on_wrong_wasm_mime_type(harness, bad_mime_pyodide_url):
    t0 = time.perf_counter()
    res = harness.run(
        "return await S5Vec.runtime({ pyodideIndexUrl: arg, startTimeoutMs: 8000 });",
        bad_mime_pyodide_url,
        timeout=30_000,
    )
    elapsed = time.perf_counter() - t0
    assert not res["ok"]
    assert res["isS5VecError"], res
    assert res["name"] == "StartupTimeoutError", res
    assert "load-pyodide" in res["message"]
    assert "application/wasm" in res["message"]
    assert elapsed < 20
    # the failed worker was discarded: a later call with the good distribution starts a fresh one
    rt = harness.js("return await S5Vec.runtime();", timeout=120_000)
    assert rt["numpyVersion"] == "2.0.2"


def test_missing_worker_rejects(harness):
    res = harness.run("return await S5Vec.runtime({ workerUrl: './no-such-worker.js', startTimeoutMs: 20000 });")
    assert not res["ok"]
    assert res["name"] == "WorkerError"


@pytest.mark.skipif(not shutil.which("npx"), reason="node/npx not installed")
def test_typescript_example_typechecks():
    proc = subprocess.run(["npx", "--no-install", "tsc", "--noEmit", "-p", "web/tsconfig.json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_wheel_sha256_mismatch_refuses_to_start(web_dist, tmp_path, page):
    """A wheel whose bytes do not match wheels/manifest.json is never installed."""
    import json

    from s5vec.webserver import serve_web

    from .conftest import open_harness

    copy = tmp_path / "dist"
    shutil.copytree(web_dist, copy)
    manifest = json.loads((copy / "wheels" / "manifest.json").read_text())
    victim = manifest["wheels"][0]["file"]
    data = bytearray((copy / "wheels" / victim).read_bytes())
    data[-100] ^= 0xFF
    (copy / "wheels" / victim).write_bytes(bytes(data))
    server, _ = serve_web(str(copy), "127.0.0.1", 0)
    try:
        bridge = open_harness(page, "http://127.0.0.1:%d/" % server.server_address[1])
        res = bridge.run("return await S5Vec.runtime();", timeout=120_000)
        assert not res["ok"]
        assert res["name"] == "IntegrityError", res
        assert victim in res["message"] and "sha256" in res["message"] and "load-wheels" in res["message"]
    finally:
        server.shutdown()
        server.server_close()


def test_pyodide_from_another_distribution(harness, web_dist, tmp_path):
    """``pyodideIndexUrl`` points the worker at another Pyodide distribution (here a copy of the
    bundled one on a different origin, as a CDN or self-hosted copy would be); numpy comes from it."""
    from s5vec.webserver import serve_web

    other = tmp_path / "cdn"
    shutil.copytree(web_dist / "pyodide", other / "pyodide-0.27.7")
    server, _ = serve_web(str(other), "127.0.0.1", 0)
    host, port = server.server_address[:2]
    base = f"http://{host}:{port}/pyodide-0.27.7/"
    seen: list[str] = []
    harness.page.on("request", lambda r: seen.append(r.url))
    try:
        rt = harness.js("return await S5Vec.runtime({ pyodideIndexUrl: arg });", base, timeout=120_000)
    finally:
        server.shutdown()
        server.server_close()
    assert rt["numpyVersion"] == "2.0.2" and rt["pyodideVersion"] == "0.27.7"
    fetched = {u.rsplit("/", 1)[-1] for u in seen if u.startswith(base)}
    assert {"pyodide.asm.wasm", "pyodide-lock.json", "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl"} <= fetched, seen
    assert not any("/pyodide/pyodide.asm.wasm" in u for u in seen if not u.startswith(base))
