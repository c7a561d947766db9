"""The request layer both the worker and the CLI call: open, search, publish, edit.

Everything here validates its input first and raises only :mod:`s5vec.errors` types.

One path for a query:
  1. :func:`prepare_query` validates and normalises it ONCE into a :class:`s5vec.query.Query`
     (vector checked and prepared for the metric, ``k``, compiled filter, typed parameters);
  2. rounds of plan -> fetch -> search (:class:`QueryRun`): the index names the chunks it needs
     (``plan``), the store fetches the missing ones in parallel (``pyfetch`` under
     ``asyncio.gather`` in Pyodide, a thread pool on CPython) and verifies and caches them, and
     the index searches what it was handed; a filtered IVF search that must widen asks for
     another round. Indexes never fetch.

One rule for a missing timestamp: a record without one is stamped, here, with the time it is
added (:func:`s5vec.index.records.stamp`); indexes always receive a number.
"""
from __future__ import annotations

import importlib
import logging
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import filters, kernels, layout
from .errors import (ClosedError, FormatError, InvalidArgumentError, NothingToCommitError, NotFoundError,
                     UnknownIdError)
from .index.base import Index
from .index.records import stamp
from .query import Chunks, Hit, Query, build_params
from .store import ChunkStore

# kind -> (module, class). Imported lazily: the worker loads only what a manifest needs.
INDEX_KINDS: dict[str, tuple[str, str]] = {
    "flat": ("s5vec.index.flat", "FlatIndex"),
    "hnsw": ("s5vec.index.hnsw", "HNSWIndex"),
    "ivf": ("s5vec.index.ivf", "IVFIndex"),
    "hybrid": ("s5vec.index.hybrid", "HybridIndex"),
}
DEFAULT_KIND = "hybrid"
# Chunk kinds fetched lazily at search time; every other chunk is fetched when an index opens.
LAZY_CHUNK_KINDS = frozenset({"ivf_list", "ivf_refine"})
# Chunk kinds named by other chunks (an ivf_list names its ivf_refine blocks) and left out of the
# manifest's chunk list, so the manifest -- what every open downloads -- does not grow with N; the
# manifest records their count and bytes under extra.unlisted.
UNLISTED_CHUNK_KINDS = frozenset({"ivf_refine"})


def index_class(kind: str) -> type:
    if kind not in INDEX_KINDS:
        raise InvalidArgumentError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    module, name = INDEX_KINDS[kind]
    return getattr(importlib.import_module(module), name)


def new_index(kind: str, dim: int, metric: str = "cosine", params: Mapping[str, Any] | None = None) -> Index:
    """Create an empty index of ``kind``; ``params`` are the kind's constructor keywords."""
    cls = index_class(kind)
    kernels.check_metric(metric)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise InvalidArgumentError(f"dim must be a positive integer, got {dim!r}")
    try:
        return cls(dim, metric=metric, **dict(params or {}))
    except TypeError as exc:
        raise InvalidArgumentError(f"bad parameter for a {kind} index: {exc}") from None


def records_to_columns(records: Iterable[Mapping[str, Any]], now: float | None = None
                       ) -> tuple[list[str], np.ndarray, list[dict], np.ndarray]:
    """Turn ``{"id", "vector", "metadata", "timestamp"}`` dicts into the columns ``Index.add`` takes.

    A record without a timestamp (absent or None) is stamped with ``now`` (default: the time of
    this call); NaN, infinity and non-numbers are rejected.
    """
    ids, vecs, metas, ts = [], [], [], []
    for n, r in enumerate(records):
        if not isinstance(r, Mapping) or "id" not in r or "vector" not in r:
            raise InvalidArgumentError(f"record {n}: needs at least 'id' and 'vector'")
        ids.append(r["id"])
        vecs.append(r["vector"])
        metas.append(r.get("metadata") or {})
        t = r.get("timestamp")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating))):
            raise InvalidArgumentError(f"record {n}: timestamp must be Unix seconds (a number), got {t!r}")
        ts.append(t)
    if not ids:
        raise InvalidArgumentError("no records")
    dims = {len(v) if hasattr(v, "__len__") else -1 for v in vecs}
    if len(dims) != 1:
        raise InvalidArgumentError(f"records have vectors of different lengths: {sorted(dims)[:5]}")
    return ids, kernels.as_matrix(vecs), metas, stamp(ts, len(ids), now)


