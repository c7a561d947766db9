"""A local S5 portal for development, tests and demos, on Starlette + uvicorn.

Endpoints (the subset of the S5 node HTTP API that s5vec uses; docs/FORMAT.md has the contract):

* ``POST /s5/upload[?cid=<expected>]`` -- ``multipart/form-data`` with a ``file`` field (as
  s5client-js sends it) or the raw bytes (as lib5 sends it).  Replies ``{"cid": "<blob cid>"}``.
  The body is streamed to a temporary file in the blobs directory while it is hashed (BLAKE3,
  incrementally), so memory stays flat whatever the size; ``max_body`` is enforced while streaming
  (413) and the blob is moved into place with ``os.replace`` only once it is complete and matches
  ``?cid=`` (400 otherwise, nothing stored).
* ``GET|HEAD /s5/blob/<cid>`` -- the blob, single ``Range`` (206/416), ``ETag``, immutable caching.
* ``GET /s5/registry?pk=<base64url key>`` / ``POST /s5/registry`` -- signed registry entries
  (:mod:`s5vec.s5.registry`): stored only if the signature verifies and the revision is higher.
* ``GET /s5/version``; ``OPTIONS`` for CORS preflight.

Why it is built this way (issue 10): the old stdlib server had a listen backlog of 5, one thread per
connection and no timeouts, held uploads in memory and let any web page write.  Here:

* asyncio (uvicorn) serves thousands of connections; backlog 2048; ``limit_concurrency``.
* Every phase of a request has a deadline: request headers (``header_timeout``, enforced by a small
  protocol subclass because uvicorn has none), idle keep-alive (``keep_alive``), the body (an idle
  timeout per read plus a minimum average rate), and sending (``send_timeout`` per write, and for a
  closing connection whose client reads nothing).  A
  half-open or trickling connection is cut off and never blocks anyone else.
* Writes (uploads, registry entries) need ``Authorization: Bearer <token>`` when the portal has
  tokens (required by default when bound beyond loopback), and CORS lets only configured origins
  write; a write carrying any other ``Origin`` is refused with 403 before its body is read.  Reads
  stay anonymous and open to every origin.
* Leftover ``.tmp-*`` files of a killed portal are removed at start.

The server does **not** re-verify blobs when serving them -- on purpose: clients verify every
download against its CID, and tests tamper with ``DIR/blobs/<hex>`` to exercise exactly that.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import CIDError, FormatError, InvalidArgumentError
from . import registry as reg
from .cid import BlobId

__all__ = [
    "PortalConfig",
    "PortalServer",
    "serve",
    "start_portal",
    "run_portal",
    "create_app",
    "load_tokens",
    "DEFAULT_MAX_BODY",
    "LOOPBACK_HOSTS",
]

DEFAULT_MAX_BODY = 256 * 2**20
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_COPY_CHUNK = 1 << 20  # bytes per streamed read of a large blob
_FEED_CHUNK = 256 << 10  # bytes per write/hash batch of an upload (the most an upload buffers)
_SMALL_BLOB = 4 << 20  # answered from one read; larger blobs are streamed
_DRAIN_LIMIT = 64 * 2**20  # a refused body up to this size is read and dropped so the client sees the answer
_MAX_REGISTRY_BODY = 8 << 10
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.I)
_IMMUTABLE = "public, max-age=31536000, immutable"

_READ_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, ETag",
}
_PREFLIGHT = {
    "Access-Control-Allow-Headers": "Range, Content-Type, Authorization, If-None-Match",
    "Access-Control-Max-Age": "86400",
}
_WRITE_PATHS = ("/s5/upload", "/s5/registry")

log = logging.getLogger("s5vec.portal")


# ---------------------------------------------------------------- configuration

@dataclass
class PortalConfig:
    """Everything a portal needs; defaults are the product (``s5vec portal --dir D``)."""

    directory: Path
    host: str = "127.0.0.1"
    port: int = 0
    max_body: int = DEFAULT_MAX_BODY
    tokens: frozenset[str] = frozenset()
    require_token: bool | None = None  # None: required iff tokens are set or bound beyond loopback
    cors_origins: set[str] = field(default_factory=set)  # origins that may write; "*" = any
    header_timeout: float = 10.0  # connection open -> complete request headers
    keep_alive: int = 5  # idle keep-alive connections are closed after this
    body_idle_timeout: float = 30.0  # no body bytes for this long -> 408
    body_grace: float = 30.0  # a body may always take this long ...
    body_min_rate: float = 64 * 1024  # ... plus 1 s per this many bytes received
    send_timeout: float = 60.0  # a client that reads nothing for this long is dropped
    limit_concurrency: int = 4096  # connections + tasks before uvicorn answers 503
    backlog: int = 2048
    verbose: bool = False
    on_request: Callable[[str, str], None] | None = None  # (method, path?query) hook, e.g. for tests

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.max_body = int(self.max_body)
        self.tokens = frozenset(t for t in (self.tokens or ()) if t)
        self.cors_origins = {o.rstrip("/") for o in (self.cors_origins or ())}
        if self.require_token is None:
            self.require_token = bool(self.tokens) or self.host not in LOOPBACK_HOSTS
        if self.require_token and not self.tokens:
            why = ("it is bound to %s, beyond this machine" % self.host) if self.host not in LOOPBACK_HOSTS \
                else "--require-token was given"
            raise InvalidArgumentError(
                f"the portal needs an upload token because {why}: pass --token-file FILE or set "
                "S5VEC_PORTAL_TOKEN (or --no-require-token to let anyone who can reach it write)")


def load_tokens(token_file: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> frozenset[str]:
    """Tokens from a file (one per line, ``#`` comments) and ``S5VEC_PORTAL_TOKEN``."""
    env = os.environ if env is None else env
    tokens: set[str] = set()
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidArgumentError(f"cannot read token file {token_file}: {getattr(e, 'strerror', e)}") from None
        tokens.update(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
        if not tokens:
            raise InvalidArgumentError(f"token file {token_file} holds no token")
    if env.get("S5VEC_PORTAL_TOKEN", "").strip():
        tokens.add(env["S5VEC_PORTAL_TOKEN"].strip())
    return frozenset(tokens)


# ---------------------------------------------------------------- storage

class _Storage:
    """Blobs and registry entries on disk; every write is temp file + fsync + ``os.replace``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blobs_dir = directory / "blobs"
        self.registry_dir = directory / "registry"
        for d in (self.blobs_dir, self.registry_dir):
            d.mkdir(parents=True, exist_ok=True)
            for leftover in d.glob(".tmp-*"):  # a killed portal's half-written files
                try:
                    leftover.unlink()
                except OSError:
                    pass
        self._reg_locks: dict[bytes, asyncio.Lock] = {}

    def blob_path(self, bid: BlobId) -> Path:
        return self.blobs_dir / bid.hash.hex()

    def entry_path(self, pk: bytes) -> Path:
        return self.registry_dir / pk.hex()

    def registry_lock(self, pk: bytes) -> asyncio.Lock:
        lock = self._reg_locks.get(pk)
        if lock is None:
            lock = self._reg_locks[pk] = asyncio.Lock()
        return lock

    def read_entry(self, pk: bytes) -> reg.RegistryEntry | None:
        try:
            raw = self.entry_path(pk).read_bytes()
        except FileNotFoundError:
            return None
        return reg.RegistryEntry.deserialize(raw)

    def write_entry(self, entry: reg.RegistryEntry) -> None:
        _atomic_write(self.registry_dir, self.entry_path(entry.pk), entry.serialize())


def _atomic_write(directory: Path, dest: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _BadUpload(Exception):
    pass


class _UploadSink:
    """Hashes and writes an upload to ``.tmp-*`` as it arrives (raw, or the multipart ``file`` part).

    Runs in worker threads (``feed`` takes ~256 KiB batches; anyio's thread limiter bounds how many
    run at once), so the event loop never hashes or touches the disk.  There is deliberately no
    per-upload slot: a slow client holds only its connection, never a slot others wait for."""

    def __init__(self, blobs_dir: Path, boundary: bytes | None) -> None:
        import blake3

        self._hasher = blake3.blake3()
        self.size = 0
        fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", dir=blobs_dir)
        self._f = os.fdopen(fd, "wb")
        self._parser = None
        if boundary is not None:
            from python_multipart.multipart import MultipartParser

            self._hdr_field = bytearray()
            self._hdr_value = bytearray()
            self._part_is_file = False
            self._file_seen = False  # the first "file" part started
            self._file_done = False  # ... and ended
            self._ended = False
            self._parser = MultipartParser(boundary, {
                "on_part_begin": self._part_begin,
                "on_header_field": lambda d, s, e: self._hdr_field.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._hdr_value.extend(d[s:e]),
                "on_header_end": self._header_end,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            }, max_header_size=16 << 10)

    # multipart callbacks
    def _part_begin(self) -> None:
        self._part_is_file = False

    def _header_end(self) -> None:
        if bytes(self._hdr_field).strip().lower() == b"content-disposition":
            m = re.search(rb'(?:^|;)\s*name\s*=\s*"?([^";]*)"?', bytes(self._hdr_value), re.I)
            if m and m.group(1) == b"file" and not self._file_seen:
                self._part_is_file = self._file_seen = True
        self._hdr_field.clear()
        self._hdr_value.clear()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part_is_file:
            self._write(data[start:end])

    def _part_end(self) -> None:
        if self._part_is_file:
            self._file_done = True
            self._part_is_file = False

    def _end(self) -> None:
        self._ended = True

    def _write(self, chunk: bytes) -> None:
        self._hasher.update(chunk)
        self._f.write(chunk)
        self.size += len(chunk)

    # the sink
    def feed(self, chunk: bytes) -> None:
        if self._parser is None:
            self._write(chunk)
            return
        try:
            self._parser.write(chunk)
        except Exception as e:  # python-multipart raises its own parse errors
            raise _BadUpload(f"malformed multipart body: {e}") from None

    def finish(self) -> BlobId:
        if self._parser is not None:
            try:
                self._parser.finalize()
            except Exception as e:  # noqa: BLE001
                raise _BadUpload(f"malformed multipart body: {e}") from None
            if not self._file_seen:
                raise _BadUpload("multipart body has no 'file' field")
            if not (self._file_done and self._ended):
                raise _BadUpload("truncated multipart body")
        self._f.flush()
        return BlobId(self._hasher.digest(), self.size)

    def commit(self, dest: Path) -> None:
        """Make the blob durable and move it into place (unless an identical one is there)."""
        if dest.exists() and dest.stat().st_size == self.size:
            self.abort()
            return
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, dest)

    def abort(self) -> None:
        try:
            self._f.close()
        finally:
            _unlink(self.tmp)


# ---------------------------------------------------------------- HTTP helpers

def _error(status: int, message: str, *, close: bool = False, headers: dict[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    h = {"Cache-Control": "no-store", **(headers or {})}
    if close:
        h["Connection"] = "close"
    return JSONResponse({"error": message, **extra}, status_code=status, headers=h)


class _Deadline:
    """A request body's time budget: ``grace`` seconds plus 1 s per ``min_rate`` bytes received,
    and never more than ``idle`` seconds without a byte."""

    def __init__(self, cfg: PortalConfig) -> None:
        self.t0 = time.monotonic()
        self.cfg = cfg
        self.received = 0

    def next_wait(self) -> float:
        left = self.cfg.body_grace + self.received / self.cfg.body_min_rate - (time.monotonic() - self.t0)
        return min(self.cfg.body_idle_timeout, left)


class _BodyTimeout(Exception):
    pass


async def _body_chunks(request: Request, deadline: _Deadline):
    """``request.stream()`` under the deadline; raises :class:`_BodyTimeout`."""
    it = request.stream().__aiter__()
    while True:
        wait = deadline.next_wait()
        if wait <= 0:
            raise _BodyTimeout()
        try:
            with anyio.fail_after(wait):
                chunk = await it.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _BodyTimeout() from None
        deadline.received += len(chunk)
        yield chunk


async def _drain(request: Request, cfg: PortalConfig, limit: int = _DRAIN_LIMIT) -> bool:
    """Read and drop a refused request's body (so the client gets our answer, not a reset).
    False if it was too big, too slow or cut off: then the answer closes the connection."""
    deadline = _Deadline(cfg)
    try:
        async for _ in _body_chunks(request, deadline):
            if deadline.received > limit:
                return False
    except (_BodyTimeout, ClientDisconnect):
        return False
    return True


def _content_length(request: Request) -> int | None:
    v = request.headers.get("content-length")
    return int(v) if v is not None and v.strip().isdigit() else None


# ---------------------------------------------------------------- the application

class _Portal:
    """Route handlers; one instance per server (holds the config, storage and upload slots)."""

    def __init__(self, cfg: PortalConfig) -> None:
        self.cfg = cfg
        self.storage = _Storage(cfg.directory)

    # -- policy
    def origin_may_write(self, origin: str | None) -> bool:
        if origin is None:  # not a browser cross-origin request
            return True
        return "*" in self.cfg.cors_origins or origin.rstrip("/") in self.cfg.cors_origins

    def token_ok(self, request: Request) -> bool:
        if not self.cfg.require_token:
            return True
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = token.strip().encode()
        ok = False
        for t in self.cfg.tokens:  # compare with every token: time does not tell which matched
            ok |= hmac.compare_digest(given, t.encode())
        return ok

    async def refuse_write(self, request: Request) -> Response | None:
        """403 for a foreign origin, 401 for a missing/wrong token; None if the write may go on."""
        origin = request.headers.get("origin")
        if not self.origin_may_write(origin):
            ok = await _drain(request, self.cfg)
            return _error(403, f"origin {origin} may not write to this portal (see --cors-origin)", close=not ok)
        if not self.token_ok(request):
            ok = await _drain(request, self.cfg)
            why = "missing" if "authorization" not in request.headers else "wrong"
            return _error(401, f"{why} upload token: send Authorization: Bearer <token>", close=not ok,
                          headers={"WWW-Authenticate": 'Bearer realm="s5vec portal"'})
        return None

    # -- endpoints
    async def version(self, request: Request) -> Response:
        return JSONResponse({"service": "s5vec local portal", "version": 1, "registry": True,
                             "upload_requires_token": bool(self.cfg.require_token),
                             "max_body": self.cfg.max_body}, headers={"Cache-Control": "no-store"})

    async def blob(self, request: Request) -> Response:
        cid_str = request.path_params["cid"].strip("/")
        try:
            bid = BlobId.parse(cid_str)
        except CIDError as e:
            return _error(400, f"malformed CID: {e}")
        path = self.storage.blob_path(bid)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return _error(404, f"blob {bid} not found")
        etag = f'"{bid}"'
        inm = request.headers.get("if-none-match")
        if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
            return Response(status_code=304, headers={"ETag": etag, "Cache-Control": _IMMUTABLE})
        start, end, status = 0, size - 1, 200
        rng = request.headers.get("range")
        if rng:
            m = _RANGE_RE.match(rng)
            if m and (m.group(1) or m.group(2)):  # one well-formed range; anything else: whole blob
                a, b = m.group(1), m.group(2)
                if a == "":  # suffix: the last N bytes
                    n = int(b)
                    start, end = max(0, size - n), size - 1
                    ok = n > 0 and size > 0
                else:
                    start = int(a)
                    end = min(int(b), size - 1) if b else size - 1
                    ok = start < size and (not b or int(b) >= start)
                if not ok:
                    return Response(status_code=416, headers={"Content-Range": f"bytes */{size}",
                                                               "Accept-Ranges": "bytes"})
                status = 206
        length = max(0, end - start + 1)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                   "Accept-Ranges": "bytes", "Cache-Control": _IMMUTABLE, "ETag": etag}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return _FileResponse(path, start, length, status, headers, self.cfg.send_timeout)

    async def upload(self, request: Request) -> Response:
        refused = await self.refuse_write(request)
        if refused is not None:
            return refused
        cfg = self.cfg
        expected = request.query_params.get("cid")
        want = None
        if expected:
            try:
                want = BlobId.parse(expected)
            except CIDError as e:
                ok = await _drain(request, cfg)
                return _error(400, f"malformed expected CID: {e}", close=not ok)
        declared = _content_length(request)
        if declared is not None and declared > cfg.max_body:
            ok = declared <= cfg.max_body + _DRAIN_LIMIT and await _drain(request, cfg)
            return _error(413, f"body of {declared} bytes exceeds the limit of {cfg.max_body}", close=not ok)
        ctype = request.headers.get("content-type", "application/octet-stream")
        boundary = None
        if ctype.lower().startswith("multipart/form-data"):
            m = re.search(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', ctype, re.I)
            if not m:
                ok = await _drain(request, cfg)
                return _error(400, "multipart body without boundary", close=not ok)
            boundary = (m.group(1) or m.group(2)).encode("latin-1")
        return await self._stream_upload(request, boundary, want)

    async def _stream_upload(self, request: Request, boundary: bytes | None, want: BlobId | None) -> Response:
        cfg = self.cfg
        sink = await anyio.to_thread.run_sync(_UploadSink, self.storage.blobs_dir, boundary)
        committed = False
        try:
            deadline = _Deadline(cfg)
            buf = bytearray()
            # A multipart body carries a little framing around the file; allow for it.
            limit = cfg.max_body + (0 if boundary is None else 64 << 10)
            bad: _BadUpload | None = None  # a malformed body is read to its end (bounded), then refused
            try:
                async for chunk in _body_chunks(request, deadline):
                    if deadline.received > limit:
                        return _error(413, f"body exceeds the limit of {cfg.max_body} bytes", close=True)
                    if bad is not None:
                        continue
                    buf += chunk
                    if len(buf) >= _FEED_CHUNK:
                        data, buf = bytes(buf), bytearray()
                        try:
                            await anyio.to_thread.run_sync(sink.feed, data)
                        except _BadUpload as e:
                            bad = e
                if bad is None:
                    if buf:
                        await anyio.to_thread.run_sync(sink.feed, bytes(buf))
                    bid = await anyio.to_thread.run_sync(sink.finish)
            except _BodyTimeout:
                return _error(408, "request body too slow; upload abandoned", close=True)
            except ClientDisconnect:
                return _error(400, "client disconnected during upload", close=True)
            except _BadUpload as e:
                bad = e
            if bad is not None:
                return _error(400, str(bad))
            if bid.size > cfg.max_body:
                return _error(413, f"blob of {bid.size} bytes exceeds the limit of {cfg.max_body}")
            if want is not None and want != bid:
                return _error(400, f"CID mismatch: body is {bid}, expected {want}")
            try:
                await anyio.to_thread.run_sync(sink.commit, self.storage.blob_path(bid))
                committed = True
            except OSError as e:
                return _error(507, f"could not store blob: {e}")
            return JSONResponse({"cid": bid.to_string()}, headers={"Cache-Control": "no-store"})
        finally:
            if not committed:
                await anyio.to_thread.run_sync(sink.abort)

    async def registry_get(self, request: Request) -> Response:
        pk_str = request.query_params.get("pk")
        if not pk_str:
            return _error(400, "query parameter pk (base64url public key) is required")
        try:
            pk = reg.decode_pk(pk_str)
        except FormatError as e:
            return _error(400, f"malformed public key: {e}")
        try:
            entry = self.storage.read_entry(pk)
        except FormatError as e:
            return _error(500, f"stored entry unreadable: {e}")
        if entry is None:
            return _error(404, f"no registry entry for {pk_str}")
        return JSONResponse(entry.to_json(), headers={"Cache-Control": "no-store"})

    async def registry_set(self, request: Request) -> Response:
        refused = await self.refuse_write(request)
        if refused is not None:
            return refused
        deadline = _Deadline(self.cfg)
        body = bytearray()
        try:
            async for chunk in _body_chunks(request, deadline):
                body += chunk
                if len(body) > _MAX_REGISTRY_BODY:
                    return _error(413, f"registry entry body over {_MAX_REGISTRY_BODY} bytes", close=True)
        except _BodyTimeout:
            return _error(408, "request body too slow", close=True)
        except ClientDisconnect:
            return _error(400, "client disconnected", close=True)
        raw = bytes(body)
        try:
            if raw[:1] == bytes([reg.RECORD_TYPE_REGISTRY_ENTRY]):
                entry = reg.RegistryEntry.deserialize(raw)
            else:
                try:
                    obj = json.loads(raw)
                except ValueError:
                    raise FormatError("body is neither a serialised entry (0x07...) nor JSON") from None
                entry = reg.RegistryEntry.from_json(obj)
        except FormatError as e:
            return _error(400, f"malformed registry entry: {e}")
        if not reg.verify_entry(entry):
            return _error(400, "bad signature: the entry is not signed by its public key")
        async with self.storage.registry_lock(entry.pk):
            try:
                current = self.storage.read_entry(entry.pk)
            except FormatError:
                current = None  # an unreadable stored entry is replaced by a valid one
            if current is not None and current.revision >= entry.revision:
                return _error(409, f"revision {entry.revision} is not higher than the stored revision "
                                   f"{current.revision}", revision=current.revision)
            try:
                await anyio.to_thread.run_sync(self.storage.write_entry, entry)
            except OSError as e:
                return _error(507, f"could not store entry: {e}")
        return Response(status_code=204, headers={"Cache-Control": "no-store"})


class _DropConnection(Exception):
    """Raised by a response to make uvicorn drop the connection (logged as one line, no traceback)."""


class _FileResponse(Response):
    """A byte range of a file: one read for small blobs, 1 MiB reads (off the event loop) for big ones;
    each send must finish within ``send_timeout`` or the connection is dropped."""

    def __init__(self, path: Path, start: int, length: int, status: int, headers: dict[str, str],
                 send_timeout: float) -> None:
        super().__init__(status_code=status, headers=headers)
        self.path, self.start, self.length, self.send_timeout = path, start, length, send_timeout

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[override]
        async def timed_send(msg) -> None:
            try:
                with anyio.fail_after(self.send_timeout):
                    await send(msg)
            except TimeoutError:
                raise _DropConnection(f"client read nothing for {self.send_timeout:g} s; dropped") from None

        await timed_send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope["method"] == "HEAD" or self.length == 0:
            await timed_send({"type": "http.response.body", "body": b""})
            return
        f = await anyio.to_thread.run_sync(open, self.path, "rb")
        try:
            await anyio.to_thread.run_sync(f.seek, self.start)
            left = self.length
            while left > 0:
                n = min(left, _SMALL_BLOB if self.length <= _SMALL_BLOB else _COPY_CHUNK)
                chunk = await anyio.to_thread.run_sync(f.read, n)
                if not chunk:  # the file shrank under us (tampering): cut the response, the client notices
                    raise _DropConnection(f"{self.path.name} is shorter than announced; answer cut")
                left -= len(chunk)
                await timed_send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        finally:
            await anyio.to_thread.run_sync(f.close)


class _Front:
    """Outermost ASGI layer: the request hook, CORS (preflight and response headers)."""

    def __init__(self, app, portal: _Portal) -> None:
        self.app, self.portal = app, portal

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        hook = self.portal.cfg.on_request
        if hook is not None:
            qs = scope.get("query_string", b"").decode("latin-1")
            hook(method, path + ("?" + qs if qs else ""))
        if method == "OPTIONS":
            return await self._preflight(path, origin, headers, send)
        is_write = method == "POST" and path.rstrip("/") in _WRITE_PATHS
        if is_write:
            extra = {}
            if origin is not None and self.portal.origin_may_write(origin):
                extra = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                         "Access-Control-Expose-Headers": _READ_CORS["Access-Control-Expose-Headers"]}
        else:
            extra = _READ_CORS
        raw_extra = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

        async def send_with_cors(msg) -> None:
            if msg["type"] == "http.response.start" and raw_extra:
                msg = {**msg, "headers": list(msg.get("headers", [])) + raw_extra}
            await send(msg)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, path: str, origin: str | None, headers: dict[str, str], send) -> None:
        want = headers.get("access-control-request-method", "GET").upper()
        if want in ("GET", "HEAD"):
            h = {**_READ_CORS, **_PREFLIGHT, "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS"}
            status = 204
        elif want == "POST" and path.rstrip("/") in _WRITE_PATHS and self.portal.origin_may_write(origin):
            h = {**_PREFLIGHT, "Access-Control-Allow-Origin": origin or "*", "Vary": "Origin",
                 "Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS"}
            status = 204
        else:  # no CORS headers: the browser refuses the real request
            h, status = {"Vary": "Origin"}, 403
        h["Content-Length"] = "0"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in h.items()]})
        await send({"type": "http.response.body", "body": b""})


def create_app(cfg: PortalConfig) -> tuple[Any, _Portal]:
    """The ASGI application (Starlette routes inside the CORS front) and its handler object."""
    p = _Portal(cfg)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return _error(404, f"no such endpoint: {request.method} {request.url.path}")
        if exc.status_code == 405:
            return _error(405, f"method {request.method} not allowed on {request.url.path}", close=True)
        return _error(exc.status_code, str(exc.detail))

    app = Starlette(
        routes=[
            Route("/s5/blob/{cid:path}", p.blob, methods=["GET", "HEAD"]),
            Route("/s5/upload", p.upload, methods=["POST"]),
            Route("/s5/upload/", p.upload, methods=["POST"]),
            Route("/s5/registry", p.registry_get, methods=["GET", "HEAD"]),
            Route("/s5/registry", p.registry_set, methods=["POST"]),
            Route("/s5/version", p.version, methods=["GET", "HEAD"]),
            Route("/", p.version, methods=["GET", "HEAD"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
    return _Front(app, p), p


# ---------------------------------------------------------------- uvicorn plumbing

class _H11WithHeaderTimeout(H11Protocol):
    """uvicorn's h11 protocol plus a per-connection watchdog (one timer, ticking every 0.5 s).

    uvicorn closes idle keep-alive connections, but a connection that sends nothing, or half a
    request line, is kept forever (and counts against ``limit_concurrency``); and ``close()`` on a
    connection whose client reads nothing waits forever for the write buffer to drain.  The watchdog
    closes a connection that has waited ``header_timeout`` for a request to start, and aborts one
    that has been closing for ``close_grace`` seconds."""

    header_timeout = 10.0
    close_grace = 60.0
    _tick_every = 0.5
    _watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting_since = self.loop.time()
        self._closing_since: float | None = None
        self._watchdog = self.loop.call_later(self._tick_every, self._tick)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._waiting_since = self.loop.time()

    def connection_lost(self, exc) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        super().connection_lost(exc)

    def _tick(self) -> None:
        now = self.loop.time()
        if self.transport.is_closing():
            if self._closing_since is None:
                self._closing_since = now
            elif now - self._closing_since >= self.close_grace:
                self.transport.abort()  # connection_lost follows
                self._watchdog = None
                return
        elif (self.cycle is None or self.cycle.response_complete) and now - self._waiting_since >= self.header_timeout:
            self.transport.close()
        self._watchdog = self.loop.call_later(self._tick_every, self._tick)


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    h = host.strip("[]")
    family = socket.AF_INET6 if ":" in h else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((h, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class PortalServer:
    """A running (or ready-to-run) portal: ``.url``, ``.blobs_dir``, ``.stop()``.

    ``cors_origins`` is live: adding an origin after start lets that origin write."""

    def __init__(self, cfg: PortalConfig) -> None:
        import uvicorn

        self.config = cfg
        self.app, self._portal = create_app(cfg)
        self.directory = cfg.directory
        self.blobs_dir = self._portal.storage.blobs_dir
        self.registry_dir = self._portal.storage.registry_dir
        self.cors_origins = cfg.cors_origins
        self._sock = _bind(cfg.host, cfg.port, cfg.backlog)
        self.server_address = self._sock.getsockname()[:2]
        protocol = type("PortalH11", (_H11WithHeaderTimeout,), {"header_timeout": float(cfg.header_timeout),
                                                                  "close_grace": float(cfg.send_timeout)})
        _quiet_uvicorn_logs(cfg.verbose)
        self._uv = uvicorn.Server(uvicorn.Config(
            self.app, http=protocol, lifespan="off", log_config=None, access_log=cfg.verbose,
            log_level="info" if cfg.verbose else "warning", timeout_keep_alive=cfg.keep_alive,
            limit_concurrency=cfg.limit_concurrency, backlog=cfg.backlog, timeout_graceful_shutdown=2,
            server_header=False, date_header=True, h11_max_incomplete_event_size=16 << 10,
        ))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def blob_path(self, bid: BlobId) -> Path:
        return self._portal.storage.blob_path(bid)

    @property
    def started(self) -> bool:
        return self._uv.started

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (or Ctrl-C in the main thread)."""
        self._uv.run(sockets=[self._sock])

    def start(self) -> "PortalServer":
        """Serve from a daemon thread; returns once the portal accepts requests."""
        self._thread = threading.Thread(target=self.serve_forever, name="s5-portal", daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        while not self._uv.started:
            if not self._thread.is_alive():
                raise RuntimeError("portal thread died during start-up")
            if time.monotonic() - t0 > 30:
                raise RuntimeError("portal did not start within 30 s")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (in-flight requests get up to ~1 s)."""
        self._uv.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=1.5)
            if self._thread.is_alive():
                self._uv.force_exit = True
                self._thread.join(timeout=5)
            self._thread = None
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> "PortalServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_log_handler: logging.Handler | None = None


def _not_shutdown_noise(record: logging.LogRecord) -> bool:
    """Requests cut off by ``stop()`` and connections we drop on purpose are expected, not errors
    worth a traceback."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, asyncio.CancelledError):
        return False
    if isinstance(exc, _DropConnection):  # expected: one line instead of a traceback
        record.msg, record.args, record.exc_info, record.exc_text = f"dropped a connection: {exc}", (), None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger("uvicorn.error").isEnabledFor(logging.INFO)
    return "timeout graceful shutdown exceeded" not in record.getMessage()


def _quiet_uvicorn_logs(verbose: bool) -> None:
    """uvicorn's warnings and errors (and access lines when verbose) to stderr, nothing else."""
    global _log_handler
    if _log_handler is None:
        _log_handler = logging.StreamHandler(sys.stderr)
        _log_handler.setFormatter(logging.Formatter("s5 portal: %(levelname)s: %(message)s"))
        _log_handler.addFilter(_not_shutdown_noise)
        for name in ("uvicorn.error", "uvicorn.access"):
            lg = logging.getLogger(name)
            lg.addHandler(_log_handler)
            lg.propagate = False
    logging.getLogger("uvicorn.access").disabled = not verbose


def serve(
    directory: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    background: bool = True,
    max_body: int = DEFAULT_MAX_BODY,
    verbose: bool = False,
    **options: Any,
) -> tuple[PortalServer, threading.Thread | None]:
    """Create a portal on ``host:port`` (0 = any free port); ``options`` are :class:`PortalConfig` fields.

    With ``background=True`` (default) it serves from a daemon thread, returned as the second
    element; otherwise the thread is ``None`` and the caller runs ``server.serve_forever()``.
    Stop with ``server.stop()``."""
    cfg = PortalConfig(Path(directory), host, port, max_body=max_body, verbose=verbose, **options)
    server = PortalServer(cfg)
    if background:
        server.start()
    return server, server._thread


def start_portal(directory: str | os.PathLike, port: int = 0, **options: Any) -> PortalServer:
    """A portal serving ``directory`` on 127.0.0.1 from a background thread (``.url``, ``.stop()``)."""
    return serve(directory, options.pop("host", "127.0.0.1"), port, **options)[0]


def run_portal(
    directory: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 5050,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    verbose: bool = False,
    **options: Any,
) -> None:
    """Serve until interrupted (``s5vec portal --dir DIR``)."""
    server, _ = serve(directory, host, port, background=False, max_body=max_body, verbose=verbose, **options)
    cfg = server.config
    auth = "uploads need a token" if cfg.require_token else "uploads open to local clients (no token)"
    origins = ", ".join(sorted(cfg.cors_origins)) or "none"
    print(f"s5 portal listening on {server.url}", flush=True)
    print(f"s5 portal: {auth}; browser origins that may write: {origins}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":  # python -m s5vec.s5.portal DIR [PORT]
    run_portal(sys.argv[1] if len(sys.argv) > 1 else ".", port=int(sys.argv[2]) if len(sys.argv) > 2 else 5050)
