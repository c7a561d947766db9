"""The local portal and the portal client, over real HTTP on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from s5vec.errors import CIDError, IntegrityError, NotFoundError, PortalError
from s5vec.s5.cid import BlobId, blob_cid, hash_hex
from s5vec.s5.client import BlobClient, MemoryClient, PortalClient
from s5vec.s5.portal import run_portal, serve


@pytest.fixture
def portal(tmp_path):
    server, thread = serve(tmp_path / "p1")
    yield server
    server.stop()


@pytest.fixture
def portal2(tmp_path):
    server, thread = serve(tmp_path / "p2")
    yield server
    server.stop()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _req(url, *, method="GET", data=None, headers=None):
    """(status, headers, body) without raising on HTTP errors."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _tamper(server, cid, data: bytes):
    path = server.blobs_dir / hash_hex(cid)
    assert path.exists()
    path.write_bytes(data)


# ------------------------------------------------------------------ portal server


def test_upload_download_round_trip(portal):
    c = PortalClient([portal.url])
    data = os.urandom(100_000)
    cid = c.upload(data)
    assert cid == blob_cid(data)
    assert (portal.blobs_dir / hash_hex(cid)).read_bytes() == data
    assert c.download(cid) == data
    # any multibase form of the same CID works
    assert c.download(BlobId.parse(cid).to_string("base58")) == data
    # no temp files left behind
    assert [p.name for p in portal.blobs_dir.iterdir()] == [hash_hex(cid)]


def test_binary_and_empty_blobs(portal):
    c = PortalClient([portal.url])
    for data in (b"", bytes(range(256)) * 3, b"\r\n--\r\n\r\n" * 10):
        cid = c.upload(data)
        assert c.download(cid) == data


