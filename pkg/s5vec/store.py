"""Chunk store: fetch, verify and cache raw chunk bytes over any :class:`BlobClient`.

* ``get(cid)``            -- from the LRU cache, else ``client.download`` (verified there).
* ``prefetch(cids)``      -- parallel ``client.download_many`` of the missing ones.
  Prefetched blobs are *pinned until read*: if the LRU has to evict one before any
  ``get`` asked for it (or it is bigger than the whole cache), it moves to a side
  table and the next ``get`` still returns it without a second download.
* ``get_decoded(cid, tag, decode)`` -- ``get`` plus the decoded form, kept beside the bytes.
* ``put(data)``           -- upload unless this store already uploaded or fetched it.
* ``put_many(blobs)``     -- the same for many, in parallel (async; the tab's commit).
* single-flight: concurrent requests for one CID (threads, coroutines, or both) share one
  download (see :class:`_Flights`); the waiters get the same bytes or the same error.
* ``stats()`` / ``snapshot()`` / ``diff()`` -- totals, and the change over a window (one search).

This is the process's one cache and ``cache_bytes`` its one byte budget: decoded chunk bodies
live exactly as long as their raw bytes. The budget counts the raw bytes only, and a decoded body
is a copy (cbor2 returns new byte strings, and arrays are built from them), so the memory it costs
is a multiple of the budget (about 3x, measured on a 3M-vector IVF-PQ index in the tab:
bench/bench_long_session.py). Counting decoded sizes in the budget is still to be done.
Counters are totals over the store's life; with concurrent users of one store a window
includes their traffic too.
"""
from __future__ import annotations

import asyncio
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence

from .errors import AuthError, IntegrityError, InvalidArgumentError, PortalError, QuotaError, S5VecError
from .s5.cid import BlobId, blob_cid
from .s5.client import BlobClient

__all__ = ["ChunkStore"]

_COUNTED = (
    "bytes_fetched",
    "chunks_fetched",
    "cache_hits",
    "cache_misses",
    "chunks_uploaded",
    "chunks_skipped",
    "bytes_uploaded",
    "evictions",
)


def _key(cid: "str | BlobId") -> str:
    """The canonical form of a CID (the cache key); parsing is memoised: a warm search looks up
    the same few hundred CIDs on every query (a batch, thousands), so a hit is one dict lookup."""
    if isinstance(cid, str):
        key = _KEYS.get(cid)
        if key is None:
            key = BlobId.parse(cid).to_string()
            if len(_KEYS) >= _KEYS_MAX:
                _KEYS.clear()
            _KEYS[cid] = key
        return key
    return BlobId.parse(cid).to_string()


_KEYS: dict[str, str] = {}
_KEYS_MAX = 1 << 17


