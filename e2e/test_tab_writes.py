"""Writes from the tab, in real Chromium against a real portal that requires a token: upsert,
delete and commit through the bridge, the pending-edits journal across a reload, a portal killed
during a commit, and bad input. CPython opens what the tab committed and must find exactly the edits."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from s5vec.s5.cid import BlobId

from .conftest import open_harness

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from kit import assert_same_hits  # noqa: E402

TOKEN = "tab-writes-token"
DIM = 384
NOW = float(int(time.time()))


class Portal:
    """A real portal requiring TOKEN for writes from the harness origin; can be killed and restarted."""

    def __init__(self, directory: Path, origin: str) -> None:
        self.directory, self.origin = directory, origin
        self.uploads: list[str] = []
        self.kill_at: int | None = None
        self.server = None
        self.port = 0
        self.start()

    def _hook(self, method: str, path: str) -> None:
        if method == "POST" and path.startswith("/s5/upload"):
            self.uploads.append(path)
            if self.kill_at is not None and len(self.uploads) == self.kill_at:
                threading.Thread(target=self.stop, daemon=True).start()   # killed mid-commit

    def start(self) -> None:
        from s5vec.s5.portal import serve

        self.server, _ = serve(self.directory, port=self.port, tokens=[TOKEN], cors_origins=[self.origin],
                               on_request=self._hook)
        self.port = self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def blobs(self) -> set[str]:
        return {p.name for p in (self.directory / "blobs").iterdir() if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def base(web_url, tmp_path_factory):
    """2,000 demo videos as a hybrid index (the newest 10% in HNSW), on a token-requiring portal."""
    from s5vec.api import make_store, publish
    from s5vec.demo import demo_records

    records = list(demo_records(2000, dim=DIM, seed=5))
    for i, r in enumerate(records):  # 400 .. 0 days old, 0.2 days apart: the newest 10% in HNSW
        r["timestamp"] = NOW - 86400 * (400 - i * 0.2) - 3600
    portal = Portal(tmp_path_factory.mktemp("tab-portal"), web_url.rstrip("/"))
    # CPython publishes with the token (no Origin header: not a CORS request)
    from s5vec.s5.client import PortalClient
    from s5vec.store import ChunkStore

    store = ChunkStore(PortalClient([portal.url], auth_token=TOKEN))
    cid = publish(records, store, kind="hybrid",
                  params={"recent_threshold": "40d", "nlist": 16})
    yield {"cid": cid, "records": records, "portal": portal}
    portal.stop()


def new_records(n: int, seed: int = 9) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    return [{"id": f"tab{seed}-{i}", "vector": vecs[i].tolist(), "metadata": {"title": f"new {i}", "n": i},
             "timestamp": NOW - i} for i in range(n)]


def chunks_of(cid: str, portal: Portal) -> list[str]:
    from s5vec.api import Database

    return [c["cid"] for c in Database.open(cid, [portal.url]).manifest["chunks"]]


def hkey(cid: str) -> str:
    return BlobId.parse(cid).hash.hex()


def open_db(b, cid: str, portal: Portal, token: str | None = TOKEN) -> int:
    opts = {"authToken": token} if token else {}
    return b.open(cid, [portal.url], **opts)


UPSERT = "return await window.dbs[arg.key].upsert(arg.records)"
DELETE = "return await window.dbs[arg.key].delete(arg.ids)"
COMMIT = """const events = [];
            const r = await window.dbs[arg.key].commit({ onProgress: (p) => events.push(p) });
            return { r, events, info: window.dbs[arg.key].info, pending: window.dbs[arg.key].pendingEdits };"""


def test_upsert_delete_commit_and_cpython_finds_exactly_those_changes(page, web_url, base):
    from s5vec.api import Database

    portal, cid = base["portal"], base["cid"]
    b = open_harness(page, web_url)
    key = open_db(b, cid, portal)
    new = new_records(100)
    gone = [base["records"][i]["id"] for i in range(0, 2000, 200)]
    assert b.js(UPSERT, {"key": key, "records": new}) == 100
    assert b.js(DELETE, {"key": key, "ids": gone}) == 10
    assert b.js("return window.dbs[arg].pendingEdits", key) == {"ops": 2, "upserted": 100, "deleted": 10}

    before = portal.blobs()
    out = b.js(COMMIT, {"key": key}, timeout=120_000)
    r = out["r"]
    assert r["parent"] == cid and r["manifest"] != cid and out["info"]["manifest"] == r["manifest"]
    assert out["pending"] == {"ops": 0, "upserted": 0, "deleted": 0}
    changed = set(chunks_of(r["manifest"], portal)) - set(chunks_of(cid, portal))
    assert r["uploaded"] == len(changed) > 0, (r, len(changed))
    assert portal.blobs() - before == {hkey(c) for c in changed} | {hkey(r["manifest"])}
    assert out["events"][-1]["uploaded"] == len(changed)

    tab = Database.open(r["manifest"], [portal.url])
    assert tab.manifest["parent"] == cid and len(tab.index) == 2000 + 100 - 10
    ref = Database.open(cid, [portal.url])
    ref.upsert(new)
    ref.delete(gone)
    for rec in new[:3] + base["records"][1:2000:333]:
        assert_same_hits(tab.search(rec["vector"], k=10), ref.search(rec["vector"], k=10))
    for rec in new[::25]:
        assert tab.get(rec["id"])["metadata"] == rec["metadata"]
    for i in gone:
        with pytest.raises(Exception) as e:
            tab.get(i)
        assert e.value.name == "UnknownIdError"
    # the tab searches its new snapshot like CPython does
    res = b.search(key, new[7]["vector"])
    assert res["ok"], res
    assert_same_hits(res["value"]["hits"], tab.search(new[7]["vector"], k=10))


def test_pending_edits_survive_a_reload(page, web_url, base):
    from s5vec.api import Database

    portal, cid = base["portal"], base["cid"]
    b = open_harness(page, web_url)
    key = open_db(b, cid, portal)
    new = new_records(5, seed=11)
    gone = base["records"][3]["id"]
    b.js(UPSERT, {"key": key, "records": new})
    b.js(DELETE, {"key": key, "ids": [gone]})

    page.reload()
    b = open_harness(page, web_url)
    key = open_db(b, cid, portal)
    assert b.js("return window.dbs[arg].pendingEdits", key) == {"ops": 2, "upserted": 5, "deleted": 1}
    res = b.search(key, new[2]["vector"], k=1)
    assert res["ok"] and res["value"]["hits"][0]["id"] == new[2]["id"], res
    out = b.js(COMMIT, {"key": key}, timeout=120_000)
    tab = Database.open(out["r"]["manifest"], [portal.url])
    assert len(tab.index) == 2000 + 5 - 1 and tab.get(new[0]["id"])["metadata"] == new[0]["metadata"]

    page.reload()   # committed: nothing pending for the old manifest any more
    b = open_harness(page, web_url)
    key = open_db(b, cid, portal)
    assert b.js("return window.dbs[arg].pendingEdits", key) == {"ops": 0, "upserted": 0, "deleted": 0}


def test_portal_killed_during_a_commit_then_a_retry_succeeds(page, web_url, base):
    from s5vec.api import Database

    portal, cid = base["portal"], base["cid"]
    b = open_harness(page, web_url)
    key = open_db(b, cid, portal)
    new = new_records(300, seed=13)
    gone = [base["records"][i]["id"] for i in range(1, 2000, 97)]
    b.js(UPSERT, {"key": key, "records": new})
    b.js(DELETE, {"key": key, "ids": gone})
    before = portal.blobs()
    portal.uploads.clear()
    portal.kill_at = 2
    try:
        r = b.run(COMMIT, {"key": key}, timeout=120_000)
    finally:
        portal.kill_at = None
    assert not r["ok"] and r["isS5VecError"] and r["name"] == "PortalError", r
    assert b.js("return window.dbs[arg].info.manifest", key) == cid
    assert b.js("return window.dbs[arg].pendingEdits", key)["ops"] == 2
    first = portal.blobs() - before
    portal.start()
    assert len(Database.open(cid, [portal.url]).index) == 2000   # the old manifest still opens

    out = b.js(COMMIT, {"key": key}, timeout=120_000)
    r = out["r"]
    changed = set(chunks_of(r["manifest"], portal)) - set(chunks_of(cid, portal))
    assert first < {hkey(c) for c in changed}, "the failed try stored only chunks, no manifest"
    assert r["uploaded"] == len(changed) - len(first)   # the retry sent only what was missing
    assert len(Database.open(r["manifest"], [portal.url]).index) == 2000 + 300 - len(gone)


def test_bad_input_is_refused_with_typed_errors_and_changes_nothing(page, web_url, base):
    portal, cid = base["portal"], base["cid"]
    b = open_harness(page, web_url)
    key = open_db(b, cid, portal)
    good = new_records(1, seed=17)[0]
    cases = [
        (UPSERT, {"records": [{**good, "vector": good["vector"][:-1]}]}, "DimensionError"),
        (UPSERT, {"records": [{**good, "vector": [float("nan")] * DIM}]}, "InvalidVectorError"),
        (UPSERT, {"records": "not a list"}, "InvalidArgumentError"),
        (DELETE, {"ids": [base["records"][0]["id"], "no-such-id"]}, "UnknownIdError"),
        (COMMIT, {}, "NothingToCommitError"),
    ]
    for body, arg, name in cases:
        r = b.run(body, {"key": key, **arg})
        assert not r["ok"] and r["name"] == name and r["isS5VecError"], (name, r)
    assert b.js("return window.dbs[arg].pendingEdits", key) == {"ops": 0, "upserted": 0, "deleted": 0}
    res = b.search(key, base["records"][0]["vector"], k=1)
    assert res["value"]["hits"][0]["id"] == base["records"][0]["id"]   # the refused delete deleted nothing

    # no token: the portal refuses, nothing is stored, the edit stays pending
    key2 = open_db(b, cid, portal, token=None)
    b.js(UPSERT, {"key": key2, "records": [good]})
    before = portal.blobs()
    r = b.run(COMMIT, {"key": key2})
    assert not r["ok"] and r["name"] == "AuthError", r
    assert portal.blobs() == before
    assert b.js("return window.dbs[arg].pendingEdits", key2)["upserted"] == 1
    # the token given at commit time: it goes through
    out = b.js("return await window.dbs[arg.key].commit({ authToken: arg.token })", {"key": key2, "token": TOKEN})
    assert out["uploaded"] >= 1 and out["parent"] == cid


def test_edits_made_offline_are_committed_when_the_network_returns(page, web_url, base):
    from s5vec.api import Database

    portal, cid = base["portal"], base["cid"]
    b = open_harness(page, web_url)
    key = open_db(b, cid, portal)
    new = new_records(3, seed=19)
    # the first edit loads every chunk an edit needs (here online; with the service worker, db.pin()
    # keeps them for editing offline), later ones need no network
    b.js(UPSERT, {"key": key, "records": new[:1]})
    page.context.set_offline(True)
    b.js(UPSERT, {"key": key, "records": new[1:]})
    r = b.run("return await window.dbs[arg].commit()", key)
    assert not r["ok"] and r["name"] == "PortalError", r
    # commitWhenOnline: waits for the browser's "online" event, then commits
    b.js("window.later = window.dbs[arg].commitWhenOnline(); window.later.then((r) => (window.done = r));", key)
    time.sleep(0.5)
    assert b.js("return window.done === undefined")
    page.context.set_offline(False)
    page.wait_for_function("window.done !== undefined", timeout=60_000)
    done = b.js("return window.done")
    assert done["parent"] == cid
    assert len(Database.open(done["manifest"], [portal.url]).index) == 2003
