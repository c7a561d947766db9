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


@pytest.fixture(scope="module")
def films(web_dist, film_index, tmp_path_factory):
    """3,000 of the session's embedded films published as the demo publishes them (hybrid, SQ8, keyword
    index, text model) into a portal directory of this module's own, so its servers can be stopped."""
    from s5vec import api, embed
    from s5vec.demo import write_records
    from s5vec.s5.portal import serve

    blobs = tmp_path_factory.mktemp("offline-film-blobs")
    records = film_index["records"][:3000]
    portal, _ = serve(blobs)
    try:
        store = api.make_store([portal.url])
        model_cid = embed.publish_model(embed.load_local(), store)
        cid = api.publish(records, store, kind="hybrid", params={"codec": "sq8", "store_full": False},
                          text_field="text", extra=embed.manifest_extra(model_cid, "text"))
    finally:
        portal.stop()
    path = tmp_path_factory.mktemp("offline-film-data") / "films.jsonl"
    write_records(str(path), records)
    return {"cid": cid, "blobs": blobs, "records_path": path, "records": records}


def make_servers(web_dist, tmp_path, data):
    """A private copy of the bundle (with a demo-config.json naming this test's portal) + a portal."""
    from s5vec.demo import write_demo_config

    site = tmp_path / "site"
    shutil.copytree(web_dist, site)
    shutil.copy(ROOT / "e2e" / "harness.html", site / "harness.html")
    s = Servers(site, data["blobs"])
    write_demo_config(str(data["records_path"]), data["cid"], [s.portal_url], str(site / "demo-config.json"))
    s.config = json.loads((site / "demo-config.json").read_text())
    return s


@pytest.fixture
def servers(web_dist, collection, tmp_path):
    """Servers for the video collection (harness tests)."""
    s = make_servers(web_dist, tmp_path, collection)
    yield s
    s.stop()


@pytest.fixture
def film_servers(web_dist, films, tmp_path):
    """Servers for the film collection (the demo page)."""
    s = make_servers(web_dist, tmp_path, films)
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
    assert page.evaluate("document.body.dataset.ready") == "1", page.inner_text("#boot-label")


def demo_search(page, text: str) -> list[str]:
    """Type ``text`` into the page's search box; the ids of the films it lists."""
    page.fill("#q", "")
    page.locator("#q").type(text, delay=10)
    page.wait_for_function("arg => document.body.dataset.query === arg", arg=text, timeout=120_000)
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

def test_demo_boots_and_searches_offline_after_one_visit(context, film_servers, films):
    from s5vec.api import Database

    servers = film_servers
    page = context.new_page()
    errors = watch(page)
    load_demo(page, servers.web_url)
    assert page.evaluate("document.body.dataset.offlineReady") == "1"
    ref = Database.open(films["cid"], [servers.portal_url])
    title = films["records"][100]["metadata"]["title"]
    online = demo_search(page, title)
    assert online and online == [h["id"] for h in ref.search_text(title, k=10)]

    # "Keep this index offline" pins every chunk (index, keyword index, text model): then queries
    # never typed online can be searched offline too
    page.click("#pin")
    page.wait_for_function("document.querySelector('#pin-state').textContent.startsWith('kept offline')",
                           timeout=120_000)
    others = [films["records"][2500]["metadata"]["title"], "a detective story in the city"]
    wants = [[h["id"] for h in ref.search_text(q, k=10)] for q in others]

    go_offline(context, servers)
    page.reload()
    page.wait_for_function("document.body.dataset.ready", timeout=60_000)
    assert page.evaluate("document.body.dataset.ready") == "1", page.inner_text("#boot-label")
    # booted from the service worker: no server is listening any more
    assert page.evaluate("navigator.serviceWorker.controller !== null")
    offline = demo_search(page, title)
    assert offline == online
    assert [demo_search(page, q) for q in others] == wants
    assert all(wants)
    assert not errors


