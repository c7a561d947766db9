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
from .errors import (ClosedError, EmptyQueryError, FormatError, InvalidArgumentError, NoKnownTokensError,
                     NothingToCommitError, NotFoundError, UnknownIdError)
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
LAZY_CHUNK_KINDS = frozenset({"ivf_list", "ivf_refine", "kw_postings", "kw_docs", "hnsw_base"})
# Chunk kinds named by other chunks (an ivf_list names its ivf_refine blocks, hnsw_base_dir the
# lazily fetched HNSW base layer's hnsw_base chunks) and left out of the
# manifest's chunk list, so the manifest -- what every open downloads -- does not grow with N; the
# manifest records their count and bytes under extra.unlisted.
UNLISTED_CHUNK_KINDS = frozenset({"ivf_refine", "hnsw_base"})


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


def max_rounds(index: Index) -> int:
    """Rounds one query may take: :data:`MAX_ROUNDS`, or the index's own cap when it walks in
    rounds (a lazily fetched HNSW base layer, ``s5vec.index.hnsw_lazy.MAX_ROUNDS``)."""
    return getattr(index, "max_rounds", None) or MAX_ROUNDS


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
        return _read_chunks(self.reader, self._need, self.kinds)

    def search(self) -> list[Hit] | None:
        self.searches += 1
        out = self.index.search(self.query, self.chunks())
        if out.widen is None:
            return out.hits
        if self.searches >= max_rounds(self.index):
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
        chunks = _read_chunks(self.reader, self._need, self.kinds)
        qs = [self.queries[i] for i in self._active]
        search_many = getattr(self.index, "search_many", None)
        outs = search_many(qs, chunks) if search_many is not None else [self.index.search(q, chunks) for q in qs]
        for i, out in zip(self._active, outs):
            if out.widen is None:
                self.hits[i] = out.hits
            else:
                self.queries[i] = out.widen
        if any(h is None for h in self.hits) and self._searches >= max_rounds(self.index):
            raise RuntimeError("batch search did not settle: too many rounds")
        return all(h is not None for h in self.hits)


#: share of the chunk cache one group of a batch may fetch (the rest keeps what the open index and
#: the other groups use): a batch of 500 queries at 10M fetched ~500 MB in one round and took the
#: tab's heap to 1 GB with a 276 MB cache
BATCH_CACHE_SHARE = 0.5
#: fewest queries in a group: below this a batch stops paying for its shared plan and matrix work
BATCH_MIN_GROUP = 8


