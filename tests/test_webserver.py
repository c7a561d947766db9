"""s5vec.webserver: MIME types Pyodide needs, no-cache, CORS, and run_web's start-up line."""
from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from s5vec.webserver import serve_web

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def site(tmp_path):
    for name in ["a.wasm", "b.mjs", "c.js", "d.whl", "e.json", "index.html"]:
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def head(url):
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as r:
        return r.headers


def test_serve_web_types_and_headers(site):
    server, thread = serve_web(str(site), "127.0.0.1", 0)
    try:
        base = "http://127.0.0.1:%d/" % server.server_address[1]
        want = {"a.wasm": "application/wasm", "b.mjs": "text/javascript", "c.js": "text/javascript",
                "d.whl": "application/octet-stream", "e.json": "application/json"}
        for name, ctype in want.items():
            h = head(base + name)
            assert h["Content-Type"] == ctype, name
            assert h["Cache-Control"] == "no-cache"
            assert h["Access-Control-Allow-Origin"] == "*"
    finally:
        server.shutdown()
        server.server_close()
    thread.join(5)


def test_serve_web_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        serve_web(str(tmp_path / "nope"))


def test_run_web_prints_url_and_serves(site):
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from s5vec.webserver import run_web; run_web(sys.argv[1], port=0)", str(site)],
        stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT / "pkg")},
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith(f"s5vec web serving {site} at http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert head(url + "a.wasm")["Content-Type"] == "application/wasm"
    finally:
        proc.terminate()
        proc.wait(10)