def test_demo_is_an_installable_pwa(context, servers):
    """Chromium's own installability check (manifest, icons, service worker with a fetch handler)."""
    page = context.new_page()
    watch(page)
    load_demo(page, servers.web_url)
    cdp = context.new_cdp_session(page)
    manifest = cdp.send("Page.getAppManifest")
    assert not manifest.get("errors"), manifest.get("errors")
    parsed = json.loads(manifest["data"])
    assert parsed["short_name"] == "s5vec" and {i["sizes"] for i in parsed["icons"]} == {"192x192", "512x512"}
    errors = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    # Playwright's contexts are incognito ones, where Chromium installs nothing; every other check passes
    assert [e["errorId"] for e in errors] == ["in-incognito"], errors


# ---------------------------------------------------------------- the persistent chunk cache (harness page)

IDB_KEYS = """async () => {
  const db = await new Promise((res, rej) => { const r = indexedDB.open("s5vec-chunks"); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
  const keys = await new Promise((res, rej) => { const r = db.transaction("chunks").objectStore("chunks").getAllKeys(); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
  db.close();
  return keys;
}"""

IDB_READ = """async (key) => {
  const db = await new Promise((res, rej) => { const r = indexedDB.open("s5vec-chunks"); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
  const buf = await new Promise((res, rej) => { const r = db.transaction("chunks").objectStore("chunks").get(key); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
  db.close();
  if (buf === undefined) return null;
  let s = ""; for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
  return btoa(s);
}"""

IDB_TAMPER = """async (key) => {
  const db = await new Promise((res, rej) => { const r = indexedDB.open("s5vec-chunks"); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
  const tx = db.transaction("chunks", "readwrite");
  const store = tx.objectStore("chunks");
  const buf = await new Promise((res, rej) => { const r = store.get(key); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
  const u8 = new Uint8Array(buf.slice(0));
  u8[Math.floor(u8.length / 2)] ^= 0xff;           // same size, one byte flipped: only the hash can tell
  store.put(u8.buffer, key);
  await new Promise((res, rej) => { tx.oncomplete = res; tx.onerror = () => rej(tx.error); });
  db.close();
  return u8.length;
}"""


def registered_harness(page, url: str, first: bool = False):
    """The harness with the service worker registered. ``first``: this is the first visit, whose page
    load the service worker did not see (it was not installed yet): load it once more through it,
    so the harness page itself is cached for later offline reloads (the demo page is precached)."""
    b = open_harness(page, url)
    reg = b.js("return await S5Vec.offline.register()", timeout=120_000)
    assert reg["supported"] and reg["controlled"] and reg["release"], reg
    if first:
        return registered_harness(page, url)
    return b, reg


def hash_key(cid: str) -> str:
    return BlobId.parse(cid).hash.hex()


def test_tampered_cached_chunk_is_rejected_and_refetched_once_online(context, servers, collection):
    from s5vec.api import Database

    page = context.new_page()
    watch(page)
    b, _ = registered_harness(page, servers.web_url, first=True)
    cid, portals = collection["cid"], [servers.portal_url]
    q = collection["records"][5]["vector"]
    want = Database.open(cid, portals).search(q, k=10)
    key = b.open(cid, portals)
    res = b.search(key, q)
    assert res["ok"], res
    assert_same_hits(res["value"]["hits"], want)
    mkey = hash_key(cid)
    good = page.evaluate(IDB_READ, mkey)
    assert good is not None, "the manifest is in the persistent cache after one open"

    go_offline(context, servers)
    assert page.evaluate(IDB_TAMPER, mkey) == BlobId.parse(cid).size
    page.reload()
    b, _ = registered_harness(page, servers.web_url)
    r = b.run("return await S5Vec.open({ manifest: arg.cid, portals: arg.portals })", {"cid": cid, "portals": portals})
    assert not r["ok"] and r["isS5VecError"] and r["name"] == "PortalError", r   # rotten copy refused, portal down
    assert mkey not in page.evaluate(IDB_KEYS), "the rotten chunk was dropped from the cache"
    usage = b.js("return await S5Vec.cache.usage()")
    assert usage["counters"]["rejected"] >= 1, usage

    go_online(context, servers)
    key = b.open(cid, portals)
    res = b.search(key, q)
    assert res["ok"], res
    assert_same_hits(res["value"]["hits"], want)
    assert page.evaluate(IDB_READ, mkey) == good, "re-fetched and stored again, byte for byte"