def test_raw_octet_stream_upload(portal):
    data = b"raw body upload, as lib5 does it"
    st, _, body = _req(portal.url + "/s5/upload", method="POST", data=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert st == 200 and json.loads(body) == {"cid": blob_cid(data)}
    st, h, body = _req(portal.url + "/s5/blob/" + blob_cid(data))
    assert st == 200 and body == data


def test_blob_headers_and_head(portal):
    data = b"0123456789" * 10
    cid = PortalClient([portal.url]).upload(data)
    st, h, body = _req(f"{portal.url}/s5/blob/{cid}")
    assert st == 200 and body == data
    assert h["Content-Type"] == "application/octet-stream"
    assert h["Content-Length"] == "100"
    assert h["Accept-Ranges"] == "bytes"
    assert h["Cache-Control"] == "public, max-age=31536000, immutable"
    assert h["ETag"] == f'"{cid}"'
    assert h["Access-Control-Allow-Origin"] == "*"
    st, h, body = _req(f"{portal.url}/s5/blob/{cid}", method="HEAD")
    assert st == 200 and body == b"" and h["Content-Length"] == "100"
    st, h, body = _req(f"{portal.url}/s5/blob/{cid}", headers={"If-None-Match": f'"{cid}"'})
    assert st == 304


def test_range_requests(portal):
    data = bytes(range(200))
    cid = PortalClient([portal.url]).upload(data)
    url = f"{portal.url}/s5/blob/{cid}"
    st, h, body = _req(url, headers={"Range": "bytes=10-19"})
    assert st == 206 and body == data[10:20]
    assert h["Content-Range"] == "bytes 10-19/200" and h["Content-Length"] == "10"
    st, h, body = _req(url, headers={"Range": "bytes=190-"})
    assert st == 206 and body == data[190:] and h["Content-Range"] == "bytes 190-199/200"
    st, h, body = _req(url, headers={"Range": "bytes=-5"})
    assert st == 206 and body == data[-5:]
    st, h, body = _req(url, headers={"Range": "bytes=150-999"})
    assert st == 206 and body == data[150:] and h["Content-Range"] == "bytes 150-199/200"
    st, h, body = _req(url, headers={"Range": "bytes=200-"})
    assert st == 416 and h["Content-Range"] == "bytes */200"
    st, h, body = _req(url, headers={"Range": "bytes=20-10"})
    assert st == 416
    # multiple ranges: ignored, whole blob
    st, h, body = _req(url, headers={"Range": "bytes=0-1,5-6"})
    assert st == 200 and body == data


def test_cors(portal):
    """Reads are open to every origin; writes only to configured origins (issue 10 item 3)."""
    st, h, body = _req(portal.url + "/s5/blob/" + blob_cid(b"x"), method="OPTIONS",
                       headers={"Origin": "http://example.org",
                                "Access-Control-Request-Method": "GET",
                                "Access-Control-Request-Headers": "range"})
    assert st == 204
    assert h["Access-Control-Allow-Origin"] == "*"
    for m in ("GET", "HEAD", "OPTIONS"):
        assert m in h["Access-Control-Allow-Methods"]
    for hdr in ("Range", "Content-Type", "Authorization"):
        assert hdr in h["Access-Control-Allow-Headers"]
    assert "Content-Range" in h["Access-Control-Expose-Headers"]
    assert "Content-Length" in h["Access-Control-Expose-Headers"]
    # errors carry CORS too
    st, h, _ = _req(portal.url + "/s5/blob/" + blob_cid(b"absent"))
    assert st == 404 and h["Access-Control-Allow-Origin"] == "*"
    # a write from a non-browser client (no Origin) is not a CORS request: no ACAO needed
    st, h, _ = _req(portal.url + "/s5/upload", method="POST", data=b"x")
    assert st == 200 and "Access-Control-Allow-Origin" not in h
    # a write preflight from an unlisted origin is refused, without ACAO
    st, h, _ = _req(portal.url + "/s5/upload", method="OPTIONS",
                    headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert st == 403 and "Access-Control-Allow-Origin" not in h


def test_malformed_cid_is_400(portal):
    for bad in ("nonsense", "blobb", "z0OOO", blob_cid(b"x")[:-3]):
        st, h, body = _req(f"{portal.url}/s5/blob/{bad}")
        assert st == 400, bad
        assert "malformed" in json.loads(body)["error"]


def test_unknown_endpoint_404(portal):
    assert _req(portal.url + "/nope")[0] == 404
    assert _req(portal.url + "/nope", method="POST", data=b"")[0] == 404


def test_upload_with_expected_cid(portal):
    data = b"expected"
    ok = _req(f"{portal.url}/s5/upload?cid={blob_cid(data)}", method="POST", data=data)
    assert ok[0] == 200 and json.loads(ok[2])["cid"] == blob_cid(data)
    other = b"something else"
    st, _, body = _req(f"{portal.url}/s5/upload?cid={blob_cid(data)}", method="POST", data=other)
    assert st == 400 and "mismatch" in json.loads(body)["error"]
    assert not (portal.blobs_dir / hash_hex(blob_cid(other))).exists()
    st, _, _ = _req(f"{portal.url}/s5/upload?cid=garbage", method="POST", data=other)
    assert st == 400
    assert sorted(p.name for p in portal.blobs_dir.iterdir()) == [hash_hex(blob_cid(data))]


def test_body_limit_413(tmp_path):
    server, _ = serve(tmp_path / "small", max_body=1000)
    try:
        st, _, body = _req(server.url + "/s5/upload", method="POST", data=b"x" * 1001)
        assert st == 413
        st, _, body = _req(server.url + "/s5/upload", method="POST", data=b"x" * 1000)
        assert st == 200
        # a much larger body: the client still sees the 413, not a connection reset
        with pytest.raises(PortalError, match="413"):
            PortalClient([server.url], retries=0).upload(b"y" * 3_000_000)
    finally:
        server.stop()


def test_multipart_without_file_field(portal):
    body = b'--XX\r\nContent-Disposition: form-data; name="other"\r\n\r\nabc\r\n--XX--\r\n'
    st, _, resp = _req(portal.url + "/s5/upload", method="POST", data=body,
                       headers={"Content-Type": "multipart/form-data; boundary=XX"})
    assert st == 400


def test_restart_survival(tmp_path):
    d = tmp_path / "persist"
    s1, _ = serve(d)
    data = os.urandom(5000)
    cid = PortalClient([s1.url]).upload(data)
    s1.stop()
    s2, _ = serve(d)
    try:
        assert PortalClient([s2.url]).download(cid) == data
    finally:
        s2.stop()


def test_run_portal_prints_and_serves(tmp_path, capfd):
    port = _closed_port()
    t = threading.Thread(target=run_portal, args=(tmp_path / "rp", "127.0.0.1", port), daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            PortalClient([url], timeout=1, retries=0).upload(b"hello")
            break
        except PortalError:
            time.sleep(0.05)
    assert PortalClient([url]).download(blob_cid(b"hello")) == b"hello"
    out = capfd.readouterr().out
    assert f"s5 portal listening on {url}" in out
    # (daemon thread ends with the test process)


def test_quiet_logging(portal, capfd):
    PortalClient([portal.url]).upload(b"quiet")
    _req(portal.url + "/s5/blob/nonsense")
    assert capfd.readouterr().err == ""


# ------------------------------------------------------------------ client fallback


def test_fallback_to_second_portal_on_tamper(portal, portal2):
    data = os.urandom(4096)
    cid = PortalClient([portal.url]).upload(data)
    PortalClient([portal2.url]).upload(data)
    _tamper(portal, cid, bytes([data[0] ^ 0xFF]) + data[1:])  # always differs (b"X" + ... did not, 1 in 256)
    c = PortalClient([portal.url, portal2.url])
    assert c.download(cid) == data
    # the bad portal is remembered for this cid
    assert portal.url in c._bad[cid]
    assert c.download(cid) == data


def test_fallback_on_truncated_blob(portal, portal2):
    data = os.urandom(4096)
    cid = PortalClient([portal.url, portal2.url]).upload(data)  # lands on portal only
    PortalClient([portal2.url]).upload(data)
    _tamper(portal, cid, data[:100])
    assert PortalClient([portal.url, portal2.url]).download(cid) == data


def test_tamper_on_both_raises_integrity(portal, portal2):
    data = os.urandom(1000)
    cid = blob_cid(data)
    for p in (portal, portal2):
        PortalClient([p.url]).upload(data)
        _tamper(p, cid, os.urandom(1000))
    c = PortalClient([portal.url, portal2.url])
    with pytest.raises(IntegrityError) as ei:
        c.download(cid)
    assert portal.url in str(ei.value) and portal2.url in str(ei.value)


def test_tamper_plus_404_is_integrity(portal, portal2):
    data = b"only on one portal"
    cid = PortalClient([portal.url]).upload(data)
    _tamper(portal, cid, b"x" * len(data))
    with pytest.raises(IntegrityError):
        PortalClient([portal.url, portal2.url]).download(cid)


def test_unknown_cid_not_found(portal, portal2):
    c = PortalClient([portal.url, portal2.url])
    with pytest.raises(NotFoundError) as ei:
        c.download(blob_cid(b"never uploaded"))
    assert "not found" in str(ei.value)


def test_unreachable_portal_is_portal_error_quickly():
    url = f"http://127.0.0.1:{_closed_port()}"
    c = PortalClient([url], timeout=0.5, retries=1)
    t0 = time.monotonic()
    with pytest.raises(PortalError) as ei:
        c.download(blob_cid(b"x"))
    assert time.monotonic() - t0 < 3
    assert not isinstance(ei.value, NotFoundError)
    assert url in str(ei.value) and "unreachable" in str(ei.value)
    with pytest.raises(PortalError) as ei:
        c.upload(b"x")
    assert url in str(ei.value)


def test_unreachable_then_good_portal(portal):
    data = b"fallback over a dead portal"
    PortalClient([portal.url]).upload(data)
    dead = f"http://127.0.0.1:{_closed_port()}"
    c = PortalClient([dead, portal.url], timeout=0.5, retries=0)
    assert c.download(blob_cid(data)) == data
    # upload also falls through to the first portal that accepts
    assert c.upload(b"via second") == blob_cid(b"via second")


def test_unreachable_and_404_is_portal_error(portal):
    dead = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(PortalError) as ei:
        PortalClient([dead, portal.url], timeout=0.5, retries=0).download(blob_cid(b"zz"))
    assert not isinstance(ei.value, NotFoundError)


def test_timeout_on_silent_server():
    # a socket that accepts but never answers
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(5)
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    try:
        c = PortalClient([url], timeout=0.3, retries=0)
        t0 = time.monotonic()
        with pytest.raises(PortalError):
            c.download(blob_cid(b"x"))
        assert time.monotonic() - t0 < 2
    finally:
        s.close()


def test_5xx_is_retried_then_portal_error(tmp_path):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"busy")

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        with pytest.raises(PortalError) as ei:
            PortalClient([url], retries=2).download(blob_cid(b"x"))
        assert len(hits) == 3 and "503" in str(ei.value)
    finally:
        srv.shutdown()
        srv.server_close()


def test_redirects_are_followed(portal):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class R(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", portal.url + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), R)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        data = b"redirected"
        cid = PortalClient([portal.url]).upload(data)
        assert PortalClient([f"http://127.0.0.1:{srv.server_address[1]}"]).download(cid) == data
    finally:
        srv.shutdown()
        srv.server_close()


def test_malformed_cid_client_side(portal):
    with pytest.raises(CIDError):
        PortalClient([portal.url]).download("garbage")


def test_auth_token_is_sent_on_uploads_only(portal):
    """Reads stay plain (no CORS preflight in browsers); uploads carry the bearer token."""
    seen = []

    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class A(BaseHTTPRequestHandler):
        def _reply(self, status):
            seen.append((self.command, self.headers.get("Authorization")))
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            self._reply(404)

        def do_POST(self):
            self._reply(403)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), A)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        c = PortalClient([f"http://127.0.0.1:{srv.server_address[1]}"], auth_token="T0K")
        with pytest.raises(NotFoundError):
            c.download(blob_cid(b"a"))
        with pytest.raises(PortalError):
            c.upload(b"a")
        assert seen == [("GET", None), ("POST", "Bearer T0K")]
    finally:
        srv.shutdown()
        srv.server_close()


def test_client_argument_checks():
    from s5vec.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError):
        PortalClient([])
    with pytest.raises(InvalidArgumentError):
        PortalClient(["ftp://x"])
    with pytest.raises(InvalidArgumentError):
        PortalClient(["http://x"], timeout=0)


