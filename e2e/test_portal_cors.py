"""A web page on another origin cannot write to the local portal (issue 10 item 3), in real Chromium.

Two tiny static sites are two origins: "evil" (not configured) and "app" (``--cors-origin``).  Both
may read blobs; only the app page, with the token, can upload.  Nothing the evil page sends is stored.
"""
from __future__ import annotations

import pytest

from s5vec.s5.cid import blob_cid, hash_hex
from s5vec.s5.portal import start_portal
from s5vec.webserver import serve_web

TOKEN = "e2e-portal-token"


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    out = {}
    servers = []
    for name in ("evil", "app"):
        d = tmp_path_factory.mktemp(name)
        (d / "index.html").write_text(f"<!doctype html><title>{name}</title><p>{name}</p>")
        srv, _ = serve_web(str(d), "127.0.0.1", 0)
        servers.append(srv)
        out[name] = f"http://127.0.0.1:{srv.server_address[1]}"
    yield out
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def portals(sites, tmp_path_factory):
    """One portal with a token and the app origin allowed; one as started by default (no token)."""
    guarded = start_portal(tmp_path_factory.mktemp("guarded"), tokens=[TOKEN], cors_origins=[sites["app"]])
    open_ = start_portal(tmp_path_factory.mktemp("default"))
    yield {"guarded": guarded, "default": open_}
    guarded.stop()
    open_.stop()


UPLOAD_JS = """async ([url, text, token, raw]) => {
    const headers = {};
    if (token) headers["Authorization"] = "Bearer " + token;
    let body;
    if (raw) { body = new TextEncoder().encode(text); headers["Content-Type"] = "application/octet-stream"; }
    else { body = new FormData(); body.append("file", new Blob([text])); }   // a CORS "simple" request
    try {
        const r = await fetch(url + "/s5/upload", { method: "POST", body, headers });
        return { status: r.status, body: await r.text() };
    } catch (e) {
        return { error: String(e) };
    }
}"""

READ_JS = """async (url) => {
    try { const r = await fetch(url); return { status: r.status, text: await r.text() }; }
    catch (e) { return { error: String(e) }; }
}"""


def _blobs(portal) -> list[str]:
    return [p.name for p in portal.blobs_dir.iterdir()]


def test_foreign_page_cannot_write(page, sites, portals):
    page.goto(sites["evil"] + "/index.html")
    for name, portal in portals.items():
        for token in (None, TOKEN):  # even a page that somehow has the token
            for raw in (False, True):
                res = page.evaluate(UPLOAD_JS, [portal.url, f"evil {name} {token} {raw}", token, raw])
                assert "error" in res and "Failed to fetch" in res["error"], (name, token, raw, res)
        assert _blobs(portal) == [], name


def test_configured_origin_writes_with_token(page, sites, portals):
    guarded = portals["guarded"]
    page.goto(sites["app"] + "/index.html")
    res = page.evaluate(UPLOAD_JS, [guarded.url, "no token", None, False])
    assert res.get("status") == 401, res  # readable refusal: the origin is allowed, the token is not there
    assert _blobs(guarded) == []
    for raw in (False, True):
        text = f"from the app page raw={raw}"
        res = page.evaluate(UPLOAD_JS, [guarded.url, text, TOKEN, raw])
        assert res.get("status") == 200, res
        cid = blob_cid(text.encode())
        assert cid in res["body"]
        assert (guarded.blobs_dir / hash_hex(cid)).exists()
    # reads stay open to every origin
    page.goto(sites["evil"] + "/index.html")
    res = page.evaluate(READ_JS, f"{guarded.url}/s5/blob/{blob_cid(b'from the app page raw=True')}")
    assert res == {"status": 200, "text": "from the app page raw=True"}
