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
from .errors import ClosedError, FormatError, InvalidArgumentError, UnknownIdError
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
LAZY_CHUNK_KINDS = frozenset({"ivf_list", "kw_postings", "kw_docs"})


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
         extra: Mapping[str, Any] | None = None, keyword: Any = None,
         carry: Sequence[Mapping[str, Any]] = ()) -> tuple[str, layout.StoreWriter]:
    """Write ``index`` (and its keyword index) as chunks plus a manifest; returns (manifest CID, the writer).

    ``carry`` lists chunk entries of a parent manifest that stay as they are (an unedited keyword
    index): named in the new manifest without being read or written again.
    """
    writer = layout.StoreWriter(store, known)
    desc = index.save(writer)
    if keyword is not None:
        extra = dict(extra or {}, keyword=keyword.save(writer))
    writer.chunks.extend(dict(c) for c in carry)
    manifest = layout.encode_manifest(
        kind=index.kind, dim=index.dim, metric=index.metric, count=len(index), index=desc,
        chunks=writer.chunks, parent=parent, spec=index.spec(), extra=extra,
    )
    return store.put(manifest), writer


def publish(
    records: Iterable[Mapping[str, Any]], store: ChunkStore, *, kind: str = DEFAULT_KIND, metric: str = "cosine",
    params: Mapping[str, Any] | None = None, progress: Any = None, text_field: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Build an index of ``kind`` over ``records`` and upload it; returns the manifest CID.

    With ``text_field`` the records' text (``record[text_field]`` or ``record["metadata"][text_field]``)
    is also indexed for keyword search (BM25, :mod:`s5vec.keyword`), named in ``extra["keyword"]``.
    """
    records = list(records)
    ids, mat, metas, ts = records_to_columns(records)
    index = new_index(kind, mat.shape[1], metric, params)
    add_kwargs = {"progress": progress} if progress else {}
    index.add(ids, mat, metas, ts, **add_kwargs)
    extra = dict(extra or {})
    kw = build_keyword(records, text_field, ts) if text_field else None
    cid, _ = save(index, store, extra=extra, keyword=kw)
    return cid


def record_text(record: Mapping[str, Any], field: str, n: int = 0) -> str:
    """The text of a record: ``record[field]``, else ``record["metadata"][field]``."""
    text = record.get(field)
    if text is None:
        text = (record.get("metadata") or {}).get(field)
    if not isinstance(text, str):
        raise InvalidArgumentError(f"record {n}: no text in field {field!r}")
    return text


def build_keyword(records: Sequence[Mapping[str, Any]], field: str, timestamps: Sequence[float]) -> Any:
    """The keyword index over ``records``' text; ``timestamps`` as the vector index got them."""
    from .keyword import KeywordIndex

    kw = KeywordIndex(field)
    kw.build([r["id"] for r in records], [record_text(r, field, n) for n, r in enumerate(records)],
             [r.get("metadata") or {} for r in records], [float(t) for t in timestamps])
    return kw


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
        extra = manifest.get("extra") or {}
        self.keyword = None
        if extra.get("keyword") is not None:
            from .keyword import KeywordIndex

            self.keyword = KeywordIndex.load(extra["keyword"], reader)
        self._kw_edits: dict[str, Any] = {}  # id -> (text, metadata, timestamp), None = deleted
        self.model = None  # the text model (s5vec.embed.ChunkedModel), loaded by open when the manifest names one

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
        model = _run(_model_steps(manifest, store, _eager_chunks(manifest)), store.prefetch_sync)
        db = cls._from_manifest(cid, manifest, store, cache_bytes)
        db.model = model
        return db

    @classmethod
    async def open_async(cls, cid: str, portals: Sequence[str] | None = None, *, store: ChunkStore | None = None,
                         cache_bytes: int = 64 * 2**20, timeout: float = 10.0) -> "Database":
        store = store or make_store(portals, cache_bytes=cache_bytes, timeout=timeout)
        await store.prefetch([cid])
        manifest = read_manifest(store, cid)
        model = await _run_async(_model_steps(manifest, store, _eager_chunks(manifest)), store.prefetch)
        db = cls._from_manifest(cid, manifest, store, cache_bytes)
        db.model = model
        return db

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

    # -- text search ----------------------------------------------------------------
    def search_text(self, text: Any, k: int = 10, filter: Any = None, mode: str = "hybrid",
                    params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Best ``k`` hits for a text query; see :meth:`search_text_with_stats`."""
        return self.search_text_with_stats(text, k, filter, mode, params)["hits"]

    def search_text_with_stats(self, text: Any, k: int = 10, filter: Any = None, mode: str = "hybrid",
                               params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Text in, hits out: embed + vector search, BM25 keyword search, fused (``mode="hybrid"``).

        Every chunk (token rows, posting lists, index lists, document chunks) is planned and
        fetched in parallel rounds; see :func:`_text_steps`. Returns ``{"hits", "stats"}``.
        """
        t0, before = time.perf_counter(), self.store.stats()
        steps = self._text_steps(text, k, filter, mode, params)
        hits, counts = _run(steps, self.store.prefetch_sync)
        return {"hits": hits, "stats": self._stats_since(before, t0, counts)}

    async def search_text_async(self, text: Any, k: int = 10, filter: Any = None, mode: str = "hybrid",
                                params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        t0, before = time.perf_counter(), self.store.stats()
        steps = self._text_steps(text, k, filter, mode, params)
        hits, counts = await _run_async(steps, self.store.prefetch)
        return {"hits": hits, "stats": self._stats_since(before, t0, counts)}

    def _stats_since(self, before: dict[str, int], t0: float, counts: Mapping[str, int]) -> dict[str, Any]:
        after = self.store.stats()
        self.searches += 1
        return {"bytesFetched": after["bytes_fetched"] - before["bytes_fetched"],
                "chunksFetched": after["chunks_fetched"] - before["chunks_fetched"],
                "cacheHits": after["cache_hits"] - before["cache_hits"],
                "ms": round((time.perf_counter() - t0) * 1000, 3), "planned": dict(counts)}

    def _text_steps(self, text: Any, k: Any, filter: Any, mode: Any, params: Mapping[str, Any] | None):
        """The whole text query as rounds of CIDs to fetch (a generator; returns (hits, planned counts)).

        Round 1: the query's token-table rows and posting lists. Round 2: the vector index's lists
        and, for a filtered keyword search, the document chunks of the best keyword candidates.
        Last round: metadata of keyword-only hits. Rounds run in parallel through the store.
        """
        if self.closed:
            raise ClosedError("database is closed")
        text, k, flt, mode, params = self._prepare_text(text, k, filter, mode, params)
        counts = {"model": 0, "postings": 0, "index": 0, "docs": 0}
        n = max(k, FUSE_DEPTH) if mode == "hybrid" else k
        branches: list[Any] = []
        kq = self.keyword.prepare(text) if mode != "vector" else None
        if mode != "vector":
            branches.append(_counted(self.keyword.search_steps(kq, n, flt, metadata=False), counts))
        vec_only_failed = None
        if mode != "keyword":
            try:
                tokens = self.model.tokenize(text)
            except _no_known_tokens() as exc:
                if mode == "vector":
                    raise
                vec_only_failed = exc  # hybrid: no known token, the keyword side answers alone
            else:
                branches.append(_counted(self._vector_steps(tokens, n, flt, params), counts))
        results = yield from _together(branches)
        kw_hits = results[0] if mode != "vector" else []
        vec_hits = results[-1] if mode != "keyword" and vec_only_failed is None else []
        if mode == "vector":
            hits = [{"id": i, "score": s, "metadata": m} for i, s, m in vec_hits]
        elif mode == "keyword":
            hits = [{"id": i, "score": s, "metadata": m} for i, s, _, m in kw_hits]
        else:
            hits = fuse(vec_hits, kw_hits, k)
        hits = hits[:k]
        missing = [h["id"] for h in hits if h["metadata"] is None]
        if missing:
            meta = yield from _counted(self.keyword.metadata_steps(missing), counts)
            for h in hits:
                if h["metadata"] is None:
                    h["metadata"] = meta.get(h["id"], {})
        return hits, counts

    def _vector_steps(self, tokens: list[int], k: int, flt: Any, params: Mapping[str, Any]):
        """Embed (token rows planned and fetched), then search the vector index (its chunks planned)."""
        need = self.model.plan(tokens)
        if need:
            yield ("model", need)
        q = self.model.embed_tokens(tokens)
        need = self.index.chunks_for(q, k, filter=flt, **params)
        if need:
            yield ("index", need)
        pairs = self.index.search(q, k, flt, **params)
        return [(i, float(kernels.to_score(d, self.index.metric)), self.index.metadata(i)) for i, d in pairs]

    def _prepare_text(self, text: Any, k: Any, filter: Any, mode: Any, params: Mapping[str, Any] | None):
        from .keyword import tokenize

        if not isinstance(text, str):
            raise InvalidArgumentError(f"the query must be text, got {type(text).__name__}")
        if mode not in TEXT_MODES:
            raise InvalidArgumentError(f"mode must be one of {', '.join(TEXT_MODES)}, got {mode!r}")
        if not tokenize(text[:MAX_QUERY_CHARS]):
            raise _empty_query_error()("the query has no words (letters or digits)")
        text = text[:MAX_QUERY_CHARS]
        if mode in ("keyword", "hybrid") and self.keyword is None:
            if mode == "keyword" or self.model is None:
                raise InvalidArgumentError("this index has no keyword index (publish it with a text field)")
            mode = "vector"
        if mode in ("vector", "hybrid") and self.model is None:
            if mode == "vector":
                raise InvalidArgumentError("this index names no text model (publish it with a text field)")
            mode = "keyword"
        k = kernels.check_k(k)
        flt = filters.parse(filter)
        params = dict(params or {})
        for key, val in params.items():
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise InvalidArgumentError(f"search parameter {key!r} must be a number")
        return text, k, flt, mode, params

    def get(self, id: Any) -> dict[str, Any]:
        """A record's ``{"id", "metadata"}`` without a search (UnknownIdError if there is none)."""
        return _run(self._get_steps(id), self.store.prefetch_sync)

    async def get_async(self, id: Any) -> dict[str, Any]:
        return await _run_async(self._get_steps(id), self.store.prefetch)

    def _get_steps(self, id: Any):
        if self.closed:
            raise ClosedError("database is closed")
        if not isinstance(id, str) or not id:
            raise InvalidArgumentError(f"id must be a non-empty string, got {id!r}")
        if self.keyword is not None:
            need = self.keyword.get_plan(id)
            if need:
                yield need
            meta, _ = self.keyword.get(id)
            return {"id": id, "metadata": meta}
        if id not in self.index:
            raise UnknownIdError(f"unknown id: {id}")
        return {"id": id, "metadata": self.index.metadata(id)}

    # -- editing (CPython) ------------------------------------------------------
    def _writable(self) -> Index:
        if self.closed:
            raise ClosedError("database is closed")
        load_all = getattr(self.index, "load_all", None)
        if load_all is not None:
            load_all()
        return self.index

    def upsert(self, records: Iterable[Mapping[str, Any]]) -> int:
        records = list(records)
        ids, mat, metas, ts = records_to_columns(records)
        texts = [record_text(r, self.keyword.field, n) for n, r in enumerate(records)] if self.keyword else []
        self._writable().add(ids, mat, metas, ts)
        for n, i in enumerate(ids if self.keyword else ()):
            self._kw_edits[i] = (texts[n], metas[n], ts[n])
        return len(ids)

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        n = self._writable().delete(ids)
        for i in ids if self.keyword else ():
            self._kw_edits[i] = None
        return n

    def _rebuilt_keyword(self) -> Any:
        """The keyword index with this session's edits applied (rebuilt from its documents), or None."""
        if self.keyword is None:
            return None
        if not self._kw_edits:
            return self.keyword
        from .keyword import KeywordIndex

        docs = {i: (t, m, ts) for i, t, m, ts in self.keyword.documents()}
        for i, doc in self._kw_edits.items():
            if doc is None:
                docs.pop(i, None)
            else:
                docs[i] = doc
        kw = KeywordIndex(self.keyword.field, exact_field=self.keyword.exact_field, **self.keyword.params())
        ids = sorted(docs)
        kw.build(ids, [docs[i][0] for i in ids], [docs[i][1] for i in ids], [docs[i][2] for i in ids])
        return kw

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
        extra = dict(self.manifest.get("extra") or {})
        kw_new, carry = None, []
        if self.keyword is not None and self._kw_edits:
            kw_new = self._rebuilt_keyword()
            extra.pop("keyword", None)
        elif self.keyword is not None:  # unchanged: the new manifest names the same chunks, nothing is read
            carry = [c for c in self.manifest["chunks"] if str(c.get("kind")).startswith("kw_")]
        cid, writer = save(self._writable(), self.store, parent=self.cid, known=known, extra=extra,
                           keyword=kw_new, carry=carry)
        self.cid, self.manifest = cid, read_manifest(self.store, cid)
        if kw_new is not None:
            self.keyword = kw_new
        self._kw_edits = {}
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


def make_store(portals: Sequence[str] | None, *, cache_bytes: int = 64 * 2**20, timeout: float = 10.0) -> ChunkStore:
    from .s5.client import PortalClient

    if not portals or isinstance(portals, str) or not all(isinstance(p, str) and p for p in portals):
        raise InvalidArgumentError("portals must be a non-empty list of URLs")
    for p in portals:
        if not p.startswith(("http://", "https://")):
            raise InvalidArgumentError(f"portal URL must start with http:// or https://, got {p!r}")
    return ChunkStore(PortalClient(list(portals), timeout=timeout), cache_bytes=cache_bytes)


# -- text queries: modes, fusion, and the plan-fetch rounds -------------------------------------
TEXT_MODES = ("hybrid", "vector", "keyword")
MAX_QUERY_CHARS = 3072  # like the embedder: longer text is cut here (documented, not an error)
FUSE_DEPTH = 50  # each side's candidates fused by reciprocal rank
RRF_K = 60  # Cormack et al.'s constant: rank r contributes 1 / (RRF_K + r)
EXACT_BOOST = 1.0  # larger than any fused score: a query that is a title puts that title first


def fuse(vector_hits: Sequence[tuple[str, float, Any]], keyword_hits: Sequence[tuple[str, float, bool, Any]],
         k: int) -> list[dict[str, Any]]:
    """Reciprocal rank fusion of the two rankings; exact-title keyword matches first.

    The score is the fused score (sum of ``1/(RRF_K + rank)``, plus ``EXACT_BOOST`` for an exact
    title match), so scores stay ordered best first.
    """
    score: dict[str, float] = {}
    meta: dict[str, Any] = {}
    for r, (i, _, m) in enumerate(vector_hits, 1):
        score[i] = score.get(i, 0.0) + 1.0 / (RRF_K + r)
        meta[i] = m
    for r, (i, _, exact, m) in enumerate(keyword_hits, 1):
        score[i] = score.get(i, 0.0) + 1.0 / (RRF_K + r) + (EXACT_BOOST if exact else 0.0)
        if meta.get(i) is None:
            meta[i] = m
    best = sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [{"id": i, "score": round(s, 6), "metadata": meta.get(i)} for i, s in best]


def _together(branches: Sequence[Any]):
    """Run plan-fetch generators side by side: each round fetches what every branch needs next.

    A branch yields a list of CIDs, or ``(label, cids)``; returns the branches' results in order."""
    results: list[Any] = [None] * len(branches)
    pending: dict[int, list[str]] = {}

    def advance(i: int, first: bool) -> None:
        try:
            need = next(branches[i]) if first else branches[i].send(None)
            pending[i] = list(need[1] if isinstance(need, tuple) else need)
        except StopIteration as stop:
            results[i] = stop.value

    for i in range(len(branches)):
        advance(i, True)
    while pending:
        yield sorted({c for cids in pending.values() for c in cids})
        current, pending = list(pending), {}
        for i in current:
            advance(i, False)
    return results


def _counted(steps: Any, counts: dict[str, int]):
    """Pass a branch's rounds through, counting the planned CIDs of each labelled round."""
    try:
        need = next(steps)
        while True:
            label, cids = need if isinstance(need, tuple) else ("index", need)
            counts[label] = counts.get(label, 0) + len(cids)
            yield list(cids)
            need = steps.send(None)
    except StopIteration as stop:
        return stop.value


def _run(steps: Any, fetch: Any) -> Any:
    from .keyword import run

    return run(steps, fetch)


async def _run_async(steps: Any, fetch: Any) -> Any:
    from .keyword import run_async

    return await run_async(steps, fetch)


def _model_steps(manifest: Mapping[str, Any], store: ChunkStore, eager: list[str]):
    """Open rounds: the index's eager chunks with the model chunk, then the model's vocabulary."""
    emb = (manifest.get("extra") or {}).get("embed")
    if not emb:
        if eager:
            yield eager
        return None
    from . import embed

    model_cid = emb.get("model") if isinstance(emb, Mapping) else None
    if not isinstance(model_cid, str):
        raise FormatError("manifest extra.embed lacks a model CID")
    yield eager + [model_cid]
    reader = layout.StoreReader(store)
    need = embed.ChunkedModel.open_chunks(reader, model_cid)
    if need:
        yield list(need)
    return embed.ChunkedModel.load(model_cid, reader)


def _no_known_tokens() -> type:
    from . import errors

    return getattr(errors, "NoKnownTokensError", ())


def _empty_query_error() -> type:
    from . import errors

    return getattr(errors, "EmptyQueryError", InvalidArgumentError)