class BatchGroups:
    """Cuts a batch into groups that are answered one after the other, each expected to fetch at
    most :data:`BATCH_CACHE_SHARE` of the chunk cache, so a large batch neither evicts chunks a
    group is about to use nor holds more than the cache in fetched chunks. The expected bytes per
    query start from the index's own estimate (the manifest's ``extra.auto.evidence.cold_bytes``)
    and follow what each group really fetched; without either the first group is
    ``BATCH_MIN_GROUP * 8`` queries. Every query's hits are the same in any grouping."""

    def __init__(self, n: int, cache_limit: int, per_query: float | None = None) -> None:
        self.n, self.budget = n, max(0.0, cache_limit * BATCH_CACHE_SHARE)
        self.per_query = per_query if per_query and per_query > 0 else None
        self.start = 0
        self.count = 0

    def next(self) -> range | None:
        """The next group of query positions, or None when all are done."""
        if self.start >= self.n:
            return None
        g = BATCH_MIN_GROUP * 8 if self.per_query is None else int(self.budget // self.per_query)
        group = range(self.start, min(self.n, self.start + max(BATCH_MIN_GROUP, g)))
        self.start = group.stop
        self.count += 1
        return group

    def fetched(self, queries: int, nbytes: int) -> None:
        """What the last group fetched: the next group's size follows it (a warm group, which
        fetched nothing, keeps the estimate)."""
        if queries and nbytes > 0:
            self.per_query = nbytes / queries


class GroupedBatch:
    """One batch answered group by group (:class:`BatchGroups`): ``parts()`` yields each group's
    queries and, once the caller has run it and passed the run to :meth:`add`, tells the groups
    what it fetched; ``hits`` (in query order) and ``rounds`` add up the runs."""

    def __init__(self, queries: Sequence[Query], store: ChunkStore, groups: BatchGroups) -> None:
        self.queries, self.store, self.groups = list(queries), store, groups
        self.hits: list[list[Hit] | None] = []
        self.rounds = 0

    def parts(self) -> Iterator[list[Query]]:
        while (g := self.groups.next()) is not None:
            before = self.store.snapshot()
            yield [self.queries[i] for i in g]
            self.groups.fetched(len(g), self.store.diff(before)["bytes_fetched"])

    def add(self, run: BatchRun) -> None:
        self.hits.extend(run.hits)
        self.rounds += run.fetch_rounds


def _read_chunks(reader: Any, cids: Sequence[str], kinds: Mapping[str, str]) -> Chunks:
    """The decoded bodies of a round's chunks (in one call when the reader reads many)."""
    many = getattr(reader, "get_many", None)
    if many is not None:
        return many(cids, kinds)
    return {c: reader.get(c, kinds.get(c)) for c in cids}


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
            missing = store.missing(need)
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
            missing = store.missing(need)
            if missing:  # never fall back to a blocking fetch here (sync XHR in Pyodide)
                raise NotFoundError(f"the portal did not return chunk {missing[0]}")
        hits = run.search()
        if hits is not None:
            return hits, run


def save(index: Index, store: ChunkStore, *, parent: str | None = None, known: Iterable[str] = (),
         extra: Mapping[str, Any] | None = None, keyword: Any = None,
         carry: Sequence[Mapping[str, Any]] = ()) -> tuple[str, layout.StoreWriter]:
    """Write ``index`` (and its keyword index) as chunks plus a manifest; returns (manifest CID, the writer).

    ``carry`` lists chunk entries of a parent manifest that stay as they are (an unedited keyword
    index): named in the new manifest without being read or written again.
    """
    writer = layout.StoreWriter(store, known)
    return store.put(_encode_snapshot(index, writer, parent, extra, keyword, carry)), writer


def _encode_snapshot(index: Index, writer: layout.StoreWriter, parent: str | None,
                     extra: Mapping[str, Any] | None = None, keyword: Any = None,
                     carry: Sequence[Mapping[str, Any]] = ()) -> bytes:
    """Write ``index``'s chunks (and ``keyword``'s) through ``writer``; returns the manifest bytes naming
    them and the ``carry`` entries (see :func:`save`)."""
    desc = index.save(writer)
    if keyword is not None:
        extra = dict(extra or {}, keyword=keyword.save(writer))
        # an edited keyword index writes only its changed chunks: the parent's entries name the rest
        named, written = keyword.chunk_cids(), {c["cid"] for c in writer.chunks}
        carry = list({c["cid"]: c for c in carry if c["cid"] in named and c["cid"] not in written}.values())
        missing = named - written - {c["cid"] for c in carry}
        if missing:
            raise FormatError(f"keyword chunk {sorted(missing)[0]} is neither written nor in the parent manifest")
    writer.chunks.extend(dict(c) for c in carry)
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
    rng = np.random.default_rng(0)
    probe = np.sort(rng.choice(len(ids), min(len(ids), 2000), replace=False)) if len(ids) else np.empty(0, np.int64)

    def meta_size(m: Any) -> int | None:
        try:  # the index validates metadata (depth, size) when it adds it; here a bad map just does not count
            return len(layout.dumps(dict(m or {})))
        except (FormatError, RecursionError, TypeError, ValueError):
            return None

    metas = [s for s in (meta_size(metadata[i]) for i in probe.tolist()) if s is not None]
    sizes = {"id_bytes": float(np.mean([len(str(ids[i]).encode("utf-8")) for i in probe.tolist()])) if len(ids) else 8.0,
             "meta_bytes": float(np.mean(metas)) if metas else 1.0,
             "ts_sample": np.asarray(timestamps, np.float64)[probe] if len(ids) else None}
    if kind == "ivf":
        return ivf_tune.choose(vectors, metric, **sizes)
    return ivf_tune.choose_hybrid(vectors, timestamps, metric, **sizes)


def train_as_checked(index: Index, choice: Any, vectors: np.ndarray) -> bool:
    """Train the empty ``index``'s IVF part on the rows ``choice`` clustered (``choice.train_pos``
    of ``vectors``) with its centroids, so the index is the one the held-out check measured and
    k-means runs once (100k x 384 hybrid: publish 112.5 -> 99.1 CPU s). False
    (nothing done) when the choice has no such centroids; ``add`` then trains as usual."""
    from .build import ivf_of, train

    cents, pos = getattr(choice, "centroids", None), getattr(choice, "train_pos", None)
    if cents is None or pos is None or index.kind not in ("ivf", "hybrid"):
        return False
    ivf = ivf_of(index)
    if cents.shape != (ivf.nlist, ivf.dim) or len(pos) < ivf.nlist:
        return False
    train(index, vectors[pos], cents)
    return True


def publish(
    records: Iterable[Mapping[str, Any]], store: ChunkStore, *, kind: str = DEFAULT_KIND, metric: str = "cosine",
    params: Mapping[str, Any] | None = None, progress: Any = None, text_field: str | None = None,
    extra: Mapping[str, Any] | None = None, explain: Any = None,
) -> str:
    """Build an index of ``kind`` over ``records`` and upload it; returns the manifest CID.

    ``extra`` goes into the manifest as is (e.g. ``{"embed": {"model": cid, ...}}`` naming the text model).
    Without ``params`` an IVF or hybrid index gets parameters picked for its size and data
    (:func:`choose_params`): what was picked, and the held-out evidence, is logged (logger
    ``s5vec``), passed to ``explain(choice)`` when given, and stored in the manifest
    (``extra.auto``; the manifest ``spec`` names the result, e.g. ``IVF1024,PQ48,Refine(SQ8)``).

    With ``text_field`` the records' text (``record[text_field]`` or ``record["metadata"][text_field]``)
    is also indexed for keyword search (BM25, :mod:`s5vec.keyword`), named in ``extra["keyword"]``.
    """
    records = list(records)
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
    if choice is not None:
        train_as_checked(index, choice, mat)
    add_kwargs = {"progress": progress} if progress else {}
    index.add(ids, mat, metas, ts, **add_kwargs)
    extra = dict(extra or {})
    if choice is not None:
        extra["auto"] = choice.record
    kw = build_keyword(records, text_field, ts) if text_field else None
    cid, _ = save(index, store, extra=extra or None, keyword=kw)
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


CACHE_MIN = 16 * 2**20
CACHE_LAZY_MAX = 256 * 2**20
#: a decoded lazy chunk held by the store, over its published bytes (measured on the 1M index: list
#: chunks 1.11, refine chunks 1.19): the budget counts what is held, so the lazy part is sized by it
DECODED_OVER_RAW = 1.15


def cache_bytes_for(manifest: Mapping[str, Any], resident: int | None = None) -> int:
    """The chunk cache an opened index needs, from its own sizes: everything fetched at open
    (centroids, summaries, the HNSW part) stays, plus the lazy chunks (lists, refine rows, a lazy
    HNSW base layer; as held decoded, :data:`DECODED_OVER_RAW` their bytes) up to
    :data:`CACHE_LAZY_MAX`, so every list a session touches is fetched once
    (a 100k index's lists fit whole; a 1M one keeps its working set). At least :data:`CACHE_MIN`.
    The budget counts what the store holds (decoded bodies, see :mod:`s5vec.store`): ``resident``,
    once known, is what the open keeps as measured (decoded eager chunks can be several times
    their bytes: a 1M index's summaries 0.3 -> 4.6 MB), else the eager chunks' bytes stand in.
    The chunks of the round being read are held until read whatever the budget."""
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
    if resident is not None:
        eager = resident
    return int(max(CACHE_MIN, eager + min(int(lazy * DECODED_OVER_RAW), CACHE_LAZY_MAX) + (1 << 20)))


def _embeds(manifest: Mapping[str, Any]) -> bool:
    return bool((manifest.get("extra") or {}).get("embed"))


def _opened_chunks(manifest: Mapping[str, Any]) -> list[str]:
    """What an open fetches and the database then holds: the eager index chunks, and the text
    model's chunk (last) when the manifest names one."""
    out = _eager_chunks(manifest)
    if _embeds(manifest):
        emb = manifest["extra"]["embed"]
        model_cid = emb.get("model") if isinstance(emb, Mapping) else None
        if not isinstance(model_cid, str):
            raise FormatError("manifest extra.embed lacks a model CID")
        out.append(model_cid)
    return out


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
        extra = manifest.get("extra") or {}
        self.keyword = None
        if extra.get("keyword") is not None:
            from .keyword import KeywordIndex

            self.keyword = KeywordIndex.load(extra["keyword"], reader)
        self._kw_edits: dict[str, Any] = {}  # id -> (text, metadata, timestamp), None = deleted
        self.model = None  # the text model (s5vec.embed.ChunkedModel), loaded by open when the manifest names one
        self._kept: list[str] = []  # chunks the store keeps for this database (see _opened)

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
        kept = _opened_chunks(manifest)
        model = _run(_model_steps(manifest, store, kept[:-1] if _embeds(manifest) else kept), store.prefetch_sync)
        return cls._opened(cid, manifest, store, model, kept, own and cache_bytes is None)

    @classmethod
    async def open_async(cls, cid: str, portals: Sequence[str] | None = None, *, store: ChunkStore | None = None,
                         cache_bytes: int | None = None, timeout: float = 10.0) -> "Database":
        own = store is None
        store = store or make_store(portals, cache_bytes=cache_bytes or 64 * 2**20, timeout=timeout)
        await store.prefetch([cid])
        manifest = read_manifest(store, cid)
        if own and cache_bytes is None:
            store.cache_limit = cache_bytes_for(manifest)
        kept = _opened_chunks(manifest)
        model = await _run_async(_model_steps(manifest, store, kept[:-1] if _embeds(manifest) else kept),
                                 store.prefetch)
        return cls._opened(cid, manifest, store, model, kept, own and cache_bytes is None)

    @classmethod
    def _opened(cls, cid: str, manifest: dict[str, Any], store: ChunkStore, model: Any, kept: list[str],
                size_cache: bool) -> "Database":
        """The index loaded from what the open fetched. Those chunks are kept by the store for the
        database's life (``ChunkStore.keep``: the index references them, so evicting them would free
        nothing) -- kept before loading, so decoding them never evicts each other; with
        ``size_cache`` the budget is then sized from what they really hold (:func:`cache_bytes_for`)."""
        store.keep(kept)
        try:
            db = cls._from_manifest(cid, manifest, store)
        except BaseException:
            store.release(kept)
            raise
        db.model = model
        db._kept = kept
        if size_cache:
            store.cache_limit = cache_bytes_for(manifest, store.stats()["resident_bytes"])
        return db

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
        dim = self.index.dim
        if isinstance(vectors, np.ndarray):
            if vectors.ndim != 2:
                raise InvalidArgumentError(f"search_batch takes a 2-d array of vectors, got shape {vectors.shape}")
            n = vectors.shape[0]
        elif isinstance(vectors, (list, tuple)):
            n = len(vectors)
        else:
            raise InvalidArgumentError(f"search_batch takes a list of vectors, got {type(vectors).__name__}")
        if not n:
            raise InvalidArgumentError("search_batch needs at least one vector")
        if n > self.MAX_BATCH:
            raise InvalidArgumentError(f"search_batch takes at most {self.MAX_BATCH} vectors, got {n}")
        if isinstance(vectors, np.ndarray):
            mat = kernels.as_matrix(vectors, dim)
        else:
            mat = np.stack([kernels.as_vector(_as_array(v), dim) for v in vectors])
        first = prepare_query(self.index, mat[0], k, filter, params)
        # prepared all at once: row-wise the same floats as prepare_query gives one by one
        rows = kernels.prepare(mat, self.index.metric)
        return [first] + [Query(rows[i], first.k, first.filter, first.params) for i in range(1, n)]

    def _grouped(self, queries: list[Query]) -> "GroupedBatch":
        evidence = ((self.manifest.get("extra") or {}).get("auto") or {}).get("evidence") or {}
        est = evidence.get("cold_bytes")
        groups = BatchGroups(len(queries), self.store.cache_limit, float(est) if isinstance(est, (int, float)) else None)
        return GroupedBatch(queries, self.store, groups)

    def _batch_result(self, batch: "GroupedBatch", before: dict[str, int], t0: float) -> dict[str, Any]:
        metric = self.index.metric
        results = [[{"id": h.id, "score": float(kernels.to_score(h.distance, metric)), "metadata": dict(h.metadata)}
                    for h in hits or ()] for hits in batch.hits]
        d = self.store.diff(before)
        self.searches += len(results)
        return {"results": results, "stats": {
            "queries": len(results), "bytesFetched": d["bytes_fetched"], "chunksFetched": d["chunks_fetched"],
            "cacheHits": d["cache_hits"], "rounds": batch.rounds, "groups": batch.groups.count,
            "ms": round((time.perf_counter() - t0) * 1000, 3),
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
        batch = self._grouped(queries)
        for part in batch.parts():
            batch.add(run_batch_sync(self.index, part, self.store, self.reader, self._kinds))
        return self._batch_result(batch, before, t0)

    async def search_batch_async(self, vectors: Any, k: int = 10, filter: Any = None,
                                 params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """As :meth:`search_batch_with_stats`, with awaited (parallel) fetches."""
        t0 = time.perf_counter()
        queries = self.prepare_many(vectors, k, filter, params)
        before = self.store.snapshot()
        batch = self._grouped(queries)
        for part in batch.parts():
            batch.add(await run_batch(self.index, part, self.store, self.reader, self._kinds))
        return self._batch_result(batch, before, t0)

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

    def _get_steps(self, id: Any):
        """Plan-fetch rounds for one record (a generator of CID lists; returns the record).

        With a keyword index the id's document chunk is found from the ids in its head: one
        chunk. Otherwise a lazy IVF index does not know which list holds an id: its list chunks
        are fetched, in parallel batches, until the id is found."""
        rounds = self._get_rounds(id)  # validates first
        first = next(rounds)
        if self.keyword is not None and id in self._kw_edits:  # edited in this session, not committed yet
            edit = self._kw_edits[id]
            if edit is None:
                raise UnknownIdError(f"unknown id {id!r}")
            return {"id": id, "metadata": dict(edit[1]), "timestamp": float(edit[2])}
        if self.keyword is not None:
            need = self.keyword.get_plan(id)
            if need:
                yield ("docs", need)
            meta, ts = self.keyword.get(id)
            return {"id": id, "metadata": dict(meta), "timestamp": ts}
        for batch in [first, *rounds]:
            if batch:
                yield batch
            rec = self._record(id, batch)
            if rec is not None:
                return rec
        raise UnknownIdError(f"unknown id {id!r}")

    def get(self, id: str) -> dict[str, Any]:
        """``{"id", "metadata", "timestamp"}`` of one record; UnknownIdError if the index lacks it."""
        return _run(self._get_steps(id), self.store.prefetch_sync)

    async def get_async(self, id: str) -> dict[str, Any]:
        """As :meth:`get`, with awaited fetches."""
        return await _run_async(self._get_steps(id), self.store.prefetch)

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
        self._check_open()
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
            except NoKnownTokensError as exc:
                if mode == "vector":
                    raise
                vec_only_failed = exc  # hybrid: no known token, the keyword side answers alone
            else:
                branches.append(_counted(self._vector_steps(tokens, n, flt, params), counts))
        results = yield from _together(branches)
        kw_hits = results[0] if mode != "vector" else []
        if self._kw_edits:  # uncommitted edits: deleted ids leave the keyword side, edited ones show their new metadata
            kw_hits = [(i, sc, ex, m if i not in self._kw_edits else dict(self._kw_edits[i][1]))
                       for i, sc, ex, m in kw_hits if self._kw_edits.get(i, ()) is not None]
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

    def _vector_steps(self, tokens: list[int], k: int, flt: Any, params: Any):
        """Embed (token rows planned and fetched), then the vector index's rounds of plan -> fetch -> search."""
        need = self.model.plan(tokens)
        if need:
            yield ("model", need)
        vec = kernels.as_vector(self.model.embed_tokens(tokens), self.index.dim)
        query = Query(np.ascontiguousarray(kernels.prepare(vec[None, :], self.index.metric)[0], dtype=np.float32),
                      k, flt, params)
        run = QueryRun(self.index, query, self.reader, self._kinds)
        while True:
            need = run.next_fetch()
            need = [c for c in need if c not in self.store]
            if need:
                yield ("index", need)
            hits = run.search()
            if hits is not None:
                metric = self.index.metric
                return [(h.id, float(kernels.to_score(h.distance, metric)), dict(h.metadata)) for h in hits]

    def _prepare_text(self, text: Any, k: Any, filter: Any, mode: Any, params: Mapping[str, Any] | None):
        from .keyword import tokenize

        if not isinstance(text, str):
            raise InvalidArgumentError(f"the query must be text, got {type(text).__name__}")
        if mode not in TEXT_MODES:
            raise InvalidArgumentError(f"mode must be one of {', '.join(TEXT_MODES)}, got {mode!r}")
        if not tokenize(text[:MAX_QUERY_CHARS]):
            raise EmptyQueryError("the query has no words (letters or digits)")
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
        params = build_params(self.index.search_params, params, self.index.kind)  # the vector side's
        return text, k, flt, mode, params

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
        for _ in range(4):  # as _writable: IVF with separate refine data needs two rounds
            need = plan_all() if plan_all is not None else []
            if not need:
                break
            await self.store.prefetch(need)
            self.index.load_all({c: self.reader.get(c, self._kinds.get(c)) for c in need})
        return self.index

    def upsert(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace records; one without a timestamp is stamped with the time of this call.

        With a keyword index each record needs its text (in the index's text field)."""
        records = list(records)
        ids, mat, metas, ts = records_to_columns(records)
        texts = self._record_texts(records)
        self._writable().add(ids, mat, metas, ts)
        self._note_upserts(ids, texts, metas, ts)
        return len(ids)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete records by id; ``ids`` is a list (a bare string would be read as its characters)."""
        ids = _id_list(ids)
        n = self._writable().delete(ids)
        self._note_deletes(ids)
        return n

    async def upsert_async(self, records: Iterable[Mapping[str, Any]]) -> int:
        records = list(records)
        ids, mat, metas, ts = records_to_columns(records)  # validated before anything is fetched
        texts = self._record_texts(records)
        (await self._writable_async()).add(ids, mat, metas, ts)
        self._note_upserts(ids, texts, metas, ts)
        return len(ids)

    async def delete_async(self, ids: Iterable[str]) -> int:
        ids = _id_list(ids)
        n = (await self._writable_async()).delete(ids)
        self._note_deletes(ids)
        return n

    def _record_texts(self, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """With a keyword index, each record's text (InvalidArgumentError if one lacks it); else []."""
        return [record_text(r, self.keyword.field, n) for n, r in enumerate(records)] if self.keyword else []

    def _note_upserts(self, ids: Sequence[str], texts: Sequence[str], metas: Sequence[Any], ts: Any) -> None:
        """Count an applied upsert; with a keyword index remember each record's text for the commit."""
        for n, i in enumerate(ids if self.keyword else ()):
            self._kw_edits[i] = (texts[n], metas[n], float(ts[n]))
        self.edits += 1

    def _note_deletes(self, ids: Sequence[str]) -> None:
        for i in ids if self.keyword else ():
            self._kw_edits[i] = None
        self.edits += 1

    def _keyword_snapshot(self, edits: Mapping[str, Any]) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
        """(manifest extra, edited keyword index or None, parent chunk entries it may keep).

        Edited: a copy of the keyword index with ``edits`` applied (:meth:`KeywordIndex.edited`),
        saved with the snapshot; it writes only the chunks the edits change and keeps the parent's
        other chunks (the entries returned). Unedited: the new manifest names the parent's keyword
        chunks, nothing is read or written."""
        extra = dict(self.manifest.get("extra") or {})
        carry = [dict(c) for c in self.manifest["chunks"] if str(c.get("kind")).startswith("kw_")] \
            if self.keyword is not None else []
        if self.keyword is not None and edits:
            extra.pop("keyword", None)
            return extra, self.keyword.edited(edits), carry
        return extra, None, carry

    def _committed_keyword(self, kw_new: Any, edits: Mapping[str, Any]) -> None:
        """After a commit: the rebuilt index is current; keyword edits made since the snapshot stay pending."""
        if kw_new is not None:
            self.keyword = kw_new
        for i, doc in edits.items():
            if i in self._kw_edits and self._kw_edits[i] is doc:
                del self._kw_edits[i]

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
        kw_edits = dict(self._kw_edits)
        extra, kw_new, carry = self._keyword_snapshot(kw_edits)
        cid, writer = save(self._writable(), self.store, parent=self.cid, known=known, extra=extra,
                           keyword=kw_new, carry=carry)
        self.cid, self.manifest = cid, read_manifest(self.store, cid)
        self._kinds = _chunk_kinds(self.manifest)
        self._committed_keyword(kw_new, kw_edits)
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
        kw_edits = dict(self._kw_edits)  # like ``edits`` below: later keyword edits stay pending
        extra, kw_new, carry = self._keyword_snapshot(kw_edits)
        if kw_new is not None:
            need = kw_new.plan_save()  # the chunks the edited keyword index reads: fetched in parallel first
            if need:
                await self.store.prefetch(need)
        writer = layout.StagingWriter([c["cid"] for c in self.manifest["chunks"]])
        manifest = _encode_snapshot(index, writer, self.cid, extra, kw_new, carry)
        edits = self.edits  # edits made while the uploads run are not in this snapshot: they stay pending
        before = self.store.snapshot()
        await self.store.put_many(list(writer.staged.values()), progress=progress)
        cid = (await self.store.put_many([manifest]))[0]
        done = self.store.diff(before)
        parent = self.cid
        self.cid, self.manifest = cid, layout.decode_manifest(manifest)
        self._kinds = _chunk_kinds(self.manifest)
        self._committed_keyword(kw_new, kw_edits)
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
        if not self.closed:
            self.store.release(self._kept)
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
