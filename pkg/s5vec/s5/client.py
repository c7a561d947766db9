"""Portal clients: fetch and store S5 blobs over the portal HTTP API.

* ``GET  {portal}/s5/blob/{cid}``  -> the blob's bytes (redirects are followed)
* ``POST {portal}/s5/upload``      -> multipart/form-data, field ``file``; reply ``{"cid": "..."}``

Every downloaded body is verified against its CID (size and BLAKE3) *before* it is
returned; a portal that serves wrong bytes is skipped for that CID and the next
portal is tried.

The synchronous path uses :mod:`urllib.request` only.  In Pyodide,
``pyodide_http.patch_all()`` (called lazily, once) routes that same code through a
synchronous XHR in the web worker; ``download_many`` uses ``pyodide.http.pyfetch``
under ``asyncio.gather`` there, and a thread pool on CPython.
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Protocol, runtime_checkable

from ..errors import AuthError, CIDError, IntegrityError, InvalidArgumentError, NotFoundError, PortalError, QuotaError
from .cid import BlobId, blob_cid, verify

__all__ = ["BlobClient", "PortalClient", "MemoryClient"]

IS_PYODIDE = sys.platform == "emscripten"
_MAX_PARALLEL = 8
_patched = False
_patch_lock = threading.Lock()


def _ensure_pyodide_http() -> None:
    """In Pyodide, make urllib work through synchronous XHR (once)."""
    global _patched
    if _patched or not IS_PYODIDE:
        return
    with _patch_lock:
        if _patched:
            return
        try:
            import pyodide_http  # type: ignore[import-not-found]

            pyodide_http.patch_all()
        except ImportError as e:  # pragma: no cover - only in a broken Pyodide setup
            raise PortalError(
                "pyodide_http is required for synchronous downloads in Pyodide "
                "(await micropip.install('pyodide-http'))"
            ) from e
        _patched = True


@runtime_checkable
class BlobClient(Protocol):
    """What the chunk store needs from a blob transport."""

    bytes_downloaded: int
    blobs_downloaded: int
    bytes_uploaded: int
    blobs_uploaded: int

    def download(self, cid: str) -> bytes: ...

    def upload(self, data: bytes) -> str: ...

    async def download_many(self, cids: Iterable[str]) -> dict[str, bytes]: ...

    async def upload_async(self, data: bytes) -> str: ...


def _multipart(data: bytes) -> tuple[str, bytes]:
    """(boundary, body) of a multipart/form-data upload with one ``file`` field."""
    boundary = "s5vec-" + uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="blob"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode("ascii")
    return boundary, head + data + f"\r\n--{boundary}--\r\n".encode("ascii")


def _upload_error(expected: str, statuses: list[int], failures: list[str]) -> PortalError:
    """The typed error of an upload every portal refused: AuthError when each portal that answered
    wanted a (valid) token, QuotaError when one was full / the blob too large, else PortalError."""
    msg = f"upload of {expected} failed on every portal ({'; '.join(failures)})"
    answered = [s for s in statuses if s]
    if answered and all(s in (401, 403) for s in answered):
        return AuthError(msg + ": the portal needs an account token (authToken / --auth-token)")
    if any(s in (413, 507) for s in answered):
        return QuotaError(msg)
    return PortalError(msg)


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes_downloaded = 0
        self.blobs_downloaded = 0
        self.bytes_uploaded = 0
        self.blobs_uploaded = 0

    def _count_down(self, n: int) -> None:
        with self._lock:
            self.bytes_downloaded += n
            self.blobs_downloaded += 1

    def _count_up(self, n: int) -> None:
        with self._lock:
            self.bytes_uploaded += n
            self.blobs_uploaded += 1


def _parse_cid(cid: "str | BlobId") -> tuple[str, BlobId]:
    bid = BlobId.parse(cid)  # raises CIDError
    return (cid if isinstance(cid, str) else bid.to_string()), bid


def _dedupe(cids: Iterable["str | BlobId"]) -> list[str]:
    seen: dict[str, None] = {}
    for c in cids:
        s, _ = _parse_cid(c)
        seen.setdefault(s, None)
    return list(seen)


def _raise_for_failures(cid: str, failures: list[tuple[str, str, str]]) -> None:
    """failures: (portal, kind, reason) with kind in {"integrity", "notfound", "error"}."""
    detail = "; ".join(f"{p}: {r}" for p, _, r in failures)
    kinds = {k for _, k, _ in failures}
    if "integrity" in kinds:
        raise IntegrityError(f"no portal served valid bytes for {cid} ({detail})")
    if kinds == {"notfound"}:
        raise NotFoundError(f"blob {cid} not found on any portal ({detail})")
    raise PortalError(f"could not download {cid} ({detail})")


class PortalClient(_Counters):
    """HTTP client for one or more S5 portals, tried in order."""

    def __init__(
        self,
        portals: list[str],
        *,
        timeout: float = 10.0,
        retries: int = 1,
        auth_token: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(portals, str):
            portals = [portals]
        if not portals:
            raise InvalidArgumentError("PortalClient needs at least one portal URL")
        clean = []
        for p in portals:
            if not isinstance(p, str) or not p.startswith(("http://", "https://")):
                raise InvalidArgumentError(f"portal URL must start with http:// or https://, got {p!r}")
            clean.append(p.rstrip("/"))
        if timeout <= 0:
            raise InvalidArgumentError("timeout must be > 0")
        if retries < 0:
            raise InvalidArgumentError("retries must be >= 0")
        self.portals: list[str] = clean
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.auth_token = auth_token
        self.backoff = 0.05  # seconds; doubled on each retry
        # cid -> portals that served bad bytes for it (skipped on later attempts)
        self._bad: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"PortalClient({self.portals!r})"

    # ------------------------------------------------------------ helpers
    def _headers(self) -> dict[str, str]:
        h = {"User-Agent": "s5vec", "Accept": "*/*"}
        if self.auth_token:
            h["Authorization"] = f"Bearer {self.auth_token}"
        return h

    def blob_url(self, portal: str, cid: str) -> str:
        return f"{portal}/s5/blob/{urllib.parse.quote(cid, safe='')}"

    @staticmethod
    def reload_url(url: str) -> str:
        """The same blob under a URL no HTTP cache holds (portals ignore the query)."""
        return f"{url}?reload={uuid.uuid4().hex[:12]}"

    def _mark_bad(self, cid: str, portal: str) -> None:
        with self._lock:
            self._bad.setdefault(cid, set()).add(portal)

    def _candidates(self, cid: str) -> tuple[list[str], list[str]]:
        bad = self._bad.get(cid, set())
        return [p for p in self.portals if p not in bad], [p for p in self.portals if p in bad]

    def _request(
        self, url: str, *, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """One HTTP exchange: (status, body).  Network failures give (0, reason bytes).

        Works both with the stdlib (4xx/5xx raise HTTPError) and with pyodide_http's
        patched ``urlopen`` (which returns every status and raises JS errors on
        network failures), so the status is checked in both places.
        """
        req = urllib.request.Request(url, data=body, headers=headers or self._headers(), method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status = int(getattr(resp, "status", 0) or resp.getcode() or 0)
                data = resp.read()
        except urllib.error.HTTPError as e:
            try:
                data = e.read() or b""
            except Exception:
                data = b""
            return e.code, bytes(data)
        except Exception as e:  # URLError, timeouts, refused connections, JS NetworkError in Pyodide
            reason = getattr(e, "reason", e)
            return 0, f"unreachable ({type(reason).__name__}: {reason})".encode()
        if isinstance(data, str):  # defensive: a shim handing back text
            data = data.encode("latin-1")
        return status, bytes(data)

    @staticmethod
    def _describe(status: int, body: bytes) -> str:
        msg = body[:200].decode("utf-8", "replace").strip()
        if status == 0:
            return msg or "unreachable"
        return f"HTTP {status}{': ' + msg if msg else ''}"

    def _get_once(self, url: str) -> tuple[int, bytes | str]:
        """One GET: (200, body) or (status, reason); status 0 for network errors."""
        status, body = self._request(url)
        if status == 200:
            return status, body
        return status, self._describe(status, body)

    def _fetch_from(self, portal: str, cid: str) -> tuple[str, bytes | str]:
        """Try one portal (with retries on network errors / 5xx).

        Returns ("ok", bytes) | ("integrity"|"notfound"|"error", reason).
        """
        url = self.blob_url(portal, cid)
        delay = self.backoff
        last = "no attempt"
        for attempt in range(self.retries + 1):
            status, body = self._get_once(url)
            if status == 200 and isinstance(body, bytes):
                try:
                    verify(cid, body)
                except IntegrityError:
                    # A browser may have cached bad bytes (blobs are served immutable with the CID as
                    # ETag, so revalidation cannot help): ask once more under a URL no cache holds.
                    status, body = self._get_once(self.reload_url(url))
                    try:
                        if status != 200 or not isinstance(body, bytes):
                            raise IntegrityError(f"portal {portal} served bytes that do not match {cid}")
                        verify(cid, body)
                    except IntegrityError as e:
                        self._mark_bad(cid, portal)
                        return "integrity", str(e)
                return "ok", body
            if status == 404:
                return "notfound", "404 not found"
            if status and status < 500:
                return "error", body if isinstance(body, str) else f"HTTP {status}"
            last = body if isinstance(body, str) else f"HTTP {status}"
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        return "error", last

    # ------------------------------------------------------------ API
    def download(self, cid: "str | BlobId") -> bytes:
        """Download and verify one blob, falling back across portals."""
        _ensure_pyodide_http()
        cid_s, _ = _parse_cid(cid)
        good, bad = self._candidates(cid_s)
        failures: list[tuple[str, str, str]] = [(p, "integrity", "served wrong bytes earlier") for p in bad]
        for portal in good:
            kind, val = self._fetch_from(portal, cid_s)
            if kind == "ok":
                assert isinstance(val, bytes)
                self._count_down(len(val))
                return val
            failures.append((portal, kind, str(val)))
        _raise_for_failures(cid_s, failures)
        raise AssertionError("unreachable")

    def upload(self, data: bytes) -> str:
        """Upload ``data`` to the first portal that accepts it; returns its CID."""
        _ensure_pyodide_http()
        data = bytes(data)
        expected = blob_cid(data)
        boundary, body = _multipart(data)
        failures: list[str] = []
        statuses: list[int] = []
        for portal in self.portals:
            url = f"{portal}/s5/upload"
            delay = self.backoff
            for attempt in range(self.retries + 1):
                headers = self._headers()
                headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
                headers["Accept"] = "application/json"
                status, raw = self._request(url, method="POST", body=body, headers=headers)
                retry = False
                if 200 <= status < 300:
                    try:
                        got = json.loads(raw.decode("utf-8", "replace"))["cid"]
                    except (ValueError, KeyError, TypeError):
                        failures.append(f"{portal}: bad upload reply {raw[:100]!r}")
                        break
                    try:
                        same = BlobId.parse(got) == BlobId.parse(expected)
                    except CIDError:
                        same = False
                    if not same:
                        failures.append(f"{portal}: returned CID {got!r}, expected {expected}")
                        break
                    self._count_up(len(data))
                    return expected
                failures.append(f"{portal}: {self._describe(status, raw)}")
                statuses.append(status)
                retry = status == 0 or status >= 500
                if not retry or attempt >= self.retries:
                    break
                time.sleep(delay)
                delay *= 2
        raise _upload_error(expected, statuses, failures)

    async def upload_async(self, data: bytes) -> str:
        """:meth:`upload` without blocking the event loop: ``pyfetch`` in Pyodide (so the worker
        uploads several chunks at once), a worker thread on CPython."""
        if not IS_PYODIDE:
            return await asyncio.get_running_loop().run_in_executor(None, self.upload, bytes(data))
        return await self._upload_pyfetch(bytes(data))  # pragma: no cover - runs in Pyodide

    async def _upload_pyfetch(self, data: bytes) -> str:  # pragma: no cover - runs in Pyodide
        from js import Uint8Array  # type: ignore[import-not-found]
        from pyodide.http import pyfetch  # type: ignore[import-not-found]

        expected = blob_cid(data)
        boundary, body = _multipart(data)
        js_body = Uint8Array.new(len(body))
        js_body.assign(body)  # a JS-owned copy: the wasm heap may move while fetch reads it
        timeout = self.timeout + len(body) / 1e6  # and at least 1 MB/s for big chunks
        failures: list[str] = []
        statuses: list[int] = []
        for portal in self.portals:
            url = f"{portal}/s5/upload"
            delay = self.backoff
            for attempt in range(self.retries + 1):
                headers = {"Accept": "application/json", "Content-Type": f"multipart/form-data; boundary={boundary}"}
                if self.auth_token:
                    headers["Authorization"] = f"Bearer {self.auth_token}"
                try:
                    resp = await asyncio.wait_for(pyfetch(url, method="POST", body=js_body, headers=headers), timeout)
                    status = int(resp.status)
                    raw = bytes(await asyncio.wait_for(resp.bytes(), timeout))
                except Exception as e:  # network error, CORS refusal, timeout
                    status, raw = 0, f"unreachable ({type(e).__name__}: {e})".encode()
                if 200 <= status < 300:
                    try:
                        got = json.loads(raw.decode("utf-8", "replace"))["cid"]
                        same = BlobId.parse(got) == BlobId.parse(expected)
                    except (ValueError, KeyError, TypeError, CIDError):
                        failures.append(f"{portal}: bad upload reply {raw[:100]!r}")
                        break
                    if not same:
                        failures.append(f"{portal}: returned CID {got!r}, expected {expected}")
                        break
                    return expected  # counted by the store (ChunkStore.put_many)
                failures.append(f"{portal}: {self._describe(status, raw)}")
                statuses.append(status)
                if not (status == 0 or status >= 500) or attempt >= self.retries:
                    break
                await asyncio.sleep(delay)
                delay *= 2
        raise _upload_error(expected, statuses, failures)

    async def download_many(self, cids: Iterable["str | BlobId"]) -> dict[str, bytes]:
        """Download several blobs in parallel; raises on the first CID no portal can serve."""
        todo = _dedupe(cids)
        if not todo:
            return {}
        if IS_PYODIDE:
            sem = asyncio.Semaphore(16)

            async def one(c: str) -> bytes:
                async with sem:
                    return await self._download_pyfetch(c)

            results = await asyncio.gather(*(one(c) for c in todo))
            return dict(zip(todo, results))
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL, len(todo)), thread_name_prefix="s5dl") as ex:
            futs = [loop.run_in_executor(ex, self.download, c) for c in todo]
            try:
                results = await asyncio.gather(*futs)
            except BaseException:
                for f in futs:
                    f.cancel()
                raise
        return dict(zip(todo, results))

    # ------------------------------------------------------------ Pyodide async path
    async def _download_pyfetch(self, cid: str) -> bytes:  # pragma: no cover - runs in Pyodide
        from pyodide.http import pyfetch  # type: ignore[import-not-found]

        good, bad = self._candidates(cid)
        failures: list[tuple[str, str, str]] = [(p, "integrity", "served wrong bytes earlier") for p in bad]
        headers = self._headers()
        headers.pop("User-Agent", None)  # forbidden header in browsers
        for portal in good:
            url = self.blob_url(portal, cid)
            delay = self.backoff
            outcome: tuple[str, str] = ("error", "no attempt")
            for attempt in range(self.retries + 1):
                try:
                    resp = await asyncio.wait_for(pyfetch(url, headers=headers), self.timeout)
                    status = resp.status
                    if status == 200:
                        body = await asyncio.wait_for(resp.bytes(), self.timeout)
                        try:
                            verify(cid, body)
                        except IntegrityError:
                            # Possibly stale bytes in the HTTP cache: fetch once more past it.
                            resp = await asyncio.wait_for(
                                pyfetch(self.reload_url(url), headers=headers, cache="reload"), self.timeout)
                            body = await asyncio.wait_for(resp.bytes(), self.timeout) if resp.status == 200 else b""
                            try:
                                verify(cid, body)
                            except IntegrityError as e:
                                self._mark_bad(cid, portal)
                                outcome = ("integrity", str(e))
                                break
                        self._count_down(len(body))
                        return body
                    if status == 404:
                        outcome = ("notfound", "404 not found")
                        break
                    outcome = ("error", f"HTTP {status}")
                    if status < 500:
                        break
                except Exception as e:  # network error / timeout / CORS failure
                    outcome = ("error", f"unreachable ({type(e).__name__}: {e})")
                if attempt < self.retries:
                    await asyncio.sleep(delay)
                    delay *= 2
            failures.append((portal, outcome[0], outcome[1]))
        _raise_for_failures(cid, failures)
        raise AssertionError("unreachable")


class MemoryClient(_Counters):
    """In-memory blob client for tests: same API as :class:`PortalClient`.

    ``blobs`` maps the canonical base32 CID to the stored bytes; tests may tamper
    with it (downloads still verify, raising :class:`IntegrityError`).
    """

    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        super().__init__()
        self.blobs: dict[str, bytes] = {}
        for k, v in (blobs or {}).items():
            self.blobs[BlobId.parse(k).to_string()] = bytes(v)

    def download(self, cid: "str | BlobId") -> bytes:
        bid = BlobId.parse(cid)
        key = bid.to_string()
        try:
            data = self.blobs[key]
        except KeyError:
            raise NotFoundError(f"blob {key} not found (memory)") from None
        verify(bid, data)
        self._count_down(len(data))
        return data

    def upload(self, data: bytes) -> str:
        data = bytes(data)
        cid = blob_cid(data)
        self.blobs[cid] = data
        self._count_up(len(data))
        return cid

    async def download_many(self, cids: Iterable["str | BlobId"]) -> dict[str, bytes]:
        return {c: self.download(c) for c in _dedupe(cids)}

    async def upload_async(self, data: bytes) -> str:
        return self.upload(data)
