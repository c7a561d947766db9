"""The request layer both the worker and the CLI call: open, search, publish, edit.

Everything here validates its input first and raises only :mod:`s5vec.errors` types.
Fetching is two-phase so it can be parallel in the browser: an index reports the chunk
CIDs a search needs (``chunks_for``), the store fetches them together (``pyfetch`` under
``asyncio.gather`` in Pyodide, a thread pool on CPython), then the index searches from cache.
"""
from __future__ import annotations

import importlib
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import filters, kernels, layout
from .errors import ClosedError, FormatError, InvalidArgumentError
from .index.base import Index
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
LAZY_CHUNK_KINDS = frozenset({"ivf_list"})


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


def records_to_columns(records: Iterable[Mapping[str, Any]]) -> tuple[list[str], np.ndarray, list[dict], list[float]]:
    """Turn ``{"id", "vector", "metadata", "timestamp"}`` dicts into the columns ``Index.add`` takes."""
    ids, vecs, metas, ts = [], [], [], []
    for n, r in enumerate(records):
        if not isinstance(r, Mapping) or "id" not in r or "vector" not in r:
            raise InvalidArgumentError(f"record {n}: needs at least 'id' and 'vector'")
        ids.append(r["id"])
        vecs.append(r["vector"])
        metas.append(r.get("metadata") or {})
        t = r.get("timestamp", 0.0)
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise InvalidArgumentError(f"record {n}: timestamp must be Unix seconds (a number), got {t!r}")
        ts.append(float(t))
    if not ids:
        raise InvalidArgumentError("no records")
    dims = {len(v) if hasattr(v, "__len__") else -1 for v in vecs}
    if len(dims) != 1:
        raise InvalidArgumentError(f"records have vectors of different lengths: {sorted(dims)[:5]}")
    return ids, kernels.as_matrix(vecs), metas, ts


def save(index: Index, store: ChunkStore, *, parent: str | None = None, known: Iterable[str] = (),
         extra: Mapping[str, Any] | None = None) -> tuple[str, layout.StoreWriter]:
    """Write ``index`` as chunks plus a manifest; returns (manifest CID, the writer with its counts)."""
    writer = layout.StoreWriter(store, known)
    desc = index.save(writer)
    manifest = layout.encode_manifest(
        kind=index.kind, dim=index.dim, metric=index.metric, count=len(index), index=desc,
        chunks=writer.chunks, parent=parent, spec=index.spec(), extra=extra,
    )
    return store.put(manifest), writer


def publish(
    records: Iterable[Mapping[str, Any]], store: ChunkStore, *, kind: str = DEFAULT_KIND, metric: str = "cosine",
    params: Mapping[str, Any] | None = None, progress: Any = None,
) -> str:
    """Build an index of ``kind`` over ``records`` and upload it; returns the manifest CID."""
    ids, mat, metas, ts = records_to_columns(records)
    index = new_index(kind, mat.shape[1], metric, params)
    add_kwargs = {"progress": progress} if progress else {}
    index.add(ids, mat, metas, ts, **add_kwargs)
    cid, _ = save(index, store)
    return cid