def test_pin_keeps_the_whole_index_offline_usage_and_clear(context, servers, collection):
    from s5vec.api import Database

    page = context.new_page()
    watch(page)
    b, _ = registered_harness(page, servers.web_url, first=True)
    cid, portals = collection["cid"], [servers.portal_url]
    ref = Database.open(cid, portals)
    every = [cid] + [c["cid"] for c in ref.manifest["chunks"]]
    total_bytes = sum(BlobId.parse(c).size for c in every)
    queries = [collection["records"][i]["vector"] for i in (1, 300, 700, 1100, 1499)]
    wants = [ref.search(q, k=10, params={"nprobe": 16}) for q in queries]  # every list: needs every chunk

    b.js("await S5Vec.cache.clear()")
    key = b.open(cid, portals)
    before = b.js("return await S5Vec.cache.usage()")
    assert 1 <= before["chunks"] < len(every) and before["pinnedChunks"] == 0, before   # lazily fetched lists
    assert before["budget"] > 0 and before["quota"] > 0

    res = b.js("""const events = [];
                  const r = await window.dbs[arg].pin({ onProgress: (p) => events.push(p) });
                  return { r, events };""", key, timeout=120_000)
    r, events = res["r"], res["events"]
    assert r["chunks"] == len(every) and r["bytes"] == total_bytes, r
    assert r["downloaded"] == len(every) - before["chunks"], r   # what was cached already is kept, not re-fetched
    assert events[0]["done"] == 0 and events[-1]["done"] == events[-1]["total"] == len(every)
    assert [e["done"] for e in events] == sorted(e["done"] for e in events)
    after = b.js("return await S5Vec.cache.usage()")
    assert after["pinnedChunks"] == after["chunks"] == len(every) and after["pinnedBytes"] == total_bytes, after
    assert set(page.evaluate(IDB_KEYS)) == {hash_key(c) for c in every}

    # network off, fresh page and worker: every list can be searched
    go_offline(context, servers)
    page.reload()
    b, _ = registered_harness(page, servers.web_url)
    key = b.open(cid, portals)
    for q, want in zip(queries, wants):
        res = b.search(key, q, params={"nprobe": 16})
        assert res["ok"], res
        assert_same_hits(res["value"]["hits"], want)

    cleared = b.js("return await S5Vec.cache.clear()")
    assert cleared["chunks"] == 0 and cleared["bytes"] == 0 and cleared["pinnedChunks"] == 0, cleared
    assert page.evaluate(IDB_KEYS) == []
    # a fresh worker (this one keeps the chunks it verified in memory for its session, by design)
    page.reload()
    b, _ = registered_harness(page, servers.web_url)
    r = b.run("return await S5Vec.open({ manifest: arg.cid, portals: arg.portals })", {"cid": cid, "portals": portals})
    assert not r["ok"] and r["name"] == "PortalError", r   # really gone: offline, nothing to serve it from