def prepare_query(index: Index, vector: Any, k: Any = 10, filter: Any = None,
                  params: Mapping[str, Any] | None = None) -> Query:
    """Validate and normalise a query ONCE; every index trusts what this returns.

    Raises :class:`InvalidVectorError`/:class:`DimensionError` for a bad vector,
    :class:`InvalidArgumentError` for a bad ``k`` or an unknown/mistyped search parameter
    (naming the accepted ones), :class:`FilterError` for a bad filter.
    """
    q = kernels.as_vector(_as_array(vector), index.dim)
    q = kernels.prepare(q[None, :], index.metric)[0]
    k = kernels.check_k(k)
    search_params = build_params(index.search_params, params, index.kind)
    return Query(np.ascontiguousarray(q, dtype=np.float32), k, filters.parse(filter), search_params)


MAX_ROUNDS = 32  # a widening IVF search doubles nprobe each round: log2(nlist) rounds at most


class QueryRun:
    """One query's rounds of plan -> fetch -> search against one index and chunk store.

    ``next_fetch()`` plans the current round and returns the CIDs to fetch (the caller fetches
    them, sync or async); ``search()`` hands the fetched chunks to the index and returns the hits,
    or None when the index asked for a wider round. ``rounds`` counts the rounds that fetched.
    """

    def __init__(self, index: Index, query: Query, reader: Any, kinds: Mapping[str, str] | None = None) -> None:
        self.index, self.query, self.reader = index, query, reader
        self.kinds = kinds or {}
        self.rounds = 0
        self.searches = 0
        self._need: list[str] = []

    def next_fetch(self) -> list[str]:
        self._need = self.index.plan(self.query)
        if self._need:
            self.rounds += 1
        return self._need

    def chunks(self) -> Chunks:
        return {c: self.reader.get(c, self.kinds.get(c)) for c in self._need}

    def search(self) -> list[Hit] | None:
        self.searches += 1
        out = self.index.search(self.query, self.chunks())
        if out.widen is None:
            return out.hits
        if self.searches >= MAX_ROUNDS:
            raise RuntimeError("search did not settle: too many widening rounds")
        self.query = out.widen
        return None


class BatchRun:
    """Many queries' rounds together: one plan (the union of their chunks), one fetch, one
    ``search_many`` per round (an index without it searches them one by one). A query that asks
    for another round (widening, refine rows) stays in the batch; the others are done."""

    def __init__(self, index: Index, queries: Sequence[Query], reader: Any, kinds: Mapping[str, str] | None = None
                 ) -> None:
        self.index, self.reader, self.kinds = index, reader, kinds or {}
        self.queries = list(queries)
        self.hits: list[list[Hit] | None] = [None] * len(self.queries)
        self.rounds = [0] * len(self.queries)
        self.fetch_rounds = 0
        self._searches = 0
        self._active: list[int] = []
        self._need: list[str] = []

    def next_fetch(self) -> list[str]:
        self._active = [i for i, h in enumerate(self.hits) if h is None]
        qs = [self.queries[i] for i in self._active]
        plan_many = getattr(self.index, "plan_many", None)
        plans = plan_many(qs) if plan_many is not None else [self.index.plan(q) for q in qs]
        need: dict[str, None] = {}
        for i, p in zip(self._active, plans):
            if p:
                self.rounds[i] += 1
                need.update(dict.fromkeys(p))
        self._need = list(need)
        if self._need:
            self.fetch_rounds += 1
        return self._need

    def search(self) -> bool:
        """One round of searches; True when every query has its hits."""
        self._searches += 1
        chunks = {c: self.reader.get(c, self.kinds.get(c)) for c in self._need}
        qs = [self.queries[i] for i in self._active]
        search_many = getattr(self.index, "search_many", None)
        outs = search_many(qs, chunks) if search_many is not None else [self.index.search(q, chunks) for q in qs]
        for i, out in zip(self._active, outs):
            if out.widen is None:
                self.hits[i] = out.hits
            else:
                self.queries[i] = out.widen
        if any(h is None for h in self.hits) and self._searches >= MAX_ROUNDS:
            raise RuntimeError("batch search did not settle: too many rounds")
        return all(h is not None for h in self.hits)