def read_manifest(store: ChunkStore, cid: str) -> dict[str, Any]:
    return layout.decode_manifest(store.get(cid))


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

    # -- opening ----------------------------------------------------------------
    @classmethod
    def _from_manifest(cls, cid: str, manifest: dict[str, Any], store: ChunkStore, cache_bytes: int) -> "Database":
        reader = layout.StoreReader(store, cache_bytes)
        klass = index_class(manifest["kind"])
        index = klass.load(manifest["index"], reader)
        return cls(cid, manifest, index, store, reader)

    @classmethod
    def open(cls, cid: str, portals: Sequence[str] | None = None, *, store: ChunkStore | None = None,
             cache_bytes: int = 64 * 2**20, timeout: float = 10.0) -> "Database":
        store = store or make_store(portals, cache_bytes=cache_bytes, timeout=timeout)
        manifest = read_manifest(store, cid)
        store.prefetch_sync(_eager_chunks(manifest))
        return cls._from_manifest(cid, manifest, store, cache_bytes)

    @classmethod
    async def open_async(cls, cid: str, portals: Sequence[str] | None = None, *, store: ChunkStore | None = None,
                         cache_bytes: int = 64 * 2**20, timeout: float = 10.0) -> "Database":
        store = store or make_store(portals, cache_bytes=cache_bytes, timeout=timeout)
        await store.prefetch([cid])
        manifest = read_manifest(store, cid)
        await store.prefetch(_eager_chunks(manifest))
        return cls._from_manifest(cid, manifest, store, cache_bytes)

    # -- searching --------------------------------------------------------------
    def _prepare(self, vector: Any, k: Any, filter: Any, params: Mapping[str, Any] | None):
        if self.closed:
            raise ClosedError("database is closed")
        q = kernels.as_vector(_as_array(vector), self.index.dim)
        k = kernels.check_k(k)
        flt = filters.parse(filter)
        params = dict(params or {})
        for key, val in params.items():
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise InvalidArgumentError(f"search parameter {key!r} must be a number")
        return q, k, flt, params

    def _finish(self, q, k, flt, params, before: dict[str, int], t0: float) -> dict[str, Any]:
        pairs = self.index.search(q, k, flt, **params)
        hits = [
            {"id": i, "score": float(kernels.to_score(d, self.index.metric)), "metadata": self.index.metadata(i)}
            for i, d in pairs
        ]
        after = self.store.stats()
        self.searches += 1
        return {"hits": hits, "stats": {
            "bytesFetched": after["bytes_fetched"] - before["bytes_fetched"],
            "chunksFetched": after["chunks_fetched"] - before["chunks_fetched"],
            "cacheHits": after["cache_hits"] - before["cache_hits"],
            "ms": round((time.perf_counter() - t0) * 1000, 3),
        }}

    def search(self, vector: Any, k: int = 10, filter: Any = None, params: Mapping[str, Any] | None = None
               ) -> list[dict[str, Any]]:
        """Best ``k`` hits ``[{"id", "score", "metadata"}]``; see :meth:`search_with_stats`."""
        return self.search_with_stats(vector, k, filter, params)["hits"]

    def search_with_stats(self, vector: Any, k: int = 10, filter: Any = None,
                          params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        q, k, flt, params = self._prepare(vector, k, filter, params)
        before = self.store.stats()
        self.store.prefetch_sync(self.index.chunks_for(q, k, filter=flt, **params))
        return self._finish(q, k, flt, params, before, t0)

    async def search_async(self, vector: Any, k: int = 10, filter: Any = None,
                           params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        q, k, flt, params = self._prepare(vector, k, filter, params)
        before = self.store.stats()
        await self.store.prefetch(self.index.chunks_for(q, k, filter=flt, **params))
        return self._finish(q, k, flt, params, before, t0)

    # -- editing (CPython) ------------------------------------------------------
    def _writable(self) -> Index:
        if self.closed:
            raise ClosedError("database is closed")
        load_all = getattr(self.index, "load_all", None)
        if load_all is not None:
            load_all()
        return self.index

    def upsert(self, records: Iterable[Mapping[str, Any]]) -> int:
        ids, mat, metas, ts = records_to_columns(records)
        self._writable().add(ids, mat, metas, ts)
        return len(ids)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete records by id; ``ids`` is a list (a bare string would be read as its characters)."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise InvalidArgumentError(f"delete takes a list of ids, not a single {type(ids).__name__} "
                                       f"(write delete([{ids!r:.40}]))")
        return self._writable().delete(list(ids))

    def migrate(self, now: float | None = None) -> int:
        """Hybrid only: move records older than the recent window from HNSW to IVF (then commit)."""
        index = self._writable()
        if not hasattr(index, "migrate"):
            raise InvalidArgumentError(f"a {index.kind} index has no recent/historical parts to migrate")
        return index.migrate(now=now)

    def commit(self) -> tuple[str, layout.StoreWriter]:
        """Save the edited index as a new snapshot whose manifest names this one as parent.

        Chunks whose content did not change keep their CID and are not uploaded again.
        """
        known = [c["cid"] for c in self.manifest["chunks"]]
        cid, writer = save(self._writable(), self.store, parent=self.cid, known=known)
        self.cid, self.manifest = cid, read_manifest(self.store, cid)
        return cid, writer

    # -- info -------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {"kind": m["kind"], "spec": m.get("spec"), "dim": m["dim"], "metric": m["metric"],
                "count": len(self.index), "manifest": self.cid, "parent": m.get("parent")}

    def stats(self) -> dict[str, Any]:
        return dict(self.store.stats(), searches=self.searches)

    def close(self) -> None:
        self.closed = True


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