def test_chunk_budget_evicts_least_recently_used_first(context, servers, collection):
    from s5vec.api import Database

    page = context.new_page()
    watch(page)
    b, _ = registered_harness(page, servers.web_url, first=True)
    cid, portals = collection["cid"], [servers.portal_url]
    ref = Database.open(cid, portals)
    lists = [c for c in ref.manifest["chunks"] if c["kind"] == "ivf_list"]
    assert len(lists) >= 8
    budget = sum(c["size"] for c in lists) // 3
    b.js("await S5Vec.cache.clear()")
    u = b.js("return await S5Vec.cache.setBudget(arg)", budget)
    assert u["budget"] == budget
    bad = b.run("return await S5Vec.cache.setBudget(-1)")
    assert not bad["ok"] and bad["name"] == "InvalidArgumentError", bad

    key = b.open(cid, portals)   # the manifest and the eager chunks are read first...
    q = collection["records"][42]["vector"]
    res = b.search(key, q, params={"nprobe": 16})   # ...then every list: more than the budget
    assert res["ok"], res
    assert_same_hits(res["value"]["hits"], ref.search(q, k=10, params={"nprobe": 16}))
    u = b.js("return await S5Vec.cache.usage()")
    assert u["counters"]["evicted"] > 0, u
    assert 0 < u["bytes"] - u["pinnedBytes"] <= budget, u
    keys = set(page.evaluate(IDB_KEYS))
    assert hash_key(cid) not in keys, "the least recently used chunk (the manifest) went first"
    assert keys <= {hash_key(c["cid"]) for c in lists}, "only lists, the most recently used, are left"


# ---------------------------------------------------------------- releases

PRECACHE_STATE = """async () => {
  const names = await caches.keys();
  const name = names.find((n) => n.startsWith("s5vec-precache"));
  const cache = await caches.open(name);
  const urls = (await cache.keys()).map((r) => r.url);
  return { names, urls };
}"""


def test_new_release_replaces_the_precache_cleanly(context, servers, collection):
    """Release 1 is visited; release 2 (a changed worker.js) is deployed; the next visit installs it
    whole, switches with one reload, and leaves no file of release 1 in the precache."""
    from s5vec.api import Database

    page = context.new_page()
    watch(page)
    b, reg1 = registered_harness(page, servers.web_url, first=True)
    rt1 = b.js("return await S5Vec.runtime()", timeout=120_000)
    assert rt1["release"] == reg1["release"]

    site = servers.site
    (site / "worker.js").write_text((site / "worker.js").read_text() + "\n// release 2\n")
    out = subprocess.run([sys.executable, str(ROOT / "web" / "precache.py"), str(site)],
                         check=True, capture_output=True, text=True).stdout
    release2 = out.split("release ", 1)[1].split(",", 1)[0]
    assert release2 != reg1["release"]
    sw_src = (site / "sw.js").read_text()
    manifest2 = {e["url"]: e["revision"] for e in json.loads(sw_src.split("precacheAndRoute(", 1)[1].split(", {", 1)[0])}

    page.close()
    page = context.new_page()
    watch(page)
    reloads = []
    page.on("framenavigated", lambda f: reloads.append(f.url) if f == page.main_frame else None)
    page.goto(servers.web_url + "harness.html")
    page.wait_for_function("window.harnessReady === true")
    # register() finds the new release installing, waits for all of it, activates it and reloads once
    with page.expect_navigation(timeout=120_000):
        page.evaluate("() => { S5Vec.offline.register(); }")
    page.wait_for_function("window.harnessReady === true")
    assert len(reloads) == 2, reloads
    from e2e.conftest import Bridge

    b = Bridge(page)
    reg2 = b.js("return await S5Vec.offline.register()")
    assert reg2["release"] == release2 and reg2["controlled"], reg2
    assert len(reloads) == 2, "no second switch"
    rt2 = b.js("return await S5Vec.runtime()", timeout=120_000)
    assert rt2["release"] == release2, "the worker's wheels come from the same release as the service worker"

    state = page.evaluate(PRECACHE_STATE)
    urls = state["urls"]
    assert len(urls) == len(manifest2), (len(urls), len(manifest2))
    for u in urls:
        path, rev = u.split(servers.web_url, 1)[1].split("?__WB_REVISION__=")
        assert manifest2[path] == rev, f"{path}: a file of another release is still precached"

    # and the new release works: offline boot + search
    cid, portals = collection["cid"], [servers.portal_url]
    q = collection["records"][9]["vector"]
    want = Database.open(cid, portals).search(q, k=10)
    key = b.open(cid, portals)
    assert b.search(key, q)["ok"]
    go_offline(context, servers)
    page.reload()
    b, reg3 = registered_harness(page, servers.web_url)
    assert reg3["release"] == release2
    key = b.open(cid, portals)
    res = b.search(key, q)
    assert res["ok"], res
    assert_same_hits(res["value"]["hits"], want)


