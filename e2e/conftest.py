"""End-to-end fixtures: the built browser bundle, a static web server, S5 portals, real Chromium.

Build policy: ``bash build_wheel.sh`` runs once per test session (about 3 s with a warm
``.cache/wheels``), so the bundle under test always matches the working tree.  Set
``S5VEC_SKIP_BUILD=1`` to reuse an existing ``web/dist`` as is.

Pages are on ``http://127.0.0.1:<web port>/``; portals run on other ports (other origins), so
every blob fetch from the worker is a CORS request.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "web" / "dist"
sys.path.insert(0, str(ROOT / "pkg"))
sys.path.insert(0, str(ROOT / "tests"))  # the shared test kit (tests/kit.py)

from s5vec.webserver import serve_web  # noqa: E402

CHROMIUM = os.environ.get("S5VEC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


# ---------------------------------------------------------------- browser (pytest-playwright overrides)

@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


# ---------------------------------------------------------------- bundle and servers

@pytest.fixture(scope="session")
def web_dist() -> Path:
    if not (os.environ.get("S5VEC_SKIP_BUILD") and (DIST / "s5vec.js").exists()):
        subprocess.run(["bash", str(ROOT / "build_wheel.sh")], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)})
    shutil.copy(ROOT / "e2e" / "harness.html", DIST / "harness.html")
    return DIST


@pytest.fixture(scope="session")
def web_url(web_dist: Path):
    server, _ = serve_web(str(web_dist), "127.0.0.1", 0)
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def bad_mime_pyodide_url(web_dist: Path):
    """The same Pyodide files, but served with .wasm as application/octet-stream (the hang pitfall)."""
    server, _ = serve_web(str(web_dist), "127.0.0.1", 0, mime_overrides={".wasm": "application/octet-stream"})
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}/pyodide/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def portals(tmp_path_factory):
    """Two independent local S5 portals (separate blob directories, separate origins)."""
    from s5vec.s5.portal import serve

    servers = [serve(tmp_path_factory.mktemp(f"portal{i}"))[0] for i in (1, 2)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def closed_port_url() -> str:
    """A localhost URL nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


FILM_COUNT = 8000  # a spread subset of the 58,788 films: quick to embed, still full of shared title words


@pytest.fixture(scope="session")
def film_index(portals, tmp_path_factory):
    """The film collection embedded by the model built at set-up, published once per session with
    its keyword index and model to portal 1: {"cid", "records", "path", "urls", "ref" (CPython Database)}."""
    from s5vec import api, embed
    from s5vec.demo import movie_records, write_records

    records = list(movie_records(FILM_COUNT))
    model = embed.load_local()
    embed.embed_records(records, model)
    store = api.make_store([portals[0].url])
    model_cid = embed.publish_model(model, store)
    cid = api.publish(records, store, kind="hybrid", params={"codec": "sq8", "store_full": False}, text_field="text",
                      extra=embed.manifest_extra(model_cid, "text"))
    path = tmp_path_factory.mktemp("films") / "films.jsonl"
    write_records(str(path), records)
    urls = [portals[0].url]
    return {"cid": cid, "records": records, "path": path, "urls": urls, "ref": api.Database.open(cid, urls)}


# ---------------------------------------------------------------- pages

def open_harness(page, web_url: str):
    page.on("console", lambda m: print(f"[browser {m.type}] {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: print(f"[browser pageerror] {e}"))
    page.goto(web_url + "harness.html")
    page.wait_for_function("window.harnessReady === true")
    return Bridge(page)


@pytest.fixture
def harness(page, web_url):
    """A fresh page (fresh worker) on the harness."""
    return open_harness(page, web_url)


@pytest.fixture(scope="session")
def shared_harness(browser, web_url):
    """One page (one booted worker) shared by tests that do not care about start-up."""
    context = browser.new_context()
    page = context.new_page()
    bridge = open_harness(page, web_url)
    bridge.js("return await S5Vec.runtime()", timeout=120_000)
    yield bridge
    context.close()


class Bridge:
    """Run JS against the bridge in a page; rejections come back as data, not exceptions."""

    def __init__(self, page) -> None:
        self.page = page

    def run(self, body: str, arg: Any = None, timeout: float = 60_000) -> dict:
        """Run ``body`` (an async function body seeing ``arg``); returns
        ``{"ok": True, "value": ...}`` or ``{"ok": False, "name", "message", "isS5VecError"}``."""
        self.page.set_default_timeout(timeout)
        return self.page.evaluate(
            """async ([body, arg]) => {
                const fn = new Function("arg", `return (async () => { ${body} })();`);
                try {
                    return { ok: true, value: await fn(arg) };
                } catch (e) {
                    return { ok: false, name: e && e.name, message: String(e && e.message),
                             isS5VecError: e instanceof window.S5VecError };
                }
            }""",
            [body, arg],
        )

    def js(self, body: str, arg: Any = None, timeout: float = 60_000) -> Any:
        """Like :meth:`run` but raises AssertionError on a rejection."""
        res = self.run(body, arg, timeout)
        assert res["ok"], f"bridge call rejected: {res.get('name')}: {res.get('message')}"
        return res["value"]

    # convenience wrappers
    def open(self, manifest: str, portals: list[str], **opts) -> int:
        """Open a database; returns a key into window.dbs."""
        return self.js(
            """const db = await S5Vec.open({ manifest: arg.manifest, portals: arg.portals, ...arg.opts });
               const key = Object.keys(window.dbs).length + 1; window.dbs[key] = db; return key;""",
            {"manifest": manifest, "portals": portals, "opts": opts},
        )

    def search(self, key: int, vector, k: int = 10, filter=None, params=None, f32: bool = True) -> dict:
        """Search; returns the run() result dict; value = {"hits", "stats"}."""
        return self.run(
            """const db = window.dbs[arg.key];
               const v = arg.f32 ? new Float32Array(arg.vector) : arg.vector;
               const opts = { k: arg.k };
               if (arg.filter !== null) opts.filter = arg.filter;
               if (arg.params !== null) opts.params = arg.params;
               const hits = await db.search(v, opts);
               return { hits, stats: db.lastStats };""",
            {"key": key, "vector": [float(x) for x in vector], "k": k, "filter": filter, "params": params, "f32": f32},
        )
