"""Chunk store: fetch, verify and cache raw chunk bytes over any :class:`BlobClient`.

* ``get(cid)``            -- from the LRU cache, else ``client.download`` (verified there).
* ``prefetch(cids)``      -- parallel ``client.download_many`` of the missing ones.
  Prefetched blobs are *pinned until read*: if the LRU has to evict one before any
  ``get`` asked for it (or it is bigger than the whole cache), it moves to a side
  table and the next ``get`` still returns it without a second download.
* ``get_decoded(cid, tag, decode)`` -- ``get`` plus the decoded form, kept *instead of* the bytes.
* ``peek_decoded(cid, tag)`` -- the decoded form if the chunk is held decoded, else None (no fetch).
* ``keep(cids)`` / ``release(cids)`` -- chunks an open index holds for its life (resident: counted,
  never evicted, since evicting them would free nothing).
* ``put(data)``           -- upload unless this store already uploaded or fetched it.
* ``put_many(blobs)``     -- the same for many, in parallel (async; the tab's commit).
* single-flight: concurrent requests for one CID (threads, coroutines, or both) share one
  download (see :class:`_Flights`); the waiters get the same bytes or the same error.
* ``stats()`` / ``snapshot()`` / ``diff()`` -- totals, and the change over a window (one search).

This is the process's one cache and ``cache_bytes`` its one byte budget, and the budget counts
what is really held: one copy per chunk. A chunk arrives as raw bytes (verified against its CID
by the client); the first ``get_decoded`` decodes it, and from then on the store keeps the decoded
body only -- the raw bytes are dropped (cbor2 copies every byte string it decodes, so keeping both
cost two copies; with ids and metadata offsets as Python lists, 3.2x the budget was measured in the
tab at 3M: bench/bench_long_session.py) -- and charges its :func:`footprint` (deep ``sys.getsizeof``
of the body, arrays by the buffer they view). Keeping the decoded body, not the bytes, keeps a warm
query free of decoding: a warm 1M query reads ~35 chunks, and in the tab cbor2 is pure Python (its
C extension, 0.02 ms per 20 KB list chunk on CPython, does not exist there); the decoded body
costs 1.1-1.2x the raw bytes (1M index: list chunks 20.7 -> 23.1 KB, refine chunks 3.1 -> 3.7 KB). A raw ``get`` of a chunk held only decoded downloads it again (nothing
reads one chunk both ways). Chunks an index holds for its life (what an open fetched) are
``keep``-ed: counted, never evicted. ``stats()``: ``cache_bytes`` = everything accounted (LRU +
resident), always <= ``cache_limit`` except for the chunks of the round being read, which are held
until read whatever the budget (``pinned_bytes``, for a moment).
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

__all__ = ["ChunkStore", "footprint"]

_RAW = object()  # an entry not decoded (yet)


class _Entry:
    """One held chunk: its raw bytes until decoded, then the decoded body only; ``size`` is what it is charged."""

    __slots__ = ("data", "tag", "obj", "size")

    def __init__(self, data: bytes) -> None:
        self.data: bytes | None = data
        self.tag: Any = None
        self.obj: Any = _RAW
        self.size = len(data)


_ATOMS = (bytes, bytearray, str, int, float, bool, type(None))


def footprint(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes ``obj`` holds, deep (``sys.getsizeof`` of every object reachable through containers,
    ``__slots__`` and ``__dict__``, each object once): an array counts its header plus the buffer it
    views (a ``frombuffer`` view on a decoded byte string counts that string). What a decoded chunk
    body costs in memory, give or take the allocator's rounding."""
    if seen is None:
        seen = set()
    i = id(obj)
    if i in seen:
        return 0
    seen.add(i)
    n = sys.getsizeof(obj)
    if isinstance(obj, _ATOMS):
        return n
    np = sys.modules.get("numpy")  # not imported here: the transport layer runs without NumPy,
    if np is not None and isinstance(obj, np.ndarray):  # and without it no object is an ndarray
        base = obj.base
        return n if base is None else n + footprint(base, seen)
    if isinstance(obj, memoryview):
        return n + footprint(obj.obj, seen)
    if isinstance(obj, dict):
        for k, v in obj.items():
            n += footprint(k, seen) + footprint(v, seen)
        return n
    if isinstance(obj, (list, tuple, set, frozenset)):
        if obj and all(type(v) is str for v in obj):  # ids: the common big case, one C loop
            return n + sum(map(sys.getsizeof, obj))
        for v in obj:
            n += footprint(v, seen)
        return n
    slots = getattr(type(obj), "__slots__", None)
    if slots is not None:
        for name in ((slots,) if isinstance(slots, str) else slots):
            n += footprint(getattr(obj, name, None), seen)
    d = getattr(obj, "__dict__", None)
    if d is not None:
        n += footprint(d, seen)
    return n

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
            if key == cid:
                key = cid  # one string object, not two (the memo is outside the cache budget)
            if len(_KEYS) >= _KEYS_MAX:
                _KEYS.clear()
            _KEYS[cid] = key
        return key
    return BlobId.parse(cid).to_string()