def test_a_release_that_cannot_be_precached_whole_never_activates(context, servers, collection):
    """Release 2's sw.js is deployed but one of its files does not match its integrity (a half-done
    deploy): the install fails, release 1 keeps serving, and the page still boots and searches."""
    page = context.new_page()
    watch(page)
    b, reg1 = registered_harness(page, servers.web_url, first=True)
    site = servers.site
    (site / "worker.js").write_text((site / "worker.js").read_text() + "\n// release 2\n")
    subprocess.run([sys.executable, str(ROOT / "web" / "precache.py"), str(site)], check=True, capture_output=True)
    with open(site / "worker.js", "a") as fh:   # changed after the manifest was written
        fh.write("// not what the manifest says\n")

    page.reload()
    b = open_harness(page, servers.web_url)
    reg = b.js("return await S5Vec.offline.register()", timeout=120_000)
    assert reg["release"] == reg1["release"], "the incomplete release must not take over"
    page.wait_for_function("""async () => { const r = await navigator.serviceWorker.getRegistration();
                                            return !r.installing && !r.waiting; }""", timeout=60_000)
    cid, portals = collection["cid"], [servers.portal_url]
    key = b.open(cid, portals)
    res = b.search(key, collection["records"][3]["vector"])
    assert res["ok"], res
    rt = b.js("return await S5Vec.runtime()")
    assert rt["release"] == reg1["release"]


def test_chunks_of_widening_rounds_are_cached_too(context, servers):
    """A filtered IVF search that widens reads more chunks in later rounds than its plan named;
    those go through the service worker as well, so the same search works offline."""
    import numpy as np

    from s5vec import api
    from s5vec.index.ivf import IVFIndex

    n, dim = 6000, 32
    rng = np.random.default_rng(21)
    centres = rng.standard_normal((30, dim)).astype(np.float32)
    x = (centres[rng.integers(0, 30, n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)
    meta = [{"a": "x", "b": "z"} if i % 2 else {"a": "w", "b": "y"} for i in range(n)]
    for i in rng.choice(n, 12, replace=False):
        meta[int(i)] = {"a": "x", "b": "y"}
    idx = IVFIndex(dim, nlist=32, nprobe=2)
    idx.add([f"s{i}" for i in range(n)], x, meta)
    portals = [servers.portal_url]
    cid, _ = api.save(idx, api.make_store(portals))
    flt = {"a": "x", "b": "y"}
    q = x[0].tolist()
    want = api.Database.open(cid, portals).search_with_stats(q, 10, flt)
    planned = len(api.Database.open(cid, portals).plan(x[0], 10, flt))

    page = context.new_page()
    watch(page)
    b, _ = registered_harness(page, servers.web_url, first=True)
    key = b.open(cid, portals)
    res = b.search(key, q, k=10, filter=flt)
    assert res["ok"], res
    assert_same_hits(res["value"]["hits"], want["hits"])
    assert res["value"]["stats"]["chunksFetched"] > planned   # more rounds than the first

    go_offline(context, servers)
    page.reload()
    b, _ = registered_harness(page, servers.web_url)
    key = b.open(cid, portals)
    res = b.search(key, q, k=10, filter=flt)
    assert res["ok"], res
    assert_same_hits(res["value"]["hits"], want["hits"])
    assert res["value"]["stats"]["chunksFetched"] > planned
