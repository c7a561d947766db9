"""One opened index behind the server front doors (HTTP API and MCP): concurrency, validation, stats.

The index objects are not thread-safe (HNSW keeps a shared visited-stamp array, IVF remembers
the metadata of its last search's hits, both keep caches), so two rules:

* Reads run on the event loop itself (``Database.search_async``: the chunk fetches are awaited,
  the NumPy work runs inline), under the read side of a :class:`ReadWriteLock`. One loop thread
  means two searches never run at the same time, and no thread hop or per-query event loop is
  paid: measured on this 2-core machine, handing each search to a worker thread cost ~3x in
  server-side latency (GIL ping-pong between the loop and the thread, plus ``prefetch_sync``
  starting an event loop per query off the loop thread).
* Writes take the write side (waiting for running reads to finish and holding new ones back),
  are validated whole first, and then run as one job on a dedicated executor thread, so the
  loop stays free for health checks and progress events while the index is being changed,
  and no reader ever sees half of a batch.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import numpy as np

from .. import api
from ..errors import InvalidArgumentError, NotSupportedError, UnknownIdError

#: a write batch is applied in sub-batches of this many records, with progress after each
UPSERT_STEP = 1000
#: most queries one batch search may carry
MAX_BATCH_QUERIES = 1000
#: latencies kept for the p50/p99 in stats
LATENCY_WINDOW = 10_000

Progress = Callable[[dict[str, Any]], None]


class ReadWriteLock:
    """Many readers or one writer, on one event loop; a waiting writer holds back new readers
    (so a stream of searches cannot starve a commit). Not thread-safe: loop-only, by design."""

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._waiting = 0
        self._changed: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        while self._writer or self._waiting:
            await self._event().wait()
        self._readers += 1
        try:
            yield
        finally:
            self._readers -= 1
            if self._readers == 0:
                self._notify()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        self._waiting += 1
        try:
            while self._writer or self._readers:
                await self._event().wait()
        except BaseException:
            self._waiting -= 1
            self._notify()
            raise
        self._waiting -= 1
        self._writer = True
        try:
            yield
        finally:
            self._writer = False
            self._notify()


class Engine:
    """An opened :class:`~s5vec.api.Database` with a readers-writer lock, a write thread and counters."""

    def __init__(self, db: api.Database, pointer: Any = None) -> None:
        self.db = db
        self.pointer = pointer  # a serve.pointer.Pointer to move on commit, or None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="s5vec-write")
        self._rw = ReadWriteLock()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._counts = {"queries": 0, "search_requests": 0, "errors": 0, "upserted": 0, "deleted": 0,
                        "commits": 0, "migrated": 0}
        self._counts_lock = threading.Lock()
        self.started = time.time()

    # -- life cycle ---------------------------------------------------------------
    @classmethod
    async def open(cls, cid: str | None, portals: Sequence[str], *, cache_bytes: int = 64 * 2**20,
                   timeout: float = 15.0, pointer: Any = None, portal_token: str | None = None) -> "Engine":
        """Open ``cid``, or (``cid`` None) the manifest ``pointer`` resolves to; ``portal_token``
        is sent with uploads (a commit) to portals that require one."""
        if cid is None:
            if pointer is None:
                raise InvalidArgumentError("give a manifest CID or a pointer")
            cid = await asyncio.to_thread(pointer.resolve)
        store = api.make_store(portals, cache_bytes=cache_bytes, timeout=timeout, auth_token=portal_token)
        db = await api.Database.open_async(cid, list(portals), store=store, cache_bytes=cache_bytes, timeout=timeout)
        return cls(db, pointer)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.db.close()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the write thread (callers hold the write lock, or touch no index state).

        Shielded: if the caller is cancelled (a client went away) the job still finishes before
        the cancellation goes on, so the write lock is never released under a running write."""
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            await asyncio.wait({fut})
            raise

    def _count(self, **inc: int) -> None:
        with self._counts_lock:
            for key, n in inc.items():
                self._counts[key] += n

    # -- reads ----------------------------------------------------------------------
    async def search(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One query: ``{"vector": [...]}`` or ``{"text": "..."}`` plus optional k, filter, params."""
        t0 = time.perf_counter()
        try:
            q = _check_query(request)
            async with self._rw.read():
                out = await self._search_one(q)
        except Exception:
            self._count(errors=1)
            raise
        self._record(t0, 1)
        return out

    async def search_batch(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """``{"queries": [query, ...]}`` -> ``{"results": [{"hits", "stats"}, ...]}``, in order.

        The batch is validated whole first; then all queries run in one job on the index thread."""
        t0 = time.perf_counter()
        queries = request.get("queries")
        if not isinstance(queries, list) or not queries:
            raise InvalidArgumentError("'queries' must be a non-empty list of query objects")
        if len(queries) > MAX_BATCH_QUERIES:
            raise InvalidArgumentError(f"at most {MAX_BATCH_QUERIES} queries per batch, got {len(queries)}")
        checked = []
        for n, q in enumerate(queries):
            try:
                checked.append(_check_query(q))
            except InvalidArgumentError as exc:
                raise type(exc)(f"query {n}: {exc}") from None
        try:
            async with self._rw.read():
                results = [await self._search_one(q) for q in checked]
        except Exception:
            self._count(errors=1)
            raise
        self._record(t0, len(checked))
        return {"results": results}

    async def _search_one(self, q: dict[str, Any]) -> dict[str, Any]:
        if q.get("text") is not None:
            return await self._search_text(q)
        return await self.db.search_async(q["vector"], q["k"], q["filter"], q["params"])

    async def _search_text(self, q: dict[str, Any]) -> dict[str, Any]:
        """``Database.search_text`` (its async form when there is one); NotSupportedError without it."""
        mode = {} if q.get("mode") is None else {"mode": q["mode"]}
        fn = getattr(self.db, "search_text_async", None)
        if fn is not None:
            return _with_stats(await fn(q["text"], q["k"], q["filter"], params=q["params"] or None, **mode))
        fn = getattr(self.db, "search_text_with_stats", None) or getattr(self.db, "search_text", None)
        if fn is None:
            raise NotSupportedError("text search is not available in this s5vec build "
                                    "(Database.search_text); send a 'vector' instead")
        return _with_stats(fn(q["text"], q["k"], q["filter"], params=q["params"] or None, **mode))

    def _record(self, t0: float, queries: int) -> None:
        ms = (time.perf_counter() - t0) * 1000
        with self._counts_lock:
            self._latencies.append(ms)
            self._counts["queries"] += queries
            self._counts["search_requests"] += 1

    async def get(self, id: str, *, vector: bool = False) -> dict[str, Any]:
        """The record ``id``: ``{"id", "metadata", "timestamp"}`` (+ ``"vector"`` if asked)."""
        if not isinstance(id, str) or not id:
            raise InvalidArgumentError("id must be a non-empty string")
        async with self._rw.read():
            rec = await self.db.get_async(id)  # UnknownIdError if absent; fetches a lazy list if needed
        out = {"id": id, "metadata": rec.get("metadata") or {}, "timestamp": _finite_or_none(rec.get("timestamp"))}
        if vector:
            out["vector"] = [float(x) for x in await self._vector(id)]
        return out

    async def _vector(self, id: str) -> np.ndarray:
        """The stored vector of ``id`` (prepared for the metric). A record in a lazily loaded IVF
        part has only codes in a list chunk, so that part is made resident first -- the step every
        edit takes too (``Database._writable``), under the write lock since it changes the index."""
        async with self._rw.read():
            await self.db.get_async(id)  # UnknownIdError if absent
            vec = _stored_vector(self.db.index, id)
        if vec is None:
            async with self._rw.write():
                await self._run(self.db._writable)
            async with self._rw.read():
                vec = _stored_vector(self.db.index, id)
        if vec is None:  # deleted in between
            raise UnknownIdError(f"unknown id {id!r}")
        return vec

    async def similar(self, id: str, k: int = 10, filter: Any = None,
                      params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Records nearest to record ``id``'s own stored vector, ``id`` itself left out."""
        t0 = time.perf_counter()
        if not isinstance(id, str) or not id:
            raise InvalidArgumentError("id must be a non-empty string")
        k = _check_k(k)
        try:
            vec = await self._vector(id)
            async with self._rw.read():
                out = await self.db.search_async(vec, k + 1, filter, params)
            out["hits"] = [h for h in out["hits"] if h["id"] != id][:k]
        except Exception:
            self._count(errors=1)
            raise
        self._record(t0, 1)
        return out

    async def info(self) -> dict[str, Any]:
        async with self._rw.read():
            out = self.db.info()
        if self.pointer is not None:
            out["pointer"] = {"pointer": self.pointer.pointer, "revision": self.pointer.revision,
                              "writable": self.pointer.key is not None}
        return out

    def manifest(self) -> dict[str, Any]:
        return self.db.manifest

    async def stats(self) -> dict[str, Any]:
        store = self.db.stats()
        with self._counts_lock:
            lat = np.array(self._latencies, dtype=np.float64)
            counts = dict(self._counts)
        out: dict[str, Any] = dict(counts)
        out["latency_ms"] = {
            "p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
            "p99": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
            "window": int(lat.size),
        }
        out["store"] = store
        out["cache"] = {"bytes": store.get("cache_bytes"), "limit": store.get("cache_limit"),
                        "hits": store.get("cache_hits"), "misses": store.get("cache_misses")}
        out["uptime_s"] = round(time.time() - self.started, 3)
        return out

    # -- writes ---------------------------------------------------------------------
    async def upsert(self, records: Any, progress: Progress | None = None) -> dict[str, Any]:
        """Validate the whole batch, then apply it as one job on the index thread."""
        records = await self._run(self._check_records, records)  # reads only the (fixed) dimension
        async with self._rw.write():

            def job() -> int:
                total = len(records)
                for lo in range(0, total, UPSERT_STEP):
                    self.db.upsert(records[lo: lo + UPSERT_STEP])
                    if progress is not None and total > UPSERT_STEP:
                        progress({"phase": "upsert", "done": min(lo + UPSERT_STEP, total), "total": total})
                return len(self.db.index)

            count = await self._run(job)
        self._count(upserted=len(records))
        return {"upserted": len(records), "count": count}

    def _check_records(self, records: Any) -> list[dict[str, Any]]:
        """Every check the index would make, on the whole batch, before anything changes."""
        from ..index.records import check_batch

        if not isinstance(records, list):
            raise InvalidArgumentError("'records' must be a list of {id, vector, metadata, timestamp} objects")
        ids, mat, metas, ts = api.records_to_columns(records)
        check_batch(self.db.index.dim, ids, mat, metas, ts)
        keyword = getattr(self.db, "keyword", None)  # text search builds: every record needs its text
        record_text = getattr(api, "record_text", None)
        if keyword is not None and record_text is not None:
            for n, r in enumerate(records):
                record_text(r, keyword.field, n)
        return records

    async def delete(self, ids: Any) -> dict[str, Any]:
        if isinstance(ids, str) or not isinstance(ids, list) or not ids:
            raise InvalidArgumentError("ids must be a non-empty list of strings")
        if not all(isinstance(i, str) and i for i in ids):
            raise InvalidArgumentError("ids must be non-empty strings")
        async with self._rw.write():
            n = await self._run(self.db.delete, ids)
            count = len(self.db.index)
        self._count(deleted=n)
        return {"deleted": n, "count": count}

    async def commit(self, progress: Progress | None = None) -> dict[str, Any]:
        """Upload the edited index as a new snapshot; progress reports chunks uploaded so far."""
        async with self._rw.write():
            parent = self.db.cid
            cid, writer = await self._watch(self._run(self.db.commit), "commit", progress)
            count = len(self.db.index)
            self._count(commits=1)
            out = {"manifest": cid, "parent": parent, "uploaded": writer.uploaded, "chunks": len(writer.chunks),
                   "count": count}
            if self.pointer is not None and self.pointer.key is not None:
                out["revision"] = await self._run(self.pointer.publish, cid)  # StaleRevisionError: 409
        return out

    async def migrate(self, progress: Progress | None = None) -> dict[str, Any]:
        """Hybrid: move aged records from HNSW to IVF (in memory; commit to publish)."""
        async with self._rw.write():
            moved = await self._watch(self._run(self.db.migrate), "migrate", progress)
            count = len(self.db.index)
        self._count(migrated=moved)
        return {"moved": moved, "count": count}

    async def _watch(self, job: Any, phase: str, progress: Progress | None, every: float = 0.25) -> Any:
        """Await ``job``, reporting the store's upload counters every ``every`` seconds meanwhile."""
        task = asyncio.ensure_future(job)
        base = self.db.store.stats()
        t0 = time.perf_counter()
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=None if progress is None else every)
                if progress is not None:
                    now = self.db.store.stats()
                    progress({"phase": phase, "chunks_uploaded": now["chunks_uploaded"] - base["chunks_uploaded"],
                              "bytes_uploaded": now["bytes_uploaded"] - base["bytes_uploaded"],
                              "elapsed_s": round(time.perf_counter() - t0, 3), "done": bool(done)})
                if done:
                    return task.result()
        except asyncio.CancelledError:  # the job finishes before the write lock is let go
            await asyncio.wait({task})
            raise