_KEYS: dict[str, str] = {}
_KEYS_MAX = 1 << 15  # ~32k CIDs (~5 MB of strings at most): more than a warm batch of 500 3M queries reads


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
    """Fetch-verify-cache of chunks, bounded in bytes of what is held (LRU; see the module docstring)."""

    def __init__(self, client: BlobClient, cache_bytes: int = 64 * 2**20) -> None:
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise InvalidArgumentError(f"cache_bytes must be a non-negative integer, got {cache_bytes!r}")
        self.client = client
        self.cache_limit = cache_bytes
        self._lock = threading.RLock()
        self._cache: "OrderedDict[str, _Entry]" = OrderedDict()
        self._cache_bytes = 0  # charged by the LRU's entries
        self._resident: dict[str, _Entry] = {}  # kept by open indexes: counted, never evicted
        self._resident_bytes = 0
        self._keeps: dict[str, int] = {}  # key -> how many keep() calls hold it
        self._unread: set[str] = set()  # prefetched, not yet returned by get()
        self._held: set[str] = set()  # already cached when a prefetch asked for them, not yet read
        self._pinned: dict[str, _Entry] = {}  # prefetched (or held) but evicted / too big, not yet read
        self._known: set[str] = set()  # cids the portal(s) hold: uploaded or fetched by us
        self._c = dict.fromkeys(_COUNTED, 0)
        self._flights = _Flights()

    # ------------------------------------------------------------------ cache internals
    def _entry(self, key: str) -> "_Entry | None":
        """The entry of ``key`` in the LRU or the resident set (lock held); no side effects."""
        e = self._cache.get(key)
        return e if e is not None else self._resident.get(key)

    def _evict(self) -> None:
        """Evict least-recent entries until what is charged fits (lock held). Evicted entries a
        round has not read yet are pinned."""
        room = self.cache_limit - self._resident_bytes
        while self._cache_bytes > room and self._cache:
            old, e = self._cache.popitem(last=False)
            self._cache_bytes -= e.size
            self._c["evictions"] += 1
            if old in self._unread or old in self._held:
                self._pinned[old] = e

    def _add(self, key: str, e: _Entry, *, unread: bool) -> None:
        """Put entry ``e`` in the LRU (lock held); one bigger than the whole budget is not kept
        (pinned when a round still has to read it)."""
        if e.size > self.cache_limit - self._resident_bytes:
            if unread or key in self._held:
                self._pinned[key] = e
            return
        self._cache[key] = e
        self._cache_bytes += e.size
        self._evict()

    def _insert(self, key: str, data: bytes, *, unread: bool) -> None:
        """Put fetched ``data`` in the LRU (lock held).  Evicted unread prefetches are pinned."""
        if unread:
            self._unread.add(key)
        e = self._entry(key)
        if e is not None:
            if key in self._cache:
                self._cache.move_to_end(key)
            if e.data is None:  # held decoded only, and the raw bytes were asked for again
                e.data = data
                self._resize(key, e, e.size + len(data))
            return
        self._add(key, _Entry(data), unread=unread)

    def _resize(self, key: str, e: _Entry, size: int) -> None:
        """Charge ``e`` ``size`` bytes from now on (lock held; it may evict, itself last)."""
        if key in self._resident:
            self._resident_bytes += size - e.size
            e.size = size
            self._evict()
        elif key in self._cache:
            self._cache_bytes += size - e.size
            e.size = size
            self._cache.move_to_end(key)
            if size > self.cache_limit - self._resident_bytes:
                del self._cache[key]
                self._cache_bytes -= size
                self._c["evictions"] += 1
            else:
                self._evict()
        else:
            e.size = size

    def _lookup(self, key: str) -> "_Entry | None":
        """Cache/pinned lookup (lock held); marks the entry as read.

        A hit is counted only for chunks that were already here before this read was planned:
        reading what a prefetch just brought in is the fetch itself, not a cache hit."""
        fresh = key in self._unread
        e = self._cache.get(key)
        if e is not None:
            self._cache.move_to_end(key)
        else:
            e = self._resident.get(key)
            if e is None:
                e = self._pinned.pop(key, None)
                if e is not None:
                    self._unread.discard(key)
                    self._held.discard(key)
                    self._add(key, e, unread=False)
        if e is not None:
            self._unread.discard(key)
            self._held.discard(key)
            if not fresh:
                self._c["cache_hits"] += 1
        return e

    def _record_fetch(self, key: str, data: bytes, *, unread: bool) -> None:
        self._c["bytes_fetched"] += len(data)
        self._c["chunks_fetched"] += 1
        self._known.add(key)
        self._insert(key, data, unread=unread)

    def _holds(self, key: str) -> bool:
        return key in self._cache or key in self._resident or key in self._pinned

    # ------------------------------------------------------------------ reads
    def __contains__(self, cid: "str | BlobId") -> bool:
        key = _key(cid)
        with self._lock:
            return self._holds(key)

    def get(self, cid: "str | BlobId") -> bytes:
        """The verified bytes of ``cid`` (cache first, then the client)."""
        key = _key(cid)
        with self._lock:
            e = self._lookup(key)
            if e is not None and e.data is not None:
                return e.data
            if e is not None:
                self._c["cache_hits"] -= 1  # held decoded only: the raw bytes are a miss
            self._c["cache_misses"] += 1
        return self._download(cid, key)

    def _download(self, cid: "str | BlobId", key: str) -> bytes:
        """Download ``cid`` (single-flight with other askers where threads allow) and cache it."""
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
        """``decode(get(cid))``, kept instead of the bytes (one copy per chunk, charged its
        :func:`footprint`) and dropped with the entry.

        ``tag`` names the decoding (e.g. the expected chunk kind): a different tag decodes again
        (from the raw bytes, downloaded again if only the other decoding is held).
        """
        key = _key(cid)
        with self._lock:
            e = self._lookup(key)
            if e is not None and e.obj is not _RAW and e.tag == tag:
                return e.obj
            data = e.data if e is not None else None
            if e is not None and data is None:
                self._c["cache_hits"] -= 1
                self._c["cache_misses"] += 1
            elif e is None:
                self._c["cache_misses"] += 1
        if data is None:
            data = self._download(cid, key)
        obj = decode(data)
        size = footprint(obj)
        with self._lock:
            e = self._entry(key)
            if e is None:  # evicted meanwhile, or bigger than the whole budget: not kept
                return obj
            e.obj, e.tag = obj, tag
            e.data = None  # from now on the decoded body is the one copy
            self._resize(key, e, size)
        return obj

    def peek_decoded(self, cid: "str | BlobId", tag: Any) -> Any:
        """The decoded body of ``cid`` if the store holds it decoded under ``tag`` (marked recent),
        else None: never fetches, never decodes, and leaves a round's unread chunks alone (they stay
        pinned for that round). What a walk that finds its next chunks as it goes
        (``s5vec.index.hnsw_lazy``) asks before naming a chunk for a fetch; it asks again at every
        step, so a peek is not counted as a cache hit."""
        key = _key(cid)
        with self._lock:
            e = self._cache.get(key)
            if e is not None:
                if e.obj is _RAW or e.tag != tag:
                    return None
                self._cache.move_to_end(key)
            else:
                e = self._resident.get(key)
                if e is None or e.obj is _RAW or e.tag != tag:
                    return None
            return e.obj

    def get_decoded_many(self, cids: Sequence[str], tags: Sequence[Any],
                         decode: Callable[[bytes, Any], Any]) -> list[Any]:
        """:meth:`get_decoded` of every CID (``decode(data, tag)``), the ones already decoded under
        one lock: a warm batch search reads thousands of small chunks, and per-call overhead is
        what that costs (above all in Pyodide)."""
        out: list[Any] = [None] * len(cids)
        miss: list[int] = []
        with self._lock:
            cache, resident, lookup = self._cache, self._resident, self._lookup
            for i, (cid, tag) in enumerate(zip(cids, tags)):
                key = _key(cid)
                e = cache.get(key) or resident.get(key)
                if e is not None and e.obj is not _RAW and e.tag == tag:
                    lookup(key)
                    out[i] = e.obj
                else:
                    miss.append(i)
        for i in miss:
            tag = tags[i]
            out[i] = self.get_decoded(cids[i], tag, lambda data, t=tag: decode(data, t))
        return out

    def keep(self, cids: Iterable["str | BlobId"]) -> None:
        """Hold these chunks (those the store has) until :meth:`release`: what an open index
        references for its life. They stay counted and are never evicted (evicting them would
        free nothing while the index holds them). Calls nest (counted per chunk)."""
        with self._lock:
            for c in cids:
                key = _key(c)
                n = self._keeps.get(key, 0)
                if n:
                    self._keeps[key] = n + 1
                    continue
                e = self._cache.pop(key, None)
                if e is not None:
                    self._cache_bytes -= e.size
                else:  # fetched for a round that has not read it yet (e.g. bigger than the budget)
                    e = self._pinned.pop(key, None)
                    if e is None:
                        continue
                self._resident[key] = e
                self._resident_bytes += e.size
                self._keeps[key] = 1
            self._evict()

    def release(self, cids: Iterable["str | BlobId"]) -> None:
        """Undo one :meth:`keep` of these chunks; a chunk no keep holds goes back to the LRU as
        its least recent entry."""
        with self._lock:
            for c in cids:
                key = _key(c)
                n = self._keeps.get(key, 0)
                if n > 1:
                    self._keeps[key] = n - 1
                    continue
                self._keeps.pop(key, None)
                e = self._resident.pop(key, None)
                if e is None:
                    continue
                self._resident_bytes -= e.size
                self._cache[key] = e
                self._cache.move_to_end(key, last=False)
                self._cache_bytes += e.size
            self._evict()

    def missing(self, cids: Iterable["str | BlobId"]) -> list["str | BlobId"]:
        """The CIDs neither cached nor pinned (one lock for all)."""
        with self._lock:
            return [c for c in cids if not self._holds(_key(c))]

    async def prefetch(self, cids: Iterable["str | BlobId"]) -> None:
        """Fetch the CIDs not already held, in parallel, into the cache (pinned until read)."""
        wanted: dict[str, str] = {}
        with self._lock:
            for c in cids:
                key = _key(c)
                if key in wanted or self._holds(key):
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
                elif key not in self._pinned and key not in self._resident:
                    self._pinned[key] = _Entry(data)
                self._held.add(key)

    def prefetch_sync(self, cids: Iterable["str | BlobId"]) -> None:
        """Blocking :meth:`prefetch` for synchronous callers."""
        cids = list(cids)
        with self._lock:
            if all(self._holds(_key(c)) for c in cids):
                return  # all held (the warm path): no event loop to spin up
        if sys.platform == "emscripten":
            # Pyodide: no threads, and the WebLoop cannot be blocked on; the sync
            # client path (pyodide_http -> synchronous XHR) fetches one by one.
            for c in cids:
                key = _key(c)
                with self._lock:
                    if self._holds(key):
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
        """Drop the cache and the pinned prefetches (counters, known CIDs and the chunks open
        indexes keep stay)."""
        with self._lock:
            self._cache.clear()
            self._cache_bytes = 0
            self._pinned.clear()
            self._unread.clear()
            self._held.clear()

    def stats(self) -> dict[str, int]:
        """Counters, and what is held: ``cache_bytes`` is every byte the budget counts (raw bytes of
        chunks not decoded yet, the footprint of decoded ones, the resident ones included; <=
        ``cache_limit``), ``resident_bytes`` the part open indexes keep, ``pinned_bytes`` a round's
        chunks held beyond the budget until read."""
        with self._lock:
            s = dict(self._c)
            s.update(
                cache_bytes=self._cache_bytes + self._resident_bytes,
                cache_entries=len(self._cache) + len(self._resident),
                cache_limit=self.cache_limit,
                resident_bytes=self._resident_bytes,
                resident_entries=len(self._resident),
                pinned_bytes=sum(e.size for e in self._pinned.values()),
                pinned_entries=len(self._pinned),
            )
            return s

    def held(self) -> dict[str, int]:
        """What the held chunks are, walked entry by entry (for benches, not per query):
        ``raw_bytes`` of chunks kept as bytes, ``decoded_bytes`` of decoded bodies (footprint),
        the counts of each."""
        with self._lock:
            es = [*self._cache.values(), *self._resident.values()]
            raw = [e.size for e in es if e.obj is _RAW]
            dec = [e.size for e in es if e.obj is not _RAW]
            return {"raw_bytes": sum(raw), "raw_entries": len(raw),
                    "decoded_bytes": sum(dec), "decoded_entries": len(dec)}

    def snapshot(self) -> dict[str, int]:
        """Current counter values (pass to :meth:`diff` later)."""
        with self._lock:
            return dict(self._c)

    def diff(self, before: dict[str, int]) -> dict[str, int]:
        """Counter changes since ``before`` (from :meth:`snapshot`)."""
        now = self.snapshot()
        return {k: now[k] - before.get(k, 0) for k in _COUNTED}
