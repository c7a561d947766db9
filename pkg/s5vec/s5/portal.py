"""A small local S5 portal (stdlib only) for development, tests and demos.

Endpoints (the subset of the S5 portal HTTP API that s5vec uses):

* ``POST /s5/upload`` -- body is ``multipart/form-data`` with a ``file`` field (as
  s5client-js sends it) or the raw bytes (``application/octet-stream``, as lib5
  sends it).  Replies ``{"cid": "<base32 blob cid>"}``.  With ``?cid=<expected>``
  the upload is rejected (400, nothing stored) unless the bytes match that CID.
  Bodies above ``max_body`` bytes (default 256 MiB) get 413.
* ``GET|HEAD /s5/blob/<cid>`` -- the blob (any accepted CID form), with
  ``Accept-Ranges``/single ``Range`` support (206/416), immutable caching headers
  and ``ETag``.  400 for a malformed CID, 404 if absent.
* ``OPTIONS *`` -- CORS preflight.  Every response carries CORS headers.

Storage: ``DIR/blobs/<hex blake3>``, written to a temporary file then moved into
place with ``os.replace`` so a crash never leaves a half-written blob.  Nothing
that matters is kept in memory, so a restarted portal serves the same blobs.

The server does **not** re-verify blobs when serving them -- on purpose: clients
verify every download against its CID, and tests tamper with ``DIR/blobs/<hex>``
on disk to exercise exactly that.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import CIDError
from .cid import BlobId
from .hashing import blake3

__all__ = ["PortalServer", "serve", "run_portal", "DEFAULT_MAX_BODY"]

DEFAULT_MAX_BODY = 256 * 2**20
_COPY_CHUNK = 1 << 20
_DRAIN_LIMIT = 64 * 2**20  # oversized uploads up to max_body + this are read and dropped
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.I)

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Range, Content-Type, Authorization",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, ETag",
    "Access-Control-Max-Age": "86400",
}


class _BadRequest(Exception):
    pass


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """The bytes of the ``file`` field of a multipart/form-data body."""
    m = re.search(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', content_type, re.I)
    if not m:
        raise _BadRequest("multipart body without boundary")
    delim = b"--" + (m.group(1) or m.group(2)).encode("latin-1")
    pos = body.find(delim)
    while pos >= 0:
        pos += len(delim)
        if body[pos : pos + 2] == b"--":  # closing delimiter
            break
        if body[pos : pos + 2] == b"\r\n":
            pos += 2
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise _BadRequest("truncated multipart headers")
        headers = body[pos:head_end].decode("latin-1")
        start = head_end + 4
        end = body.find(b"\r\n" + delim, start)
        if end < 0:
            raise _BadRequest("truncated multipart body")
        name = re.search(r'content-disposition:[^\r\n]*?\bname\s*=\s*"?([^";\r\n]+)"?', headers, re.I)
        field = name.group(1) if name else None
        if field == "file":
            return body[start:end]
        pos = body.find(delim, end + 2)
    raise _BadRequest("multipart body has no 'file' field")


class _Handler(BaseHTTPRequestHandler):
    server: "PortalServer"
    protocol_version = "HTTP/1.1"
    server_version = "s5vec-portal/1"

    # ---------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args) -> None:  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)

    def end_headers(self) -> None:
        for k, v in _CORS.items():
            self.send_header(k, v)
        super().end_headers()

    def _send_json(self, status: int, obj: dict, *, close: bool = False) -> None:
        payload = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, status: int, message: str, *, close: bool = False) -> None:
        self._send_json(status, {"error": message}, close=close)

    def _split(self) -> tuple[str, dict[str, list[str]]]:
        u = urllib.parse.urlsplit(self.path)
        return urllib.parse.unquote(u.path), urllib.parse.parse_qs(u.query)

    # ---------------------------------------------------------------- verbs
    def do_OPTIONS(self) -> None:  # noqa: N802
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        self._get_blob()

    def do_GET(self) -> None:  # noqa: N802
        self._get_blob()

    def do_POST(self) -> None:  # noqa: N802
        path, query = self._split()
        if path.rstrip("/") != "/s5/upload":
            self._discard_body()
            self._error(404, f"no such endpoint: POST {path}", close=True)
            return
        self._upload(query)

    def do_PUT(self) -> None:  # noqa: N802
        self._discard_body()
        self._error(405, "method not allowed", close=True)

    do_DELETE = do_PATCH = do_PUT

    # ---------------------------------------------------------------- download
    def _get_blob(self) -> None:
        path, _ = self._split()
        prefix = "/s5/blob/"
        if not path.startswith(prefix):
            if path in ("/", "/s5/version"):
                self._send_json(200, {"service": "s5vec local portal", "version": 1})
            else:
                self._error(404, f"no such endpoint: {self.command} {path}")
            return
        cid_str = path[len(prefix) :].strip("/")
        try:
            bid = BlobId.parse(cid_str)
        except CIDError as e:
            self._error(400, f"malformed CID: {e}")
            return
        fpath = self.server.blob_path(bid)
        try:
            f = open(fpath, "rb")
        except FileNotFoundError:
            self._error(404, f"blob {bid} not found")
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            etag = f'"{bid}"'
            inm = self.headers.get("If-None-Match")
            if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Cache-Control", "public, max-age=31536000, immutable")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end, status = 0, size - 1, 200
            rng = self.headers.get("Range")
            if rng:
                m = _RANGE_RE.match(rng)
                if m and (m.group(1) or m.group(2)):  # one well-formed range; others are ignored
                    a, b = m.group(1), m.group(2)
                    if a == "":  # suffix: last N bytes
                        n = int(b)
                        start, end = max(0, size - n), size - 1
                        ok = n > 0 and size > 0
                    else:
                        start = int(a)
                        end = min(int(b), size - 1) if b else size - 1
                        ok = start < size and (not b or int(b) >= start)
                    if not ok:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.send_header("Accept-Ranges", "bytes")
                        self.end_headers()
                        return
                    status = 206
            length = max(0, end - start + 1)
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
            self.send_header("ETag", etag)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD" or length == 0:
                return
            f.seek(start)
            left = length
            while left > 0:
                chunk = f.read(min(_COPY_CHUNK, left))
                if not chunk:  # file shrank under us (tampering); the client will notice
                    self.close_connection = True
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    # ---------------------------------------------------------------- upload
    def _discard_body(self) -> None:
        n = self.headers.get("Content-Length")
        if n and n.isdigit() and int(n) <= 1 << 20:
            self.rfile.read(int(n))

    def _upload(self, query: dict[str, list[str]]) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._error(411, "chunked uploads are not supported; send Content-Length", close=True)
            return
        n = self.headers.get("Content-Length")
        if n is None or not n.strip().isdigit():
            self._error(411, "Content-Length required", close=True)
            return
        length = int(n)
        if length > self.server.max_body:
            # Read (and drop) a moderately oversized body so the client sees the 413
            # instead of a connection reset; give up on absurd sizes.
            if length <= self.server.max_body + _DRAIN_LIMIT:
                left = length
                while left > 0:
                    got = self.rfile.read(min(_COPY_CHUNK, left))
                    if not got:
                        break
                    left -= len(got)
            self._error(413, f"body of {length} bytes exceeds the limit of {self.server.max_body}", close=True)
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self._error(400, "truncated body", close=True)
            return
        ctype = self.headers.get("Content-Type") or "application/octet-stream"
        try:
            data = _multipart_file(body, ctype) if ctype.lower().startswith("multipart/form-data") else body
        except _BadRequest as e:
            self._error(400, str(e))
            return
        del body
        bid = BlobId(blake3(data), len(data))
        expected = (query.get("cid") or [None])[0]
        if expected:
            try:
                want = BlobId.parse(expected)
            except CIDError as e:
                self._error(400, f"malformed expected CID: {e}")
                return
            if want != bid:
                self._error(400, f"CID mismatch: body is {bid}, expected {want}")
                return
        try:
            self.server.store(bid, data)
        except OSError as e:
            self._error(507, f"could not store blob: {e}")
            return
        self._send_json(200, {"cid": bid.to_string()})


class PortalServer(ThreadingHTTPServer):
    """ThreadingHTTPServer serving S5 blobs from ``directory``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        directory: str | os.PathLike,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        verbose: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.blobs_dir = self.directory / "blobs"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.max_body = int(max_body)
        self.verbose = verbose
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def blob_path(self, bid: BlobId) -> Path:
        return self.blobs_dir / bid.hash.hex()

    def store(self, bid: BlobId, data: bytes) -> None:
        """Atomically write ``data`` (already hashed to ``bid``) unless present."""
        dest = self.blob_path(bid)
        if dest.exists() and dest.stat().st_size == bid.size:
            return
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.blobs_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def stop(self) -> None:
        """Stop serving (if started by :func:`serve`) and close the socket."""
        if self._thread is not None:
            self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def serve(
    directory: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    background: bool = True,
    max_body: int = DEFAULT_MAX_BODY,
    verbose: bool = False,
) -> tuple[PortalServer, threading.Thread | None]:
    """Create a portal on ``host:port`` (0 = any free port).

    With ``background=True`` (default) it serves from a daemon thread, returned as
    the second element; otherwise the thread is ``None`` and the caller runs
    ``server.serve_forever()``.  Stop with ``server.stop()``.
    """
    server = PortalServer(directory, host, port, max_body=max_body, verbose=verbose)
    thread = None
    if background:
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="s5-portal", daemon=True
        )
        server._thread = thread
        thread.start()
    return server, thread


def run_portal(
    directory: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 5050,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    verbose: bool = False,
) -> None:
    """Serve until interrupted (for ``s5vec portal --dir DIR``)."""
    server, _ = serve(directory, host, port, background=False, max_body=max_body, verbose=verbose)
    print(f"s5 portal listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":  # python -m s5vec.s5.portal DIR [PORT]
    run_portal(sys.argv[1] if len(sys.argv) > 1 else ".", port=int(sys.argv[2]) if len(sys.argv) > 2 else 5050)