class _Flights:
    """Single-flight of downloads: the first asker of a CID downloads it, later askers wait.

    A flight is a :class:`concurrent.futures.Future`, so it can be waited on from any thread
    (blocking) or from any event loop (``asyncio.wrap_future``).  In Pyodide there is one thread:
    a blocking wait there could never end, so blocking callers download on their own instead;
    the same holds on CPython for a blocking call on the thread whose event loop leads the flight.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._f: dict[str, Future] = {}

    def claim(self, keys: Iterable[str]) -> tuple[dict[str, Future], dict[str, Future]]:
        """(flights this caller now leads, flights others lead) for ``keys``."""
        mine: dict[str, Future] = {}
        theirs: dict[str, Future] = {}
        with self._lock:
            for k in keys:
                f = self._f.get(k)
                if f is None:
                    f = self._f[k] = Future()
                    f.leader = threading.get_ident()  # type: ignore[attr-defined]
                    mine[k] = f
                else:
                    theirs[k] = f
        return mine, theirs

    def land(self, key: str, data: bytes | None = None, error: BaseException | None = None) -> None:
        with self._lock:
            f = self._f.pop(key, None)
        if f is None or f.done():
            return
        if error is not None:
            f.set_exception(error)
        else:
            f.set_result(data)


_EMSCRIPTEN = sys.platform == "emscripten"


class ChunkStore:
    """Fetch-verify-cache of raw chunk bytes, bounded in bytes (LRU)."""

    def __init__(self, client: BlobClient, cache_bytes: int = 64 * 2**20) -> None:
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise InvalidArgumentError(f"cache_bytes must be a non-negative integer, got {cache_bytes!r}")
        self.client = client
        self.cache_limit = cache_bytes
        self._lock = threading.RLock()
        self._cache: "OrderedDict[str, bytes]" = OrderedDict()
        self._cache_bytes = 0
        self._unread: set[str] = set()  # prefetched, not yet returned by get()
        self._held: set[str] = set()  # already cached when a prefetch asked for them, not yet read
        self._pinned: dict[str, bytes] = {}  # prefetched (or held) but evicted / too big, not yet read
        self._known: set[str] = set()  # cids the portal(s) hold: uploaded or fetched by us
        self._decoded: dict[str, tuple[Any, Any]] = {}  # key -> (tag, decoded), only for keys in _cache
        self._c = dict.fromkeys(_COUNTED, 0)
        self._flights = _Flights()

    # ------------------------------------------------------------------ cache internals
    def _insert(self, key: str, data: bytes, *, unread: bool) -> None:
        """Put ``data`` in the LRU (lock held).  Evicted unread prefetches are pinned."""
        if unread:
            self._unread.add(key)
        if key in self._cache:
            self._cache.move_to_end(key)
            return
        n = len(data)
        if n > self.cache_limit:
            if unread:
                self._pinned[key] = data
            return
        self._cache[key] = data
        self._cache_bytes += n
        while self._cache_bytes > self.cache_limit:
            old, blob = self._cache.popitem(last=False)
            self._cache_bytes -= len(blob)
            self._c["evictions"] += 1
            self._decoded.pop(old, None)
            if old in self._unread or old in self._held:
                self._pinned[old] = blob

    def _lookup(self, key: str) -> bytes | None:
        """Cache/pinned lookup (lock held); marks the entry as read.

        A hit is counted only for bytes that were already here before this read was planned:
        reading what a prefetch just brought in is the fetch itself, not a cache hit."""
        fresh = key in self._unread
        data = self._cache.get(key)
        if data is not None:
            self._cache.move_to_end(key)
        else:
            data = self._pinned.pop(key, None)
            if data is not None:
                self._unread.discard(key)
                self._insert(key, data, unread=False)
        if data is not None:
            self._unread.discard(key)
            self._held.discard(key)
            if not fresh:
                self._c["cache_hits"] += 1
        return data

    def _record_fetch(self, key: str, data: bytes, *, unread: bool) -> None:
        self._c["bytes_fetched"] += len(data)
        self._c["chunks_fetched"] += 1
        self._known.add(key)
        self._insert(key, data, unread=unread)

    # ------------------------------------------------------------------ reads
    def __contains__(self, cid: "str | BlobId") -> bool:
        key = _key(cid)
        with self._lock:
            return key in self._cache or key in self._pinned

    def get(self, cid: "str | BlobId") -> bytes:
        """The verified bytes of ``cid`` (cache first, then the client)."""
        key = _key(cid)
        with self._lock:
            data = self._lookup(key)
            if data is not None:
                return data
            self._c["cache_misses"] += 1
        mine, theirs = ({}, {}) if _EMSCRIPTEN else self._flights.claim([key])
        if theirs:
            fut = theirs[key]
            if getattr(fut, "leader", None) != threading.get_ident():
                return fut.result()
            # led by a coroutine on this very thread: waiting would block its loop forever
        if not mine:
            data = self.client.download(cid if isinstance(cid, str) else key)
            with self._lock:
                self._record_fetch(key, data, unread=False)
            return data
        try:
            data = self.client.download(cid if isinstance(cid, str) else key)
        except BaseException as exc:
            self._flights.land(key, error=exc)
            raise
        with self._lock:
            self._record_fetch(key, data, unread=False)
        self._flights.land(key, data)
        return data

    def get_decoded(self, cid: "str | BlobId", tag: Any, decode: Callable[[bytes], Any]) -> Any:
        """``decode(get(cid))``, kept beside the cached bytes and dropped with them.

        ``tag`` names the decoding (e.g. the expected chunk kind): a different tag decodes again.
        """
        key = _key(cid)
        with self._lock:
            hit = self._decoded.get(key)
            if hit is not None and hit[0] == tag and key in self._cache:
                self._lookup(key)  # LRU order and the cache-hit count
                return hit[1]
        obj = decode(self.get(cid))
        with self._lock:
            if key in self._cache:
                self._decoded[key] = (tag, obj)
        return obj

    def get_decoded_many(self, cids: Sequence[str], tags: Sequence[Any],
                         decode: Callable[[bytes, Any], Any]) -> list[Any]:
        """:meth:`get_decoded` of every CID (``decode(data, tag)``), the ones already decoded under
        one lock: a warm batch search reads thousands of small chunks, and per-call overhead is
        what that costs (above all in Pyodide)."""
        out: list[Any] = [None] * len(cids)
        miss: list[int] = []
        with self._lock:
            decoded, cache, lookup = self._decoded, self._cache, self._lookup
            for i, (cid, tag) in enumerate(zip(cids, tags)):
                key = _key(cid)
                hit = decoded.get(key)
                if hit is not None and hit[0] == tag and key in cache:
                    lookup(key)
                    out[i] = hit[1]
                else:
                    miss.append(i)
        for i in miss:
            tag = tags[i]
            out[i] = self.get_decoded(cids[i], tag, lambda data, t=tag: decode(data, t))
        return out

    def missing(self, cids: Iterable["str | BlobId"]) -> list["str | BlobId"]:
        """The CIDs neither cached nor pinned (one lock for all)."""
        with self._lock:
            return [c for c in cids if _key(c) not in self._cache and _key(c) not in self._pinned]

    async def prefetch(self, cids: Iterable["str | BlobId"]) -> None:
        """Fetch the CIDs not already held, in parallel, into the cache (pinned until read)."""
        wanted: dict[str, str] = {}
        with self._lock:
            for c in cids:
                key = _key(c)
                if key in self._cache or key in self._pinned or key in wanted:
                    if key in self._cache:  # one round's chunks stay until read, even if evicted
                        self._cache.move_to_end(key)
                        self._held.add(key)
                    continue
                wanted[key] = c if isinstance(c, str) else key
        if not wanted:
            return
        mine, theirs = self._flights.claim(wanted)
        try:
            got = await self.client.download_many([wanted[k] for k in mine]) if mine else {}
        except BaseException as exc:
            err = exc if isinstance(exc, Exception) else PortalError("download abandoned")
            for key in mine:
                self._flights.land(key, error=err)
            raise
        with self._lock:
            for key in mine:
                data = got.get(wanted[key])
                if data is None:
                    data = got.get(key)
                if data is None:  # a client that silently skipped one: get() will fetch it
                    continue
                self._record_fetch(key, data, unread=True)
        for key in mine:
            data = got.get(wanted[key], got.get(key))
            if data is None:
                self._flights.land(key, error=PortalError(f"the client did not return {key}"))
            else:
                self._flights.land(key, data)
        for key, fut in theirs.items():
            # another caller's download of the same chunk: wait for it, and like any
            # prefetch make sure the bytes stay held until this caller's get() reads them
            data = await asyncio.wrap_future(fut)
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                elif key not in self._pinned:
                    self._pinned[key] = data
                self._held.add(key)

    def prefetch_sync(self, cids: Iterable["str | BlobId"]) -> None:
        """Blocking :meth:`prefetch` for synchronous callers."""
        cids = list(cids)
        with self._lock:
            if all(_key(c) in self._cache or _key(c) in self._pinned for c in cids):
                return  # all held (the warm path): no event loop to spin up
        if sys.platform == "emscripten":
            # Pyodide: no threads, and the WebLoop cannot be blocked on; the sync
            # client path (pyodide_http -> synchronous XHR) fetches one by one.
            for c in cids:
                key = _key(c)
                with self._lock:
                    if key in self._cache or key in self._pinned:
                        continue
                data = self.client.download(c if isinstance(c, str) else key)
                with self._lock:
                    self._record_fetch(key, data, unread=True)
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.prefetch(cids))
            return
        # called from inside a running loop (CPython): run the coroutine on a helper thread
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="s5prefetch") as ex:
            ex.submit(asyncio.run, self.prefetch(cids)).result()

    # ------------------------------------------------------------------ writes
    def put(self, data: bytes, *, cache: bool = False) -> str:
        """Upload ``data`` unless already known; returns its CID.

        With ``cache=True`` the bytes also go into the read cache.
        """
        data = bytes(data)
        cid = blob_cid(data)
        with self._lock:
            known = cid in self._known
            if known:
                self._c["chunks_skipped"] += 1
        if not known:
            got = self.client.upload(data)
            if BlobId.parse(got) != BlobId.parse(cid):  # clients already check; belt and braces
                raise IntegrityError(f"upload returned {got}, expected {cid}")
            with self._lock:
                self._known.add(cid)
                self._c["chunks_uploaded"] += 1
                self._c["bytes_uploaded"] += len(data)
        if cache:
            with self._lock:
                self._insert(cid, data, unread=False)
        return cid

    async def put_many(self, blobs: Sequence[bytes], *, parallel: int = 6,
                       progress: Callable[[dict[str, int]], None] | None = None) -> list[str]:
        """Upload the blobs not known yet, ``parallel`` at a time (``client.upload_async``); returns
        their CIDs in order. Every upload is tried even when one fails; those that succeeded become
        known (a retry skips them), then the most telling error is raised: AuthError (no or a
        refused token), QuotaError, else PortalError. ``progress`` gets {done, total, bytes,
        totalBytes, uploaded, skipped} after each blob."""
        datas = [bytes(b) for b in blobs]
        cids = [blob_cid(d) for d in datas]
        todo: dict[str, bytes] = {}
        with self._lock:
            for c, d in zip(cids, datas):
                if c in self._known or c in todo:
                    self._c["chunks_skipped"] += 1
                else:
                    todo[c] = d
        state = {"done": len(datas) - len(todo), "total": len(datas), "bytes": 0,
                 "totalBytes": sum(len(d) for d in todo.values()), "uploaded": 0,
                 "skipped": len(datas) - len(todo)}
        if progress:
            progress(dict(state))
        sem = asyncio.Semaphore(max(1, parallel))
        errors: list[BaseException] = []

        async def one(cid: str, data: bytes) -> None:
            async with sem:
                try:
                    got = await self.client.upload_async(data)
                    if BlobId.parse(got) != BlobId.parse(cid):
                        raise IntegrityError(f"upload returned {got}, expected {cid}")
                except S5VecError as e:
                    errors.append(e)
                    return
                with self._lock:
                    self._known.add(cid)
                    self._c["chunks_uploaded"] += 1
                    self._c["bytes_uploaded"] += len(data)
                state["done"] += 1
                state["uploaded"] += 1
                state["bytes"] += len(data)
                if progress:
                    progress(dict(state))

        await asyncio.gather(*(one(c, d) for c, d in todo.items()))
        if errors:
            for kind in (AuthError, QuotaError, IntegrityError, PortalError):
                first = next((e for e in errors if isinstance(e, kind)), None)
                if first is not None:
                    raise first
            raise errors[0]
        return cids

    # ------------------------------------------------------------------ housekeeping
    def clear(self) -> None:
        """Drop the cache and the pinned prefetches (counters and known CIDs stay)."""
        with self._lock:
            self._cache.clear()
            self._cache_bytes = 0
            self._pinned.clear()
            self._unread.clear()
            self._held.clear()
            self._decoded.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            s = dict(self._c)
            s.update(
                cache_bytes=self._cache_bytes,
                cache_entries=len(self._cache),
                cache_limit=self.cache_limit,
                pinned_bytes=sum(len(v) for v in self._pinned.values()),
                pinned_entries=len(self._pinned),
            )
            return s

    def snapshot(self) -> dict[str, int]:
        """Current counter values (pass to :meth:`diff` later)."""
        with self._lock:
            return dict(self._c)

    def diff(self, before: dict[str, int]) -> dict[str, int]:
        """Counter changes since ``before`` (from :meth:`snapshot`)."""
        now = self.snapshot()
        return {k: now[k] - before.get(k, 0) for k in _COUNTED}