# -- request validation (shapes only; the Database validates values) --------------------
_QUERY_KEYS = {"vector", "text", "k", "filter", "params", "mode"}


def _check_query(q: Any) -> dict[str, Any]:
    if not isinstance(q, Mapping):
        raise InvalidArgumentError("a query must be a JSON object with 'vector' or 'text'")
    unknown = set(q) - _QUERY_KEYS
    if unknown:
        raise InvalidArgumentError(f"unknown query field(s) {sorted(unknown)}; accepted: {sorted(_QUERY_KEYS)}")
    has_vec, has_text = q.get("vector") is not None, q.get("text") is not None
    if has_vec == has_text:
        raise InvalidArgumentError("a query needs exactly one of 'vector' (numbers) or 'text' (a string)")
    if has_text and (not isinstance(q["text"], str) or not q["text"].strip()):
        raise InvalidArgumentError("'text' must be a non-empty string")
    if has_vec and not isinstance(q["vector"], list):
        raise InvalidArgumentError("'vector' must be a list of numbers")
    params = q.get("params")
    if params is not None and not isinstance(params, Mapping):
        raise InvalidArgumentError("'params' must be an object, e.g. {\"ef\": 128, \"nprobe\": 32}")
    mode = q.get("mode")
    if mode is not None and not isinstance(mode, str):
        raise InvalidArgumentError("'mode' must be a string")
    return {"vector": q.get("vector"), "text": q.get("text"), "k": _check_k(q.get("k", 10)),
            "filter": q.get("filter"), "params": dict(params or {}), "mode": mode}


def _check_k(k: Any) -> int:
    if k is None:
        return 10
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10_000:
        raise InvalidArgumentError(f"k must be an integer in 1..10000, got {k!r}")
    return k


def _with_stats(res: Any) -> dict[str, Any]:
    """``search_text`` may return hits or ``{"hits", "stats"}``; the API always answers the latter."""
    if isinstance(res, Mapping) and "hits" in res:
        return dict(res)
    return {"hits": list(res), "stats": {}}


def _finite_or_none(t: Any) -> float | None:
    if t is None:
        return None
    t = float(t)
    return None if math.isnan(t) else t


def _stored_vector(index: Any, id: str) -> np.ndarray | None:
    """The stored vector of ``id`` from whichever resident part holds it; None if it can only be
    in a lazily loaded part (or nowhere)."""
    parts = [p for p in (getattr(index, "recent", None), getattr(index, "historical", None)) if p is not None]
    for part in parts or [index]:
        if getattr(part, "lazy", False) or not hasattr(part, "vector"):
            continue
        if id in part:
            return np.asarray(part.vector(id), dtype=np.float32)
    return None