def run_batch_sync(index: Index, queries: Sequence[Query], store: ChunkStore, reader: Any | None = None,
                   kinds: Mapping[str, str] | None = None) -> BatchRun:
    """All rounds of many queries with blocking fetches; ``.hits`` holds each query's hits."""
    run = BatchRun(index, queries, reader or layout.StoreReader(store), kinds)
    while True:
        need = run.next_fetch()
        if need:
            store.prefetch_sync(need)
        if run.search():
            return run


async def run_batch(index: Index, queries: Sequence[Query], store: ChunkStore, reader: Any | None = None,
                    kinds: Mapping[str, str] | None = None) -> BatchRun:
    """As :func:`run_batch_sync`; each round's chunks are fetched in parallel."""
    run = BatchRun(index, queries, reader or layout.StoreReader(store), kinds)
    while True:
        need = run.next_fetch()
        if need:
            await store.prefetch(need)
            missing = [c for c in need if c not in store]
            if missing:
                raise NotFoundError(f"the portal did not return chunk {missing[0]}")
        if run.search():
            return run


def run_query_sync(index: Index, query: Query, store: ChunkStore, reader: Any | None = None,
                   kinds: Mapping[str, str] | None = None) -> tuple[list[Hit], QueryRun]:
    """All rounds of ``query`` with blocking fetches (CPython)."""
    run = QueryRun(index, query, reader or layout.StoreReader(store), kinds)
    while True:
        need = run.next_fetch()
        if need:
            store.prefetch_sync(need)
        hits = run.search()
        if hits is not None:
            return hits, run


async def run_query(index: Index, query: Query, store: ChunkStore, reader: Any | None = None,
                    kinds: Mapping[str, str] | None = None) -> tuple[list[Hit], QueryRun]:
    """All rounds of ``query``; each round's chunks are fetched in parallel (Pyodide and CPython)."""
    run = QueryRun(index, query, reader or layout.StoreReader(store), kinds)
    while True:
        need = run.next_fetch()
        if need:
            await store.prefetch(need)
            missing = [c for c in need if c not in store]
            if missing:  # never fall back to a blocking fetch here (sync XHR in Pyodide)
                raise NotFoundError(f"the portal did not return chunk {missing[0]}")
        hits = run.search()
        if hits is not None:
            return hits, run


def save(index: Index, store: ChunkStore, *, parent: str | None = None, known: Iterable[str] = (),
         extra: Mapping[str, Any] | None = None) -> tuple[str, layout.StoreWriter]:
    """Write ``index`` as chunks plus a manifest; returns (manifest CID, the writer with its counts)."""
    writer = layout.StoreWriter(store, known)
    return store.put(_encode_snapshot(index, writer, parent, extra)), writer


def _encode_snapshot(index: Index, writer: layout.StoreWriter, parent: str | None,
                     extra: Mapping[str, Any] | None = None) -> bytes:
    """Write ``index``'s chunks through ``writer``; returns the manifest bytes naming them."""
    desc = index.save(writer)
    listed = [c for c in writer.chunks if c["kind"] not in UNLISTED_CHUNK_KINDS]
    unlisted: dict[str, dict[str, int]] = {}
    for c in writer.chunks:
        if c["kind"] in UNLISTED_CHUNK_KINDS:
            u = unlisted.setdefault(c["kind"], {"count": 0, "bytes": 0})
            u["count"] += 1
            u["bytes"] += int(c["size"])
    extra = {k: v for k, v in (extra or {}).items() if k != "unlisted"}
    if unlisted:
        extra["unlisted"] = unlisted
    return layout.encode_manifest(
        kind=index.kind, dim=index.dim, metric=index.metric, count=len(index), index=desc,
        chunks=listed, parent=parent, spec=index.spec(), extra=extra or None,
    )


