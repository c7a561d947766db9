"""Portal clients: fetch and store S5 blobs over the portal HTTP API.

* ``GET  {portal}/s5/blob/{cid}``  -> the blob's bytes (redirects are followed)
* ``POST {portal}/s5/upload``      -> multipart/form-data, field ``file``; reply ``{"cid": "..."}``
  (with ``Authorization: Bearer <token>`` when the client has a token; reads never send it, so a
  browser's blob fetches stay simple CORS requests)

Every downloaded body is verified against its CID (size and BLAKE3) *before* it is
returned; a portal that serves wrong bytes is skipped for that CID and the next
portal is tried.

How a download degrades gracefully when portals are slow or broken (one policy, two runtimes):

* **Deadline per blob.**  ``timeout`` bounds the whole download of one blob -- connecting,
  every retry and every byte of the body, on every portal -- not one socket read: a portal
  that trickles one byte a second is cut off when the deadline passes.
* **Portal health** (:class:`PortalHealth`, one per client, i.e. per session).  A portal that
  failed, timed out or lost a hedge race goes to the back of the order and stays there for a
  cool-down (doubling on repeated failures); then one request probes it again, and a success
  brings it back to its configured place.
* **Hedging.**  If the first portal has not answered after a short delay derived from the
  latencies seen so far (``max(50 ms, 3 x p50)``; 250 ms before any were seen), the next portal
  is asked too; the first *verified* answer wins and the other request is cancelled (its socket
  is closed on CPython, its ``fetch`` aborted in the browser).

On CPython an attempt is a blocking :mod:`http.client` exchange on a daemon thread (so it can be
cut off by closing its socket); in Pyodide it is ``pyodide.http.pyfetch``, whose request is
aborted when its task is cancelled.  The hedging loop itself (:meth:`PortalClient.fetch`) is
the same coroutine in both.  The synchronous ``download`` runs that coroutine on CPython; in
Pyodide (no threads, and the WebLoop cannot be blocked on) it is a sequential loop over
``urllib`` patched by ``pyodide_http`` (synchronous XHR), still in health order and under the
deadline.

Byte and request counters live in the chunk store (``s5vec.store``), not here.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

from ..errors import AuthError, CIDError, IntegrityError, InvalidArgumentError, NotFoundError, PortalError, QuotaError
from .cid import BlobId, blob_cid, verify

__all__ = ["BlobClient", "PortalClient", "PortalHealth", "MemoryClient"]

IS_PYODIDE = sys.platform == "emscripten"
_MAX_PARALLEL = 16  # blobs downloaded at once by one download_many call
_MAX_REDIRECTS = 5
_READ_CHUNK = 1 << 16
_patched = False
_patch_lock = threading.Lock()

# kinds of attempt outcome
_OK, _NOTFOUND, _INTEGRITY, _ERROR, _FATAL = "ok", "notfound", "integrity", "error", "fatal"


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
    """What the chunk store needs from a blob transport (the store does the counting)."""

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
    """failures: (portal, kind, reason) with kind in {"integrity", "notfound", "error", "fatal"}."""
    detail = "; ".join(f"{p}: {r}" for p, _, r in failures) or "no portal tried"
    kinds = {k for _, k, _ in failures}
    if _INTEGRITY in kinds:
        raise IntegrityError(f"no portal served valid bytes for {cid} ({detail})")
    if kinds == {_NOTFOUND}:
        raise NotFoundError(f"blob {cid} not found on any portal ({detail})")
    raise PortalError(f"could not download {cid} ({detail})")


# ---------------------------------------------------------------------------------------- health
class PortalHealth:
    """What one session has learnt about its portals: latency, failures, cool-downs.

    ``order()`` is the configured order with portals in cool-down moved to the back; when a
    cool-down ends, exactly one request gets that portal in its configured place again (the
    probe) until the probe's outcome is known.  Thread-safe (one client may serve many threads).
    """

    def __init__(self, portals: list[str], *, cooldown: float = 5.0, max_cooldown: float = 120.0,
                 min_hedge: float = 0.05, first_hedge: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.portals = list(portals)
        self.cooldown, self.max_cooldown = cooldown, max_cooldown
        self.min_hedge, self.first_hedge = min_hedge, first_hedge
        self.clock = clock
        self._lock = threading.Lock()
        self._fails = dict.fromkeys(self.portals, 0)  # consecutive failures
        self._down_until = dict.fromkeys(self.portals, 0.0)
        self._probing: set[str] = set()
        self._latency: list[float] = []  # recent successful download times (s)

    def order(self) -> list[str]:
        now = self.clock()
        with self._lock:
            up, down = [], []
            for p in self.portals:
                if not self._fails[p]:
                    up.append(p)
                elif now >= self._down_until[p] and p not in self._probing:
                    self._probing.add(p)  # this request probes it
                    up.append(p)
                else:
                    down.append(p)
            down.sort(key=lambda p: self._down_until[p])
            return up + down

    def ok(self, portal: str, seconds: float) -> None:
        with self._lock:
            self._fails[portal] = 0
            self._probing.discard(portal)
            self._latency.append(seconds)
            del self._latency[:-64]

    def failed(self, portal: str) -> None:
        """A timeout, a network or server error, wrong bytes, or a lost hedge race."""
        with self._lock:
            n = self._fails[portal] = self._fails[portal] + 1
            self._down_until[portal] = self.clock() + min(self.max_cooldown, self.cooldown * 2 ** (n - 1))
            self._probing.discard(portal)

    def settled(self, portal: str) -> None:
        """An answer that says nothing about health (e.g. 404): end a probe without a verdict."""
        with self._lock:
            self._probing.discard(portal)

    def hedge_delay(self) -> float:
        with self._lock:
            if not self._latency:
                return self.first_hedge
            lat = sorted(self._latency)
            return max(self.min_hedge, 3.0 * lat[len(lat) // 2])

    def is_down(self, portal: str) -> bool:
        with self._lock:
            return self._fails[portal] > 0

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            return {p: {"failures": self._fails[p], "cooldown": max(0.0, self._down_until[p] - now) if self._fails[p] else 0.0}
                    for p in self.portals}


# ---------------------------------------------------------------------------------------- CPython HTTP
class _Cancel:
    """Lets another thread cut off a blocking HTTP exchange by shutting its socket down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cancelled = False
        self._sock: socket.socket | None = None

    def attach(self, sock: "socket.socket | None") -> bool:
        with self._lock:
            self._sock = sock
            return not self.cancelled

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _http_get(url: str, headers: dict[str, str], deadline: float, max_bytes: int, cancel: _Cancel
              ) -> tuple[int, bytes | str]:
    """One GET under an absolute deadline (monotonic): (200, body) or (status, reason).

    Status 0 means no HTTP answer (refused, reset, timed out, cancelled).  A body longer than
    ``max_bytes`` is not read past that point (the caller's size check then fails it).
    """
    for _ in range(_MAX_REDIRECTS + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            return 0, "timed out (deadline)"
        u = urllib.parse.urlsplit(url)
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        try:
            conn = cls(u.hostname or "", u.port, timeout=left)
        except (ValueError, OSError) as e:
            return 0, f"bad portal URL ({e})"
        try:
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            conn.request("GET", path, headers=headers)
            sock = conn.sock  # kept: the connection drops its reference once the response will close it
            if not cancel.attach(sock):
                return 0, "cancelled"
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urllib.parse.urljoin(url, resp.getheader("Location"))
                continue
            parts: list[bytes] = []
            got = 0
            limit = max_bytes + 1 if resp.status == 200 else 4096
            while got < limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 0, f"timed out (deadline) after {got} bytes"
                sock.settimeout(left)
                part = resp.read1(min(_READ_CHUNK, limit - got))
                if not part:
                    break
                parts.append(part)
                got += len(part)
            body = b"".join(parts)
            if resp.status == 200:
                return 200, body
            msg = body[:200].decode("utf-8", "replace").strip()
            return resp.status, f"HTTP {resp.status}{': ' + msg if msg else ''}"
        except (socket.timeout, TimeoutError):
            return 0, "timed out (deadline)" if time.monotonic() >= deadline else "timed out"
        except (OSError, http.client.HTTPException, ValueError) as e:
            if cancel.cancelled:
                return 0, "cancelled"
            return 0, f"unreachable ({type(e).__name__}: {e})"
        finally:
            conn.close()
    return 0, "too many redirects"


def _in_thread(fn: Callable[[], Any]) -> "asyncio.Future[Any]":
    """Run blocking ``fn`` on a daemon thread; an awaitable for its result on the running loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        try:
            res: tuple[bool, Any] = (True, fn())
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
            res = (False, e)
        try:
            loop.call_soon_threadsafe(deliver, *res)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, daemon=True, name="s5dl").start()
    return fut


def _run_coro(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code on CPython (even inside a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001
            box["e"] = e

    t = threading.Thread(target=runner, daemon=True, name="s5dl-sync")
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


# ---------------------------------------------------------------------------------------- client
class PortalClient:
    """HTTP client for one or more S5 portals: deadline per blob, health ordering, hedging.

    ``timeout``     seconds for one blob, all portals and retries included (the deadline)
    ``retries``     extra attempts per portal after a network error or a 5xx
    ``auth_token``  sent as ``Authorization: Bearer`` on uploads
    ``hedge``       ask the next portal too when the first is slow (default on)
    """

    def __init__(
        self,
        portals: list[str],
        *,
        timeout: float = 10.0,
        retries: int = 1,
        auth_token: str | None = None,
        hedge: bool = True,
    ) -> None:
        if isinstance(portals, str):
            portals = [portals]
        if not portals:
            raise InvalidArgumentError("PortalClient needs at least one portal URL")
        clean = []
        for p in portals:
            if not isinstance(p, str) or not p.startswith(("http://", "https://")):
                raise InvalidArgumentError(f"portal URL must start with http:// or https://, got {p!r}")
            clean.append(p.rstrip("/"))
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            raise InvalidArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgumentError("retries must be an integer >= 0")
        if auth_token is not None and (not isinstance(auth_token, str) or not auth_token
                                       or any(c in auth_token for c in "\r\n")):
            raise InvalidArgumentError("auth_token must be a non-empty string on one line")
        self.portals: list[str] = list(dict.fromkeys(clean))
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.auth_token = auth_token
        self.hedge = bool(hedge)
        self.backoff = 0.05  # seconds; doubled on each retry
        self.health = PortalHealth(self.portals)
        self._lock = threading.Lock()
        # cid -> portals that served bad bytes for it (skipped on later attempts)
        self._bad: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"PortalClient({self.portals!r})"

    # ------------------------------------------------------------ helpers
    def _headers(self, *, upload: bool = False) -> dict[str, str]:
        h = {"User-Agent": "s5vec", "Accept": "*/*"}
        if upload and self.auth_token:
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
        """(portals to try in order, portals known to serve wrong bytes for ``cid``)."""
        with self._lock:
            bad = set(self._bad.get(cid, ()))
        order = self.health.order()
        return [p for p in order if p not in bad], [p for p in self.portals if p in bad]

    @staticmethod
    def _check(cid: str, bid: BlobId, portal: str, status: int, body: "bytes | str") -> tuple[str, "bytes | str"]:
        """Classify one HTTP outcome: ok (verified bytes), notfound, integrity, error (retry), fatal."""
        if status == 200 and isinstance(body, str):  # refused before reading (e.g. too long)
            return _INTEGRITY, body
        if status == 200:
            try:
                verify(bid, body)
            except IntegrityError as e:
                return _INTEGRITY, str(e)
            return _OK, body
        if status == 404:
            return _NOTFOUND, "404 not found"
        if status and status < 500:
            return _FATAL, str(body)
        return _ERROR, str(body)

    # ------------------------------------------------------------ one attempt (runtime-specific)
    async def _attempt(self, portal: str, cid: str, bid: BlobId, deadline: float, round_: int
                       ) -> tuple[str, "bytes | str"]:
        """One try of one portal; never raises except CancelledError."""
        if round_:
            await asyncio.sleep(min(self.backoff * 2 ** (round_ - 1), max(0.0, deadline - time.monotonic())))
        if IS_PYODIDE:  # pragma: no cover - runs in Pyodide
            return await self._attempt_pyfetch(portal, cid, bid, deadline)
        url = self.blob_url(portal, cid)
        headers = self._headers()
        for reload in (False, True):
            cancel = _Cancel()
            target = self.reload_url(url) if reload else url
            try:
                status, body = await _in_thread(lambda: _http_get(target, headers, deadline, bid.size, cancel))
            except asyncio.CancelledError:
                cancel.cancel()
                raise
            kind, val = self._check(cid, bid, portal, status, body)
            if kind != _INTEGRITY:
                return kind, val
            # A cache on the way may have held bad bytes: ask once more under a URL none holds.
        self._mark_bad(cid, portal)
        return _INTEGRITY, f"portal served bytes that do not match {cid} ({val})"

    async def _attempt_pyfetch(self, portal: str, cid: str, bid: BlobId, deadline: float
                               ) -> tuple[str, "bytes | str"]:  # pragma: no cover - runs in Pyodide
        from pyodide.http import pyfetch  # type: ignore[import-not-found]

        url = self.blob_url(portal, cid)
        headers = self._headers()
        headers.pop("User-Agent", None)  # forbidden header in browsers

        async def get(u: str, **kw: Any) -> tuple[int, "bytes | str"]:
            resp = await pyfetch(u, headers=headers, **kw)
            if resp.status != 200:
                return resp.status, f"HTTP {resp.status}"
            n = resp.headers.get("content-length")
            if n and n.isdigit() and int(n) > bid.size:
                return 200, f"size mismatch: portal announced {n} bytes, expected {bid.size}"
            return 200, await resp.bytes()

        kind, val = _ERROR, "no attempt"
        for reload in (False, True):
            left = deadline - time.monotonic()
            if left <= 0:
                return _ERROR, "timed out (deadline)"
            try:
                status, body = await asyncio.wait_for(
                    get(self.reload_url(url), cache="reload") if reload else get(url), left)
            except asyncio.TimeoutError:
                return _ERROR, "timed out (deadline)"
            except asyncio.CancelledError:
                raise
            except Exception as e:  # network error / CORS failure / abort
                return _ERROR, f"unreachable ({type(e).__name__}: {e})"
            kind, val = self._check(cid, bid, portal, status, body)
            if kind != _INTEGRITY:
                return kind, val
        self._mark_bad(cid, portal)
        return _INTEGRITY, f"portal served bytes that do not match {cid} ({val})"

    # ------------------------------------------------------------ the hedging loop
    async def fetch(self, cid: "str | BlobId") -> bytes:
        """Download and verify one blob: health order, hedging, retries, one deadline."""
        cid_s, bid = _parse_cid(cid)
        t_start = time.monotonic()
        deadline = t_start + self.timeout
        good, bad = self._candidates(cid_s)
        failures: list[tuple[str, str, str]] = [(p, _INTEGRITY, "served wrong bytes earlier") for p in bad]
        queue: list[tuple[str, int]] = [(p, 0) for p in good]
        running: dict["asyncio.Task[tuple[str, bytes | str]]", tuple[str, int, float]] = {}
        next_launch = t_start
        try:
            while queue or running:
                now = time.monotonic()
                if now >= deadline:
                    for t, (p, _, _) in running.items():
                        t.cancel()
                        self.health.failed(p)
                        failures.append((p, _ERROR, f"no answer within the {self.timeout:g} s deadline"))
                    break
                if queue and (not running or (self.hedge and now >= next_launch)):
                    portal, rnd = queue.pop(0)
                    task = asyncio.ensure_future(self._attempt(portal, cid_s, bid, deadline, rnd))
                    running[task] = (portal, rnd, now)
                    next_launch = now + self.health.hedge_delay()
                    continue
                wait = deadline - now
                if queue and self.hedge:
                    wait = min(wait, next_launch - now)
                done, _ = await asyncio.wait(list(running), timeout=max(0.0, wait),
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    portal, rnd, started = running.pop(task)
                    kind, val = task.result()
                    if kind == _OK:
                        self.health.ok(portal, time.monotonic() - started)
                        for other, (p, _, t_other) in running.items():
                            other.cancel()
                            if t_other <= started:  # it had a head start and still lost: to the back
                                self.health.failed(p)
                            else:  # a hedge launched later, cut short: no verdict
                                self.health.settled(p)
                        running.clear()
                        assert isinstance(val, bytes)
                        return val
                    failures.append((portal, kind, str(val)))
                    if kind == _NOTFOUND:
                        self.health.settled(portal)
                    else:
                        self.health.failed(portal)
                    if kind == _ERROR and rnd < self.retries:
                        queue.append((portal, rnd + 1))
                    next_launch = time.monotonic()  # a failure: try the next one now
        finally:
            for t in running:
                t.cancel()
            if running:
                await asyncio.wait(list(running), timeout=1.0)
        _raise_for_failures(cid_s, failures)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ API
    def download(self, cid: "str | BlobId") -> bytes:
        """Download and verify one blob (blocking)."""
        cid_s, bid = _parse_cid(cid)
        if IS_PYODIDE:  # pragma: no cover - runs in Pyodide
            return self._download_xhr(cid_s, bid)
        return _run_coro(self.fetch(cid_s))

    async def download_many(self, cids: Iterable["str | BlobId"]) -> dict[str, bytes]:
        """Download several blobs in parallel; raises on the first CID no portal can serve."""
        todo = _dedupe(cids)
        if not todo:
            return {}
        sem = asyncio.Semaphore(_MAX_PARALLEL)

        async def one(c: str) -> bytes:
            async with sem:
                return await self.fetch(c)

        tasks = [asyncio.ensure_future(one(c)) for c in todo]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=1.0)
            raise
        return dict(zip(todo, results))

    def _download_xhr(self, cid: str, bid: BlobId) -> bytes:  # pragma: no cover - runs in Pyodide
        """Pyodide's blocking path: portals one after another (health order) under the deadline."""
        _ensure_pyodide_http()
        deadline = time.monotonic() + self.timeout
        good, bad = self._candidates(cid)
        failures: list[tuple[str, str, str]] = [(p, _INTEGRITY, "served wrong bytes earlier") for p in bad]
        for portal in good:
            for rnd in range(self.retries + 1):
                left = deadline - time.monotonic()
                if left <= 0:
                    failures.append((portal, _ERROR, "timed out (deadline)"))
                    break
                t0 = time.monotonic()
                status, body = self._request(self.blob_url(portal, cid), timeout=left)
                kind, val = self._check(cid, bid, portal, status, body if status == 200 else self._describe(status, body))
                if kind == _OK:
                    self.health.ok(portal, time.monotonic() - t0)
                    assert isinstance(val, bytes)
                    return val
                if kind == _INTEGRITY:
                    self._mark_bad(cid, portal)
                (self.health.settled if kind == _NOTFOUND else self.health.failed)(portal)
                failures.append((portal, kind, str(val)))
                if kind != _ERROR:
                    break
        _raise_for_failures(cid, failures)
        raise AssertionError("unreachable")

    def _request(self, url: str, *, method: str = "GET", body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float | None = None) -> tuple[int, bytes]:
        """One urllib exchange: (status, body).  Network failures give (0, reason bytes).

        Works both with the stdlib (4xx/5xx raise HTTPError) and with pyodide_http's
        patched ``urlopen`` (which returns every status and raises JS errors on
        network failures), so the status is checked in both places.
        """
        req = urllib.request.Request(url, data=body, headers=headers or self._headers(), method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
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

    def upload(self, data: bytes) -> str:
        """Upload ``data`` to the first portal (health order) that accepts it; returns its CID."""
        _ensure_pyodide_http()
        data = bytes(data)
        expected = blob_cid(data)
        boundary, body = _multipart(data)
        failures: list[str] = []
        statuses: list[int] = []
        for portal in self.health.order():
            url = f"{portal}/s5/upload"
            delay = self.backoff
            for attempt in range(self.retries + 1):
                headers = self._headers(upload=True)
                headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
                headers["Accept"] = "application/json"
                status, raw = self._request(url, method="POST", body=body, headers=headers)
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
                    return expected
                failures.append(f"{portal}: {self._describe(status, raw)}")
                statuses.append(status)
                if not (status == 0 or status >= 500) or attempt >= self.retries:
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
        for portal in self.health.order():
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


class MemoryClient:
    """In-memory blob client for tests: same API as :class:`PortalClient`.

    ``blobs`` maps the canonical base32 CID to the stored bytes; tests may tamper
    with it (downloads still verify, raising :class:`IntegrityError`).  As a test fake it
    counts what it served (``blobs_downloaded`` ...), so tests can check the store's counters
    against what really crossed the "wire".
    """

    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        self._lock = threading.Lock()
        self.bytes_downloaded = self.blobs_downloaded = self.bytes_uploaded = self.blobs_uploaded = 0
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
        with self._lock:
            self.bytes_downloaded += len(data)
            self.blobs_downloaded += 1
        return data

    def upload(self, data: bytes) -> str:
        data = bytes(data)
        cid = blob_cid(data)
        self.blobs[cid] = data
        with self._lock:
            self.bytes_uploaded += len(data)
            self.blobs_uploaded += 1
        return cid

    async def download_many(self, cids: Iterable["str | BlobId"]) -> dict[str, bytes]:
        return {c: self.download(c) for c in _dedupe(cids)}

    async def upload_async(self, data: bytes) -> str:
        return self.upload(data)
