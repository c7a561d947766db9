"""The signed pointer in the tab: open by pointer (WebCrypto Ed25519 verify), refresh to a newer
revision published from CPython, commit-and-publish from the tab with a non-extractable key, and
forged entries (wrong key, bad signature, lower revision) refused by the client."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from s5vec.s5.cid import BlobId

from .conftest import open_harness
from .test_tab_writes import TOKEN, Portal, new_records

DIM = 384


@pytest.fixture(scope="module")
def world(web_url, tmp_path_factory):
    from s5vec.api import make_store, publish
    from s5vec.demo import demo_records

    portal = Portal(tmp_path_factory.mktemp("pointer-portal"), web_url.rstrip("/"))
    records = list(demo_records(600, dim=DIM, seed=21))
    store = make_store([portal.url], auth_token=TOKEN)
    cid = publish(records, store, kind="flat")
    yield {"portal": portal, "cid": cid, "records": records}
    portal.stop()


class FakeRegistry:
    """A portal that lies: serves whatever registry entry the test sets (blobs from the real portal)."""

    def __init__(self, blobs_dir):
        self.entry = None
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, body, ctype="application/json"):
                self.send_response(status)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                u = urlparse(self.path)
                if u.path == "/s5/registry":
                    if outer.entry is None:
                        return self._send(404, b'{"error": "no entry"}')
                    return self._send(200, json.dumps(outer.entry).encode())
                if u.path.startswith("/s5/blob/"):
                    p = blobs_dir / BlobId.parse(u.path.rsplit("/", 1)[1]).hash.hex()
                    if p.exists():
                        return self._send(200, p.read_bytes(), "application/octet-stream")
                return self._send(404, b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


OPEN = """const db = await S5Vec.open({ pointer: arg.pointer, portals: arg.portals, authToken: arg.token });
          const key = Object.keys(window.dbs).length + 1; window.dbs[key] = db;
          return { key, manifest: db.info.manifest, pointer: db.pointer };"""


def test_open_by_pointer_and_refresh_to_a_revision_published_from_cpython(page, web_url, world):
    from s5vec.api import Database
    from s5vec.s5.registry import SigningKey, publish_pointer

    portal, cid = world["portal"], world["cid"]
    key = SigningKey.generate()
    publish_pointer([portal.url], key, cid, auth_token=TOKEN)
    b = open_harness(page, web_url)
    opened = b.js(OPEN, {"pointer": key.pointer, "portals": [portal.url], "token": TOKEN})
    assert opened["manifest"] == cid and opened["pointer"] == {"pointer": key.pointer, "revision": 1}
    assert b.js("return await window.dbs[arg].refresh()", opened["key"]) is False

    db = Database.open(cid, [portal.url])
    db.store.client.auth_token = TOKEN
    db.upsert(new_records(4, seed=23))
    cid2, _ = db.commit()
    publish_pointer([portal.url], key, cid2, auth_token=TOKEN)
    assert b.js("return await window.dbs[arg].refresh()", opened["key"]) is True
    assert b.js("return window.dbs[arg].info.manifest", opened["key"]) == cid2
    assert b.js("return window.dbs[arg].pointer.revision", opened["key"]) == 2
    q = new_records(4, seed=23)[1]["vector"]
    res = b.search(opened["key"], q, k=1)
    assert res["ok"] and res["value"]["hits"][0]["id"] == new_records(4, seed=23)[1]["id"], res


def test_commit_with_a_key_signs_and_publishes_from_the_tab(page, web_url, world):
    from s5vec.api import Database
    from s5vec.s5.registry import resolve_pointer

    portal, cid = world["portal"], world["cid"]
    b = open_harness(page, web_url)
    k = b.js("const k = await S5Vec.signingKey('e2e'); return { pointer: k.pointer, name: k.name };")
    # the private key cannot be read out, only used
    r = b.run("const k = await S5Vec.signingKey('e2e'); return await crypto.subtle.exportKey('pkcs8', k.privateKey);")
    assert not r["ok"] and r["name"] == "InvalidAccessError", r
    key = b.open(cid, [portal.url], authToken=TOKEN)
    new = new_records(3, seed=29)
    b.js("return await window.dbs[arg.key].upsert(arg.records)", {"key": key, "records": new})
    out = b.js("return await window.dbs[arg].commit({ key: 'e2e' })", key)
    assert out["pointer"] == {"pointer": k["pointer"], "revision": 1}
    assert resolve_pointer([portal.url], k["pointer"]) == out["manifest"]   # CPython verifies the tab's signature
    assert len(Database.open(out["manifest"], [portal.url]).index) == 603

    page.reload()   # the key survives in IndexedDB
    b = open_harness(page, web_url)
    assert b.js("return (await S5Vec.signingKey('e2e')).pointer") == k["pointer"]
    opened = b.js(OPEN, {"pointer": k["pointer"], "portals": [portal.url], "token": TOKEN})
    b.js("return await window.dbs[arg.key].delete([arg.id])", {"key": opened["key"], "id": new[0]["id"]})
    out2 = b.js("return await window.dbs[arg].commit({ key: 'e2e' })", opened["key"])
    assert out2["pointer"]["revision"] == 2 and resolve_pointer([portal.url], k["pointer"]) == out2["manifest"]


def test_forged_entries_are_refused_by_the_client(page, web_url, world):
    from s5vec.s5.registry import SigningKey, create_entry

    portal, cid = world["portal"], world["cid"]
    fake = FakeRegistry(portal.directory / "blobs")
    try:
        key, other = SigningKey.generate(), SigningKey.generate()
        data = BlobId.parse(cid).to_bytes()
        b = open_harness(page, web_url)
        opener = {"pointer": key.pointer, "portals": [fake.url]}

        # wrong key: a valid entry of another key, served for this pointer
        fake.entry = create_entry(other, data, 7).to_json()
        r = b.run(OPEN, opener)
        assert not r["ok"] and r["name"] == "IntegrityError" and "another key" in r["message"], r
        # right key, forged signature (the other key signed this key's entry)
        forged = create_entry(key, data, 7).to_json()
        forged["signature"] = create_entry(other, data, 7).to_json()["signature"]
        fake.entry = forged
        r = b.run(OPEN, opener)
        assert not r["ok"] and r["name"] == "IntegrityError" and "signature" in r["message"], r
        # a tampered revision breaks the signature too
        tampered = create_entry(key, data, 7).to_json()
        tampered["revision"] = 8
        fake.entry = tampered
        r = b.run(OPEN, opener)
        assert not r["ok"] and r["name"] == "IntegrityError", r

        # lower revision: after revision 7 was seen, a validly signed revision 3 is a rollback
        fake.entry = create_entry(key, data, 7).to_json()
        opened = b.js(OPEN, opener)
        assert opened["pointer"]["revision"] == 7
        fake.entry = create_entry(key, data, 3).to_json()
        r = b.run("return await window.dbs[arg].refresh()", opened["key"])
        assert not r["ok"] and r["name"] == "IntegrityError" and "older" in r["message"], r
        assert b.js("return window.dbs[arg].pointer.revision", opened["key"]) == 7
        # no entry at all
        fake.entry = None
        r = b.run(OPEN, {"pointer": SigningKey.generate().pointer, "portals": [fake.url]})
        assert not r["ok"] and r["name"] == "NotFoundError", r
        r = b.run(OPEN, {"pointer": "not-a-pointer", "portals": [fake.url]})
        assert not r["ok"] and r["name"] in ("InvalidArgumentError", "FormatError"), r
    finally:
        fake.close()
