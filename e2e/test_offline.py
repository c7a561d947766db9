"""Offline-first in real Chromium with the real service worker (web/sw.js, Workbox).

Each test gets its own browser context (its own service worker registration and storage) and its
own web server and portal, so "the network is off" is real: the servers are stopped and the context
is set offline, and the page must boot and search from what the service worker stored.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from s5vec.s5.cid import BlobId
from s5vec.webserver import serve_web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from kit import assert_same_hits  # noqa: E402

DIM = 384


class Servers:
    """A web server on a copy of the bundle and an S5 portal, both stoppable and restartable on their ports."""

    def __init__(self, site: Path, blobs: Path) -> None:
        from s5vec.s5.portal import serve

        self.site, self.blobs = site, blobs
        self.web, _ = serve_web(str(site), "127.0.0.1", 0)
        self.web_port = self.web.server_address[1]
        self.portal, _ = serve(blobs)
        self.portal_port = int(self.portal.url.rsplit(":", 1)[1])

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    @property
    def portal_url(self) -> str:
        return f"http://127.0.0.1:{self.portal_port}"

    def stop(self) -> None:
        if self.web is not None:
            self.web.shutdown()
            self.web.server_close()
            self.web = None
        if self.portal is not None:
            self.portal.stop()
            self.portal = None

    def start(self) -> None:
        from s5vec.s5.portal import serve

        if self.web is None:
            self.web, _ = serve_web(str(self.site), "127.0.0.1", self.web_port)
        if self.portal is None:
            self.portal, _ = serve(self.blobs, port=self.portal_port)


@pytest.fixture(scope="module")
def collection(web_dist, tmp_path_factory):
    """1,500 demo videos published as IVF (lists fetched lazily) into a portal directory."""
    from s5vec.api import make_store, publish
    from s5vec.demo import demo_records
    from s5vec.s5.portal import serve

    blobs = tmp_path_factory.mktemp("offline-blobs")
    records = list(demo_records(1500, dim=DIM, seed=11))
    portal, _ = serve(blobs)
    try:
        cid = publish(records, make_store([portal.url]), kind="ivf", params={"nlist": 16, "nprobe": 2})
    finally:
        portal.stop()
    path = tmp_path_factory.mktemp("offline-data") / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"cid": cid, "blobs": blobs, "records_path": path, "records": records}


@pytest.fixture
def servers(web_dist, collection, tmp_path):
    """A private copy of the bundle (with a demo-config.json naming this test's portal) + a portal."""
    from s5vec.demo import write_demo_config

    site = tmp_path / "site"
    shutil.copytree(web_dist, site)
    shutil.copy(ROOT / "e2e" / "harness.html", site / "harness.html")
    s = Servers(site, collection["blobs"])
    write_demo_config(str(collection["records_path"]), collection["cid"], [s.portal_url],
                      str(site / "demo-config.json"), samples=10)
    s.config = json.loads((site / "demo-config.json").read_text())
    yield s
    s.stop()


@pytest.fixture
def context(browser):
    ctx = browser.new_context()
    yield ctx
    ctx.close()


def watch(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: print(f"[browser {m.type}] {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def load_demo(page, url: str) -> None:
    page.goto(url + "index.html")
    page.wait_for_function("document.body.dataset.ready", timeout=120_000)
    assert page.evaluate("document.body.dataset.ready") == "1", page.inner_text("#status")


def demo_search(page, sample: int = 0) -> list[str]:
    page.evaluate("document.querySelector('#search-stats').textContent = ''")
    page.locator("#samples li button.more").nth(sample).click()
    page.wait_for_function("document.querySelector('#search-stats').textContent.includes('results in')"
                           " || !document.querySelector('#error').hidden")
    assert page.locator("#error").is_hidden(), page.inner_text("#error")
    return page.eval_on_selector_all("#results li", "els => els.map(e => e.dataset.id)")


def go_offline(context, servers: Servers) -> None:
    servers.stop()
    context.set_offline(True)


def go_online(context, servers: Servers) -> None:
    servers.start()
    context.set_offline(False)


def open_harness(page, url: str):
    from e2e.conftest import Bridge

    page.goto(url + "harness.html")
    page.wait_for_function("window.harnessReady === true")
    return Bridge(page)


# ---------------------------------------------------------------- the demo, offline after one visit

def test_demo_boots_and_searches_offline_after_one_visit(context, servers, collection):
    from s5vec.api import Database

    page = context.new_page()
    errors = watch(page)
    load_demo(page, servers.web_url)
    assert "offline-ready" in page.inner_text("#status")
    online = demo_search(page, 0)
    ref = Database.open(collection["cid"], [servers.portal_url])
    sample = servers.config["samples"][0]
    assert online == [h["id"] for h in ref.search(sample["vector"], k=10)]

    go_offline(context, servers)
    page.reload()
    page.wait_for_function("document.body.dataset.ready", timeout=60_000)
    assert page.evaluate("document.body.dataset.ready") == "1", page.inner_text("#status")
    # booted from the service worker: no server is listening any more
    assert page.evaluate("navigator.serviceWorker.controller !== null")
    offline = demo_search(page, 0)
    assert offline == online
    assert not errors