def choose_params(kind: str, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]],
                  timestamps: np.ndarray, metric: str = "cosine") -> Any:
    """Parameters that fit the size of this collection (:mod:`s5vec.index.ivf_tune`), or None
    for kinds that have nothing to pick (flat, hnsw). Returns a ``Choice`` (``.params``, ``.record``)."""
    from .index import ivf_tune

    if kind not in ("ivf", "hybrid"):
        return None
    probe = range(min(len(ids), 500))

    def meta_size(m: Any) -> int | None:
        try:  # the index validates metadata (depth, size) when it adds it; here a bad map just does not count
            return len(layout.dumps(dict(m)))
        except (FormatError, RecursionError, TypeError, ValueError):
            return None

    metas = [s for s in (meta_size(metadata[i]) for i in probe) if s is not None]
    sizes = {"id_bytes": float(np.mean([len(str(ids[i])) + 1 for i in probe])) if len(ids) else 8.0,
             "meta_bytes": float(np.mean(metas)) if metas else 0.0}
    if kind == "ivf":
        return ivf_tune.choose(vectors, metric, **sizes)
    return ivf_tune.choose_hybrid(vectors, timestamps, metric, **sizes)


def publish(
    records: Iterable[Mapping[str, Any]], store: ChunkStore, *, kind: str = DEFAULT_KIND, metric: str = "cosine",
    params: Mapping[str, Any] | None = None, progress: Any = None, extra: Mapping[str, Any] | None = None,
    explain: Any = None,
) -> str:
    """Build an index of ``kind`` over ``records`` and upload it; returns the manifest CID.

    ``extra`` goes into the manifest as is (e.g. ``{"embed": {"model": cid, ...}}`` naming the text model).
    Without ``params`` an IVF or hybrid index gets parameters picked for its size and data
    (:func:`choose_params`): what was picked, and the held-out evidence, is logged (logger
    ``s5vec``), passed to ``explain(choice)`` when given, and stored in the manifest
    (``extra.auto``; the manifest ``spec`` names the result, e.g. ``IVF1024,PQ48,Refine(SQ8)``).
    """
    ids, mat, metas, ts = records_to_columns(records)
    choice = None
    if not params:
        kernels.check_metric(metric)
        choice = choose_params(kind, ids, mat, metas, ts, metric)
        if choice is not None:
            params = choice.params
            logging.getLogger("s5vec").info("%s", choice.line())
            if explain is not None:
                explain(choice)
    index = new_index(kind, mat.shape[1], metric, params)
    add_kwargs = {"progress": progress} if progress else {}
    index.add(ids, mat, metas, ts, **add_kwargs)
    extra = dict(extra or {})
    if choice is not None:
        extra["auto"] = choice.record
    cid, _ = save(index, store, extra=extra or None)
    return cid


def read_manifest(store: ChunkStore, cid: str) -> dict[str, Any]:
    return layout.decode_manifest(store.get(cid))


CACHE_MIN = 16 * 2**20
CACHE_LAZY_MAX = 256 * 2**20


def cache_bytes_for(manifest: Mapping[str, Any]) -> int:
    """The chunk cache an opened index needs, from its own sizes: everything fetched at open
    (centroids, summaries, the HNSW part) stays, plus the lazy chunks (lists, refine rows) up to
    :data:`CACHE_LAZY_MAX`, so every list a session touches is fetched once (a 100k index's
    lists fit whole; a 1M one keeps its working set). At least :data:`CACHE_MIN`. The chunks of
    the round being read are held until read whatever the budget (see :mod:`s5vec.store`)."""
    eager = lazy = 0
    unlisted = (manifest.get("extra") or {}).get("unlisted") or {}
    for u in unlisted.values():
        if isinstance(u, Mapping) and isinstance(u.get("bytes"), int):
            lazy += u["bytes"]
    for c in manifest.get("chunks", ()):
        if isinstance(c, Mapping) and isinstance(c.get("size"), int):
            if c.get("kind") in LAZY_CHUNK_KINDS:
                lazy += c["size"]
            else:
                eager += c["size"]
    return int(max(CACHE_MIN, eager + min(lazy, CACHE_LAZY_MAX) + (1 << 20)))


def _eager_chunks(manifest: Mapping[str, Any]) -> list[str]:
    out = []
    for c in manifest["chunks"]:
        if not isinstance(c, Mapping) or not isinstance(c.get("cid"), str):
            raise FormatError("manifest chunk entry lacks a cid")
        if c.get("kind") not in LAZY_CHUNK_KINDS:
            out.append(c["cid"])
    return out