# ------------------------------------------------------------------ download_many


def test_download_many_parallel(portal):
    c = PortalClient([portal.url])
    blobs = [os.urandom(10_000 + i) for i in range(20)]
    cids = [c.upload(b) for b in blobs]
    got = asyncio.run(c.download_many(cids + cids[:3]))  # duplicates fetched once
    assert set(got) == set(cids)
    assert all(got[cid] == b for cid, b in zip(cids, blobs))


def test_download_many_is_concurrent(portal):
    """A slow portal: 8 parallel downloads take ~1 delay, not 8."""
    from s5vec.s5.faults import FaultPortal

    c = PortalClient([portal.url])
    cids = [c.upload(os.urandom(100)) for _ in range(8)]
    with FaultPortal(portal.url, mode="delay", delay=0.3) as slow:
        t0 = time.monotonic()
        got = asyncio.run(PortalClient([slow.url]).download_many(cids))
        took = time.monotonic() - t0
        assert len(got) == 8 and len(slow.requests) == 8
    assert 0.3 <= took < 1.5


def test_download_many_fallback_and_errors(portal, portal2):
    data = [os.urandom(500) for _ in range(4)]
    for p in (portal, portal2):
        for d in data:
            PortalClient([p.url]).upload(d)
    cids = [blob_cid(d) for d in data]
    _tamper(portal, cids[0], os.urandom(500))
    c = PortalClient([portal.url, portal2.url])
    got = asyncio.run(c.download_many(cids))
    assert [got[x] for x in cids] == data
    with pytest.raises(NotFoundError):
        asyncio.run(c.download_many(cids + [blob_cid(b"missing")]))
    assert asyncio.run(c.download_many([])) == {}