class Database:
    """An opened index snapshot (one manifest CID) with its chunk store and counters."""

    def __init__(self, cid: str, manifest: dict[str, Any], index: Index, store: ChunkStore,
                 reader: layout.StoreReader) -> None:
        self.cid = cid
        self.manifest = manifest
        self.index = index
        self.store = store
        self.reader = reader
        self.closed = False
        self.searches = 0
        self.edits = 0  # upserts/deletes/migrations since opened or last committed
        self._kinds = _chunk_kinds(manifest)

    # -- opening ----------------------------------------------------------------
    @classmethod
    def _from_manifest(cls, cid: str, manifest: dict[str, Any], store: ChunkStore) -> "Database":
        reader = layout.StoreReader(store)
        klass = index_class(manifest["kind"])
        index = klass.load(manifest["index"], reader)
        return cls(cid, manifest, index, store, reader)

    @classmethod
    def open(cls, cid: str, portals: Sequence[str] | None = None, *, store: ChunkStore | None = None,
             cache_bytes: int | None = None, timeout: float = 10.0) -> "Database":
        """Open a snapshot; ``cache_bytes`` None = sized from the manifest (:func:`cache_bytes_for`)."""
        own = store is None
        store = store or make_store(portals, cache_bytes=cache_bytes or 64 * 2**20, timeout=timeout)
        manifest = read_manifest(store, cid)
        if own and cache_bytes is None:
            store.cache_limit = cache_bytes_for(manifest)
        store.prefetch_sync(_eager_chunks(manifest))
        return cls._from_manifest(cid, manifest, store)

    @classmethod
    async def open_async(cls, cid: str, portals: Sequence[str] | None = None, *, store: ChunkStore | None = None,
                         cache_bytes: int | None = None, timeout: float = 10.0) -> "Database":
        own = store is None
        store = store or make_store(portals, cache_bytes=cache_bytes or 64 * 2**20, timeout=timeout)
        await store.prefetch([cid])
        manifest = read_manifest(store, cid)
        if own and cache_bytes is None:
            store.cache_limit = cache_bytes_for(manifest)
        await store.prefetch(_eager_chunks(manifest))
        return cls._from_manifest(cid, manifest, store)

    # -- searching --------------------------------------------------------------
    def prepare(self, vector: Any, k: Any = 10, filter: Any = None, params: Mapping[str, Any] | None = None) -> Query:
        """The validated query (see :func:`prepare_query`); raises ClosedError once closed."""
        self._check_open()
        return prepare_query(self.index, vector, k, filter, params)

    def plan(self, vector: Any, k: Any = 10, filter: Any = None, params: Mapping[str, Any] | None = None,
             *, missing: bool = False) -> list[str]:
        """CIDs of the chunks the first round of this query reads, in probe order (what a cold
        search fetches); with ``missing`` only those the store does not hold yet. Fetches nothing."""
        need = self.index.plan(self.prepare(vector, k, filter, params))
        return [c for c in need if c not in self.store] if missing else need

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedError("database is closed")

    def _result(self, hits: list[Hit], run: QueryRun, before: dict[str, int], t0: float) -> dict[str, Any]:
        metric = self.index.metric
        out = [{"id": h.id, "score": float(kernels.to_score(h.distance, metric)), "metadata": dict(h.metadata)}
               for h in hits]
        d = self.store.diff(before)
        self.searches += 1
        return {"hits": out, "stats": {
            "bytesFetched": d["bytes_fetched"], "chunksFetched": d["chunks_fetched"], "cacheHits": d["cache_hits"],
            "rounds": run.rounds, "ms": round((time.perf_counter() - t0) * 1000, 3),
        }}

    def search(self, vector: Any, k: int = 10, filter: Any = None, params: Mapping[str, Any] | None = None
               ) -> list[dict[str, Any]]:
        """Best ``k`` hits ``[{"id", "score", "metadata"}]``; see :meth:`search_with_stats`."""
        return self.search_with_stats(vector, k, filter, params)["hits"]

    def search_with_stats(self, vector: Any, k: int = 10, filter: Any = None,
                          params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``{"hits": [...], "stats": {bytesFetched, chunksFetched, cacheHits, rounds, ms}}`` (blocking)."""
        t0 = time.perf_counter()
        query = self.prepare(vector, k, filter, params)
        before = self.store.snapshot()
        hits, run = run_query_sync(self.index, query, self.store, self.reader, self._kinds)
        return self._result(hits, run, before, t0)

    async def search_async(self, vector: Any, k: int = 10, filter: Any = None,
                           params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """As :meth:`search_with_stats`; every fetch is awaited (parallel ``pyfetch`` in Pyodide)."""
        t0 = time.perf_counter()
        query = self.prepare(vector, k, filter, params)
        before = self.store.snapshot()
        hits, run = await run_query(self.index, query, self.store, self.reader, self._kinds)
        return self._result(hits, run, before, t0)

    # -- many queries ------------------------------------------------------------
    MAX_BATCH = 10_000

    def prepare_many(self, vectors: Any, k: Any = 10, filter: Any = None,
                     params: Mapping[str, Any] | None = None) -> list[Query]:
        """Validate a batch once: ``vectors`` is a 2-d array or a sequence of vectors (each as
        :meth:`prepare` takes one); ``k``, ``filter``, ``params`` apply to all of them."""
        self._check_open()
        if isinstance(vectors, np.ndarray):
            if vectors.ndim != 2:
                raise InvalidArgumentError(f"search_batch takes a 2-d array of vectors, got shape {vectors.shape}")
            rows = list(vectors)
        elif isinstance(vectors, (list, tuple)):
            rows = [_as_array(v) for v in vectors]
        else:
            raise InvalidArgumentError(f"search_batch takes a list of vectors, got {type(vectors).__name__}")
        if not rows:
            raise InvalidArgumentError("search_batch needs at least one vector")
        if len(rows) > self.MAX_BATCH:
            raise InvalidArgumentError(f"search_batch takes at most {self.MAX_BATCH} vectors, got {len(rows)}")
        first = prepare_query(self.index, rows[0], k, filter, params)
        out = [first]
        for v in rows[1:]:
            q = kernels.as_vector(v, self.index.dim)
            q = kernels.prepare(q[None, :], self.index.metric)[0]
            out.append(Query(np.ascontiguousarray(q, dtype=np.float32), first.k, first.filter, first.params))
        return out

    def _batch_result(self, run: BatchRun, before: dict[str, int], t0: float) -> dict[str, Any]:
        metric = self.index.metric
        results = [[{"id": h.id, "score": float(kernels.to_score(h.distance, metric)), "metadata": dict(h.metadata)}
                    for h in hits or ()] for hits in run.hits]
        d = self.store.diff(before)
        self.searches += len(results)
        return {"results": results, "stats": {
            "queries": len(results), "bytesFetched": d["bytes_fetched"], "chunksFetched": d["chunks_fetched"],
            "cacheHits": d["cache_hits"], "rounds": run.fetch_rounds, "ms": round((time.perf_counter() - t0) * 1000, 3),
        }}

    def search_batch(self, vectors: Any, k: int = 10, filter: Any = None,
                     params: Mapping[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        """The hits of every query (as :meth:`search` gives them, in order), answered together:
        one plan and fetch per round for all of them, and matrix operations where the index
        has them (IVF: batched centroid distances, each probed list scored once for all)."""
        return self.search_batch_with_stats(vectors, k, filter, params)["results"]

    def search_batch_with_stats(self, vectors: Any, k: int = 10, filter: Any = None,
                                params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``{"results": [hits per query], "stats": {queries, bytesFetched, chunksFetched, cacheHits, rounds, ms}}``."""
        t0 = time.perf_counter()
        queries = self.prepare_many(vectors, k, filter, params)
        before = self.store.snapshot()
        run = run_batch_sync(self.index, queries, self.store, self.reader, self._kinds)
        return self._batch_result(run, before, t0)

    async def search_batch_async(self, vectors: Any, k: int = 10, filter: Any = None,
                                 params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """As :meth:`search_batch_with_stats`, with awaited (parallel) fetches."""
        t0 = time.perf_counter()
        queries = self.prepare_many(vectors, k, filter, params)
        before = self.store.snapshot()
        run = await run_batch(self.index, queries, self.store, self.reader, self._kinds)
        return self._batch_result(run, before, t0)

    # -- reading one record -----------------------------------------------------
    GET_BATCH = 16  # chunks fetched per round while looking for one id in a lazy index

    def _get_rounds(self, id: Any) -> Iterator[list[str]]:
        """The chunk batches to try for ``id`` (empty first: resident data), in order."""
        self._check_open()
        if not isinstance(id, str) or not id:
            raise InvalidArgumentError(f"id must be a non-empty string, got {id!r}")
        yield []
        need = self.index.plan_get(id)
        for lo in range(0, len(need), self.GET_BATCH):
            yield need[lo: lo + self.GET_BATCH]

    def _record(self, id: str, batch: list[str]) -> dict[str, Any] | None:
        chunks = {c: self.reader.get(c, self._kinds.get(c)) for c in batch}
        rec = self.index.get(id, chunks)
        return None if rec is None else {"id": rec.id, "metadata": dict(rec.metadata), "timestamp": rec.timestamp}

    def get(self, id: str) -> dict[str, Any]:
        """``{"id", "metadata", "timestamp"}`` of one record; UnknownIdError if the index lacks it.

        A lazy IVF index does not know which list holds an id: its list chunks are fetched, in
        parallel batches, until the id is found."""
        for batch in self._get_rounds(id):
            if batch:
                self.store.prefetch_sync(batch)
            rec = self._record(id, batch)
            if rec is not None:
                return rec
        raise UnknownIdError(f"unknown id {id!r}")

    async def get_async(self, id: str) -> dict[str, Any]:
        """As :meth:`get`, with awaited fetches."""
        for batch in self._get_rounds(id):
            if batch:
                await self.store.prefetch(batch)
            rec = self._record(id, batch)
            if rec is not None:
                return rec
        raise UnknownIdError(f"unknown id {id!r}")

    # -- editing (CPython) ------------------------------------------------------
    def _writable(self) -> Index:
        self._check_open()
        plan_all = getattr(self.index, "plan_all", None)
        for _ in range(4):  # IVF with separate refine data needs two rounds (lists, then refine)
            need = plan_all() if plan_all is not None else []
            if not need:
                break
            self.store.prefetch_sync(need)
            self.index.load_all({c: self.reader.get(c, self._kinds.get(c)) for c in need})
        return self.index

    async def _writable_async(self) -> Index:
        """:meth:`_writable` for the worker: the chunks edits need are fetched in parallel, never blocking."""
        self._check_open()
        plan_all = getattr(self.index, "plan_all", None)
        if plan_all is not None:
            need = plan_all()
            if need:
                await self.store.prefetch(need)
                self.index.load_all({c: self.reader.get(c, self._kinds.get(c)) for c in need})
        return self.index

    def upsert(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace records; one without a timestamp is stamped with the time of this call."""
        ids, mat, metas, ts = records_to_columns(records)
        self._writable().add(ids, mat, metas, ts)
        self.edits += 1
        return len(ids)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete records by id; ``ids`` is a list (a bare string would be read as its characters)."""
        ids = _id_list(ids)
        n = self._writable().delete(ids)
        self.edits += 1
        return n

    async def upsert_async(self, records: Iterable[Mapping[str, Any]]) -> int:
        ids, mat, metas, ts = records_to_columns(records)  # validated before anything is fetched
        (await self._writable_async()).add(ids, mat, metas, ts)
        self.edits += 1
        return len(ids)

    async def delete_async(self, ids: Iterable[str]) -> int:
        ids = _id_list(ids)
        n = (await self._writable_async()).delete(ids)
        self.edits += 1
        return n

    def migrate(self, now: float | None = None) -> int:
        """Hybrid only: move records older than the recent window from HNSW to IVF (then commit)."""
        index = self._writable()
        if not hasattr(index, "migrate"):
            raise InvalidArgumentError(f"a {index.kind} index has no recent/historical parts to migrate")
        moved = index.migrate(now=now)
        self.edits += 1
        return moved

    def commit(self) -> tuple[str, layout.StoreWriter]:
        """Save the edited index as a new snapshot whose manifest names this one as parent.

        Chunks whose content did not change keep their CID and are not uploaded again.
        """
        known = [c["cid"] for c in self.manifest["chunks"]]
        cid, writer = save(self._writable(), self.store, parent=self.cid, known=known, extra=self.manifest.get("extra"))
        self.cid, self.manifest = cid, read_manifest(self.store, cid)
        self._kinds = _chunk_kinds(self.manifest)
        self.edits = 0
        return cid, writer

    async def commit_async(self, progress: Callable[[dict[str, int]], None] | None = None) -> dict[str, Any]:
        """:meth:`commit` for the worker: the same snapshot, its new chunks uploaded in parallel and the
        manifest last, so a commit interrupted part-way names nothing; this database (and its edits)
        stay as they were, and a retry uploads only what is still missing.

        Returns {"manifest", "parent", "uploaded", "skipped", "bytesUploaded"}: chunks uploaded by
        this call, and chunks reused (unchanged since the parent, or uploaded by an earlier try).
        Raises NothingToCommitError without edits, AuthError / QuotaError / PortalError when the
        portals refuse or fail (see ``ChunkStore.put_many``).
        """
        self._check_open()
        if not self.edits:
            raise NothingToCommitError(f"nothing to commit: no edits since {self.cid}")
        index = await self._writable_async()
        writer = layout.StagingWriter([c["cid"] for c in self.manifest["chunks"]])
        manifest = _encode_snapshot(index, writer, self.cid)
        edits = self.edits  # edits made while the uploads run are not in this snapshot: they stay pending
        before = self.store.snapshot()
        await self.store.put_many(list(writer.staged.values()), progress=progress)
        cid = (await self.store.put_many([manifest]))[0]
        done = self.store.diff(before)
        parent = self.cid
        self.cid, self.manifest = cid, layout.decode_manifest(manifest)
        self._kinds = _chunk_kinds(self.manifest)
        self.edits -= edits
        uploaded = max(0, done["chunks_uploaded"] - 1)  # the manifest is not a chunk
        return {"manifest": cid, "parent": parent, "uploaded": uploaded,
                "skipped": len(writer.chunks) - uploaded, "bytesUploaded": done["bytes_uploaded"]}

    # -- info -------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {"kind": m["kind"], "spec": m.get("spec"), "dim": m["dim"], "metric": m["metric"],
                "count": len(self.index), "manifest": self.cid, "parent": m.get("parent")}

    def stats(self) -> dict[str, Any]:
        return dict(self.store.stats(), searches=self.searches)

    def close(self) -> None:
        self.closed = True


def _chunk_kinds(manifest: Mapping[str, Any]) -> dict[str, str]:
    return {c["cid"]: c["kind"] for c in manifest.get("chunks", ()) if isinstance(c, Mapping) and "cid" in c}


def _id_list(ids: Any) -> list[str]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InvalidArgumentError(f"delete takes a list of ids, not a single {type(ids).__name__} "
                                   f"(write delete([{ids!r:.40}]))")
    return list(ids)


def _as_array(vector: Any) -> Any:
    """Accept lists, NumPy arrays, and buffers (a Float32Array arrives from JS as a memoryview)."""
    if isinstance(vector, memoryview):
        return np.frombuffer(vector, dtype=np.float32) if vector.format in ("f", "<f") else np.asarray(vector)
    return vector


def make_store(portals: Sequence[str] | None, *, cache_bytes: int = 64 * 2**20, timeout: float = 10.0,
               auth_token: str | None = None, retries: int = 1, hedge: bool = True) -> ChunkStore:
    """A chunk store over ``portals``: ``timeout`` is the deadline for one blob (all portals and
    retries included); ``auth_token`` is sent on uploads; ``hedge`` asks the next portal too when
    the first is slow (see :mod:`s5vec.s5.client`)."""
    from .s5.client import PortalClient

    if not portals or isinstance(portals, str) or not all(isinstance(p, str) and p for p in portals):
        raise InvalidArgumentError("portals must be a non-empty list of URLs")
    for p in portals:
        if not p.startswith(("http://", "https://")):
            raise InvalidArgumentError(f"portal URL must start with http:// or https://, got {p!r}")
    client = PortalClient(list(portals), timeout=timeout, retries=retries, auth_token=auth_token, hedge=hedge)
    return ChunkStore(client, cache_bytes=cache_bytes)