# ------------------------------------------------------------------ MemoryClient


def test_memory_client():
    m = MemoryClient()
    assert isinstance(m, BlobClient)
    assert isinstance(PortalClient(["http://127.0.0.1:1"]), BlobClient)  # counters are the store's
    cid = m.upload(b"mem")
    assert m.download(cid) == b"mem"
    assert asyncio.run(m.download_many([cid])) == {cid: b"mem"}
    assert (m.blobs_uploaded, m.bytes_uploaded, m.blobs_downloaded, m.bytes_downloaded) == (1, 3, 2, 6)
    m.blobs[cid] = b"MEM"
    with pytest.raises(IntegrityError):
        m.download(cid)
    with pytest.raises(NotFoundError):
        m.download(blob_cid(b"nope"))
    with pytest.raises(CIDError):
        m.download("junk")


# ------------------------------------------------------------------ Pyodide (Node) path

_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    __import__("shutil").which("node") is None or not (_ROOT / "node_modules" / "pyodide").is_dir()
    or not (_ROOT / "node_modules" / "hash-wasm").is_dir(),
    reason="node + node_modules/pyodide + hash-wasm needed",
)
def test_pyodide_transport(portal, tmp_path):
    """blake3 via s5vec_js and download_many via pyfetch, inside real Pyodide."""
    import shutil
    import subprocess

    pkg = tmp_path / "pkg" / "s5vec"
    src = _ROOT / "pkg" / "s5vec"
    (pkg / "s5").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")  # only the transport layer, no numpy needed
    for rel in ("errors.py", "store.py", "s5/__init__.py", "s5/cid.py", "s5/hashing.py", "s5/client.py"):
        shutil.copy(src / rel, pkg / rel)
    c = PortalClient([portal.url])
    blobs = [os.urandom(n) for n in (0, 1, 1000, 300_000)]
    good = [c.upload(b) for b in blobs]
    bad = c.upload(b"will be tampered")
    _tamper(portal, bad, b"WILL be tampered")
    args = json.dumps({"good": good, "tampered": bad, "missing": blob_cid(b"missing")})
    proc = subprocess.run(
        ["node", str(_ROOT / "tests" / "fixtures" / "pyodide_transport.mjs"), str(tmp_path / "pkg"), portal.url, args],
        cwd=_ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["platform"] == "emscripten" and res["is_pyodide"] is True
    assert res["backend"] == "s5vec_js"
    assert res["empty_hash"] == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert res["cid"] == blob_cid(bytes(range(256)) * 41)
    assert res["good_ok"] is True and res["good_sizes"] == [len(b) for b in blobs]
    assert res["tampered"] == "IntegrityError"
    assert res["missing"] == "NotFoundError"
    assert res["store"] == len(blobs)
    assert res["counters"] == [len(blobs), sum(len(b) for b in blobs)]  # the store's counters
