"""Bulk builds of IVF (and hybrid) indexes from a stream of records, block by block.

Why a separate path from :func:`s5vec.api.publish`: a million vectors do not fit the
"everything in one list, then ``index.add``" shape. Here

1. **train on a sample** - :func:`sample_vectors` draws ``sample_size`` rows with a seeded RNG
   (random rows of a ``.npy``; a seeded reservoir over any other stream) and the index trains
   its own centroids and codec on them (``IVFIndex._fit``: mini-batch k-means, PQ/SQ8);
2. **assign and encode block by block** - :func:`encode_block` takes one block of
   :data:`~s5vec.sources.DEFAULT_BLOCK` rows, assigns it to lists (blocked GEMM, float32) and
   encodes it, and returns it cut into *units* (ranges of list chunks), rows sorted by list;
   only the block being read is float32 input, the rest is held once, as lists;
3. **upload unit by unit** - :func:`upload_unit` concatenates one unit's pieces (block order,
   so a list's rows keep the input order), writes each list chunk exactly as
   ``IVFIndex.save`` does, and uploads it; units upload in parallel (threads here, Dask
   workers in :mod:`s5vec.build_dask`);
4. **assemble** - :func:`assemble` writes the centroids and summaries chunks through the
   index's own ``save`` and puts the manifest last: a failed build publishes nothing.

Without parameters the build picks them as :func:`s5vec.api.publish` does
(:func:`s5vec.index.ivf_tune.choose` on the training sample, with ``n_total`` = the input's
size), says what it picked (``explain``) and records it in the manifest (``extra.auto``). IVF-PQ
with separate refine data keeps only the refine *codes* per row until its unit is uploaded
(``Piece.refine``; a PQ refine is ``refine_m`` bytes a row, not 4 x dim), and writes the
``ivf_refine`` chunks through ``IVFIndex.write_list_chunk``; they are named by the list chunks,
not by the manifest's ``chunks`` (their count and bytes are under ``extra.unlisted``).

Every step is a pure function of (template, block), so the single-process build and the Dask
build produce the same chunks and, given the same ``created`` time, the same manifest CID.
A record without a timestamp gets ``now`` (the build's start, or the value passed).
"""
from __future__ import annotations

import copy
import logging
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import kernels, layout
from .errors import InvalidArgumentError, S5VecError
from .filters import summarize
from .index.ivf import IVFIndex
from .index.ivf_lists import IVFList
from .index.ivf_store import CENTROIDS_KIND, REFINE_KIND
from .sources import DEFAULT_BLOCK, Block, Source

BUILD_KINDS = ("ivf", "hybrid")
UNITS = 64  # upload units per build: enough to spread over workers, few enough to schedule cheaply


def auto_nlist(n: int) -> int:
    """Lists for ``n`` records when params are given without ``nlist``: the power of two nearest
    sqrt(n), 16..4096. (With no params at all the build picks everything: :func:`choose_params`.)"""
    return int(min(4096, max(16, 2 ** round(math.log2(max(math.sqrt(max(n, 1)), 1.0))))))


def default_sample_size(nlist: int, n: int | None) -> int:
    """Training rows: 64 per list (k-means needs tens per centroid), at least 20k, at most 256k."""
    s = min(256_000, max(20_000, 64 * nlist))
    return s if n is None else min(s, n)


# --------------------------------------------------------------------------- sampling


def sample_vectors(source: Source, size: int, seed: int, rows: int = DEFAULT_BLOCK) -> np.ndarray:
    """``size`` rows drawn uniformly without replacement, reproducibly from ``seed``.

    A seeded reservoir (Algorithm R, vectorised per block) over one pass of the stream, for
    every kind of source, so the same records give the same sample (and the same index) whether
    they come as ``.npy``, JSON lines or Parquet, in blocks of any size. Rows come back in input order.
    """
    return sample_rows(source, size, seed, rows)[0]


def sample_rows(source: Source, size: int, seed: int, rows: int = DEFAULT_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sample_vectors` and the input row number of every sampled row."""
    rng = np.random.default_rng([seed, 0x5A3])
    res = np.empty((size, source.dim), np.float32)
    where = np.empty(size, np.int64)  # input row number of each reservoir slot
    seen = 0
    for block in source.blocks(rows):
        x = block.vectors
        n = x.shape[0]
        fill = min(max(size - seen, 0), n)
        if fill:
            res[seen : seen + fill] = x[:fill]
            where[seen : seen + fill] = np.arange(seen, seen + fill)
        if fill < n:
            pos = np.arange(seen + fill, seen + n)  # 0-based stream positions of the rest
            j = (rng.random(pos.shape[0]) * (pos + 1)).astype(np.int64)
            keep = np.flatnonzero(j < size)
            # later rows overwrite earlier ones in the same slot, as the sequential algorithm does
            for r in keep:
                res[j[r]] = x[fill + r]
                where[j[r]] = pos[r]
        seen += n
    got = min(seen, size)
    order = np.argsort(where[:got], kind="stable")
    return np.ascontiguousarray(res[:got][order]), where[:got][order]


STATS_EVERY = 97  # every this-many-th record's metadata is encoded and its timestamp kept (record stats)


def neighbours_and_stats(source: Source, queries: np.ndarray, query_rows: np.ndarray, metric: str,
                         m: int, rows: int = DEFAULT_BLOCK) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """One pass over the input: the exact ``m`` nearest records of every query (raw vectors of
    sampled records, their own rows ``query_rows`` left out; what ``ivf_tune.choose`` checks its
    candidates on, at the collection's density) and the record sizes its byte model needs: the
    mean UTF-8 length of an id (every id), the mean CBOR size of a metadata map and a sample of
    the timestamps (every :data:`STATS_EVERY`-th record; NaN = stamped at build time)."""
    from .index import ivf_tune

    id_len = 0
    count = 0
    metas: list[int] = []
    stamps: list[float] = []

    def blocks():
        nonlocal id_len, count
        for block in source.blocks(rows):
            id_len += sum(len(i.encode("utf-8")) for i in block.ids)
            count += len(block.ids)
            off = (-block.start) % STATS_EVERY
            for r in range(off, len(block.ids), STATS_EVERY):
                try:
                    metas.append(len(layout.dumps(dict(block.metadata[r]))))
                except (TypeError, ValueError, RecursionError, S5VecError):
                    pass
                stamps.append(float(block.timestamps[r]))
            yield block.start, block.vectors

    q = kernels.prepare(np.ascontiguousarray(queries, dtype=np.float32), metric)
    d, _, v = ivf_tune.nearest_records(q, blocks(), m, metric, exclude=np.asarray(query_rows, np.int64))
    stats = {"id_bytes": id_len / max(count, 1), "meta_bytes": float(np.mean(metas)) if metas else 1.0,
             "ts_sample": np.asarray(stamps, np.float64)}
    return (d, v), stats


# --------------------------------------------------------------------------- training


def _ivf_params(params: Mapping[str, Any], n: int | None) -> dict[str, Any]:
    p = dict(params)
    if "nlist" not in p:
        p["nlist"] = auto_nlist(n or 0)
    return p


def make_template(kind: str, dim: int, metric: str, params: Mapping[str, Any] | None, n: int | None) -> Any:
    """The empty index a build fills: an IVFIndex, or a HybridIndex whose IVF part gets every record."""
    if kind not in BUILD_KINDS:
        raise InvalidArgumentError(f"a bulk build makes an ivf or hybrid index, not {kind!r}")
    from .api import new_index

    params = dict(params or {})
    if kind == "ivf":
        return new_index("ivf", dim, metric, _ivf_params(params, n))
    ivf = _ivf_params(params.pop("ivf", {}) or {}, n)
    if "nlist" in params:
        ivf["nlist"] = params.pop("nlist")
    return new_index("hybrid", dim, metric, {**params, "ivf": ivf})


def ivf_of(index: Any) -> IVFIndex:
    return index.historical if index.kind == "hybrid" else index


def train(index: Any, sample: np.ndarray, centroids: np.ndarray | None = None) -> None:
    """Train the (IVF part of the) empty ``index`` on raw sample vectors, as ``add`` would prepare them.

    ``centroids``: the ones ``ivf_tune.choose`` already clustered these rows into (same seed and
    iterations; ``Choice.centroids``), used instead of clustering again."""
    ivf = ivf_of(index)
    x = kernels.prepare(kernels.as_matrix(sample, ivf.dim), ivf.metric)
    if ivf.vectors_dtype == "float16":
        x = x.astype(np.float16).astype(np.float32)
    if x.shape[0] < ivf.nlist:
        raise InvalidArgumentError(f"training needs at least nlist={ivf.nlist} vectors, the input has {x.shape[0]}")
    ivf._fit(x, centroids=centroids)


# --------------------------------------------------------------------------- encoding


@dataclass
class Piece:
    """Rows of one block that fall in one upload unit, sorted by list (stable). With separate
    refine data ``refine`` holds what the ``ivf_refine`` chunks store (``vectors`` is None)."""

    labels: np.ndarray
    ids: list[str]
    codes: np.ndarray | None
    vectors: np.ndarray | None
    metadata: list[dict[str, Any]]
    timestamps: np.ndarray
    refine: np.ndarray | None = None


def unit_lists(ivf: IVFIndex, units: int = UNITS) -> list[range]:
    """The list numbers of every upload unit: whole chunks, ``units`` units at most."""
    g = ivf.lists_per_chunk
    per = max(1, -(-ivf._nchunks // units)) * g
    return [range(s, min(s + per, ivf.nlist)) for s in range(0, ivf.nlist, per)]


def stamp_block(block: Block, now: float) -> Block:
    ts = block.timestamps
    if np.isnan(ts).any():
        ts = np.where(np.isnan(ts), now, ts)
    return Block(block.start, block.ids, block.vectors, block.metadata, ts)


def encode_block(ivf: IVFIndex, block: Block, units: Sequence[range]) -> list[Piece | None]:
    """Assign and encode one block (as ``IVFIndex.add`` would); one :class:`Piece` per unit (None if empty)."""
    x = kernels.prepare(block.vectors, ivf.metric)
    if ivf.vectors_dtype == "float16":
        x = x.astype(np.float16).astype(np.float32)
    labels = ivf.assign(x)
    codes = None
    if not ivf._shared:
        if ivf.residual:
            enc_in = ivf.centroids[labels]
            np.subtract(x, enc_in, out=enc_in)  # x - centroid, without a second temporary
        else:
            enc_in = x
        codes = ivf.codec.encode(enc_in)
        del enc_in
    refine = None
    if ivf.refiner is not None and codes is not None:
        # what the refine chunks will hold, instead of the float32 rows (IVFIndex._insert_trained
        # keeps refiner.roundtrip(x): upload_unit decodes these codes to exactly that)
        refine = ivf.refiner.encode(x, ivf.centroids[labels] if ivf.residual else None, codes)
    order = np.argsort(labels, kind="stable")
    sl = labels[order]
    if ivf.store_full and ivf.vectors_dtype == "float16":
        x = x.astype(np.float16)  # held as published (exact: x was rounded to float16 above)
    keep_x = ivf.store_full and refine is None
    out: list[Piece | None] = []
    for u in units:
        a, b = np.searchsorted(sl, [u.start, u.stop])
        if a == b:
            out.append(None)
            continue
        rows = order[a:b]
        out.append(Piece(
            sl[a:b], [block.ids[i] for i in rows], None if codes is None else codes[rows],
            x[rows] if keep_x else None, [block.metadata[i] for i in rows], block.timestamps[rows],
            None if refine is None else refine[rows]))
    return out


# --------------------------------------------------------------------------- uploading


@dataclass
class UnitResult:
    """What one upload unit wrote: (chunk number, CID, kind, size) per chunk, counts, summaries."""

    lists: range
    chunks: list[tuple[int, str, str, int]]
    counts: dict[int, int]
    summaries: dict[int, dict[str, Any]]
    uploaded: int = 0
    bytes: int = 0
    #: chunks named by the list chunks, not the manifest (``ivf_refine``): kind -> [count, bytes]
    unlisted: dict[str, list[int]] = field(default_factory=dict)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def upload_unit(ivf: IVFIndex, lists: range, pieces: Iterable[Piece | None], store: Any) -> UnitResult:
    """Write the list chunks of one unit from its pieces (in block order) and upload them."""
    pieces = [p for p in pieces if p is not None]
    t = copy.copy(ivf)  # a private view: its own list slots
    t._lists = [None] * ivf.nlist
    shared = ivf._shared
    if pieces:
        labels = _concat([p.labels for p in pieces])
        order = np.argsort(labels, kind="stable")  # pieces are in block order: input order per list
        ids = [i for p in pieces for i in p.ids]
        metas = [m for p in pieces for m in p.metadata]
        ts = _concat([p.timestamps for p in pieces])[order]
        separate = pieces[0].refine is not None
        vecs = _concat([p.vectors for p in pieces])[order] if ivf.store_full and not separate else None
        refine = _concat([p.refine for p in pieces])[order] if separate else None
        codes = None if shared else _concat([p.codes for p in pieces])[order]
        sl = labels[order]
    else:
        sl = np.empty(0, np.int64)
    bounds = np.searchsorted(sl, np.arange(lists.start, lists.stop + 1))
    for j, l in enumerate(lists):
        a, b = int(bounds[j]), int(bounds[j + 1])
        if a == b:
            t._lists[l] = ivf._new_list()
            continue
        rows = order[a:b]
        v = vecs[a:b] if vecs is not None else None
        if refine is not None:  # the re-rank rows the index keeps: refiner.roundtrip(x)
            cents = np.broadcast_to(ivf.centroids[l], (b - a, ivf.dim)) if ivf.residual else None
            v = ivf.refiner.decode(refine[a:b], cents, codes[a:b])
        t._lists[l] = IVFList([ids[i] for i in rows], v if shared else codes[a:b], v,
                              [metas[i] for i in rows], ts[a:b])
    writer = layout.StoreWriter(store)
    g = ivf.lists_per_chunk
    res = UnitResult(lists, [], {}, {})
    for c in range(lists.start // g, -(-lists.stop // g)):
        cid = t.write_list_chunk(writer, c)
        entry = writer.chunks[-1]
        res.chunks.append((c, cid, entry["kind"], entry["size"]))
        for l in range(c * g, min((c + 1) * g, ivf.nlist)):
            t._lists[l].vectors = None  # written: free the decoded re-rank rows early
    for e in writer.chunks:
        if e["kind"] == REFINE_KIND:
            u = res.unlisted.setdefault(REFINE_KIND, [0, 0])
            u[0] += 1
            u[1] += int(e["size"])
    for l in lists:
        lst = t._lists[l]
        res.counts[l] = len(lst)
        res.summaries[l] = summarize(lst.metadata, lst.timestamps.tolist())
    res.uploaded, res.bytes = writer.uploaded, sum(e["size"] for e in writer.chunks)
    return res


class _AssemblyWriter(layout.StoreWriter):
    """Lists the prebuilt list chunks right after the centroids chunk, where ``IVFIndex.save`` puts them."""

    def __init__(self, store: Any, list_entries: list[dict[str, Any]]) -> None:
        super().__init__(store)
        self._entries = list_entries

    def put(self, kind: str, body: Mapping[str, Any]) -> str:
        cid = super().put(kind, body)
        if kind == CENTROIDS_KIND:
            self.chunks.extend(self._entries)
        return cid


def assemble(index: Any, results: Sequence[UnitResult], store: Any, *, created: float | None = None,
             extra: Mapping[str, Any] | None = None) -> str:
    """Write the centroids/summaries chunks and the manifest (last); returns the manifest CID."""
    ivf = ivf_of(index)
    cids: list[str | None] = [None] * ivf._nchunks
    entries: dict[int, dict[str, Any]] = {}
    counts = np.zeros(ivf.nlist, np.int64)
    summaries: list[dict[str, Any] | None] = [None] * ivf.nlist
    for r in results:
        for c, cid, kind, size in r.chunks:
            cids[c] = cid
            entries[c] = {"cid": cid, "kind": kind, "size": size}
        for l, n in r.counts.items():
            counts[l] = n
            summaries[l] = r.summaries[l]
    if any(c is None for c in cids):
        raise AssertionError("a list chunk is missing from the build results")
    unlisted: dict[str, dict[str, int]] = {}
    for r in results:
        for kind, (count, size) in r.unlisted.items():
            u = unlisted.setdefault(kind, {"count": 0, "bytes": 0})
            u["count"] += count
            u["bytes"] += size
    extra = {k: v for k, v in (extra or {}).items() if k != "unlisted"}
    if unlisted:  # as api.save records chunks the manifest does not list
        extra["unlisted"] = unlisted
    ivf._lists = [None] * ivf.nlist
    ivf._chunk_cids = cids
    ivf._counts = counts
    ivf._summaries = summaries
    ivf._lazy, ivf._loc = True, None
    writer = _AssemblyWriter(store, [entries[c] for c in range(ivf._nchunks)])
    desc = index.save(writer)
    manifest = layout.encode_manifest(
        kind=index.kind, dim=index.dim, metric=index.metric, count=len(index), index=desc,
        chunks=writer.chunks, spec=index.spec(), extra=extra or None, created=created)
    return store.put(manifest)


# --------------------------------------------------------------------------- the whole build


@dataclass
class BuildReport:
    """``chunks``/``bytes``: every chunk the units wrote (list + refine chunks); ``choice``: the
    parameters picked when none were given (``ivf_tune.Choice``), else None; ``spilled``: bytes
    the encoded rows took on disk between encoding and upload (0 on Dask)."""

    cid: str
    count: int
    chunks: int
    bytes: int
    seconds: dict[str, float] = field(default_factory=dict)
    spec: str = ""
    choice: Any = None
    spilled: int = 0


def _bar(total: int | None, desc: str, unit: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, unit_scale=True, disable=None)


class DuplicateCheck:
    """Rejects an id seen before in the stream (the build is an insert of distinct records).

    Keeps 8 bytes a record (each id's ``hash()``; equal strings hash equally within a process),
    not the ids: a set of 10M ids was ~1 GB of the build's heap. Repeats within a block fail at
    once; across blocks :meth:`finish` looks for repeated hashes after the last block and reads
    the ids of those rows again to name the duplicate, so two ids that merely collide pass."""

    def __init__(self) -> None:
        self._hashes: list[np.ndarray] = []

    def __call__(self, block: Block) -> None:
        if len(set(block.ids)) != len(block.ids):
            local: set[str] = set()
            dup = next(i for i in block.ids if i in local or local.add(i))  # type: ignore[func-returns-value]
            raise InvalidArgumentError(f"duplicate id {dup!r} in input rows {block.start}..")
        self._hashes.append(_id_hashes(block.ids))

    def finish(self, source: Source, rows: int) -> None:
        """Raise InvalidArgumentError naming the first id that repeats an earlier one, if any
        (reads ``source`` again only when two rows share a hash)."""
        h = np.sort(np.concatenate(self._hashes)) if self._hashes else np.empty(0, np.int64)
        self._hashes = []
        again = np.unique(h[1:][h[1:] == h[:-1]])
        if again.size == 0:
            return
        first: dict[str, int] = {}
        for block in source.blocks(rows):
            for j in np.flatnonzero(np.isin(_id_hashes(block.ids), again)).tolist():
                i, row = block.ids[j], block.start + j
                if i in first:
                    raise InvalidArgumentError(f"duplicate id {i!r} (input row {row} repeats row {first[i]})")
                first[i] = row


def _id_hashes(ids: Sequence[str]) -> np.ndarray:
    return np.fromiter(map(hash, ids), np.int64, len(ids))


def record_sizes(source: Source, rows: int = 512) -> dict[str, float]:
    """Mean UTF-8 length of an id and CBOR size of a metadata map over the first ``rows`` records
    (what :func:`s5vec.index.ivf_tune.bytes_model` counts per record besides its codes; a build
    uses :func:`neighbours_and_stats`, over every record, instead)."""
    ids: list[str] = []
    metas: list[Any] = []
    for block in source.blocks(rows):
        ids, metas = block.ids[:rows], block.metadata[:rows]
        break
    if not ids:
        return {"id_bytes": 8.0, "meta_bytes": 1.0}
    sizes = []
    for m in metas:
        try:  # the index validates metadata when it stores it; here a bad map just does not count
            sizes.append(len(layout.dumps(dict(m or {}))))
        except (TypeError, ValueError, RecursionError, S5VecError):
            pass
    if not sizes:
        sizes = [1]
    return {"id_bytes": float(np.mean([len(i.encode("utf-8")) for i in ids])), "meta_bytes": float(np.mean(sizes))}


def choose_params(kind: str, sample: np.ndarray, metric: str, n_total: int, seed: int,
                  sizes: Mapping[str, Any] | None = None, **check: Any) -> Any:
    """The size-aware defaults of :func:`s5vec.api.publish` for a bulk build: ``ivf_tune.choose``
    on the training sample with ``n_total`` records. Returns an ``ivf_tune.Choice`` whose
    ``params`` fit ``kind`` (a hybrid's IVF part holds every bulk-loaded record) and whose
    ``record`` goes to the manifest (``extra.auto``; without the tuning time, so a build with a
    fixed ``created`` stays reproducible)."""
    from .index import ivf_tune

    c = ivf_tune.choose(sample, metric, n_total=n_total, seed=seed, **dict(sizes or {}), **check)
    c.record.get("evidence", {}).pop("seconds", None)
    if kind == "ivf":
        return c
    params = {"ivf": dict(c.params), "hnsw": {"vectors_dtype": "float16"}}
    rec = {"kind": "hybrid", "n": c.record["n"], "dim": c.record["dim"], "metric": metric,
           "picked": {"hnsw.vectors_dtype": "float16", **{f"ivf.{k}": v for k, v in c.params.items()}},
           "why": "bulk load: every record goes to the IVF part", "ivf": c.record}
    if "evidence" in c.record:
        rec["evidence"] = c.record["evidence"]
    return ivf_tune.Choice(params, rec, centroids=c.centroids, train_pos=c.train_pos, timing=c.timing)


def choose_for_source(source: Source, *, kind: str, metric: str, sample_size: int | None, seed: int,
                      timings: dict[str, float] | None = None) -> tuple[Any, np.ndarray]:
    """(the Choice for ``source``, the training sample it was made on): a pass to sample (64 rows
    per list of ``ivf_tune.pick_nlist(N)``), a second pass for the check's neighbours at the
    collection's density and the record sizes (:func:`neighbours_and_stats`), then
    :func:`choose_params` (which clusters the sample as the template would: its centroids are
    reusable, :func:`reusable_centroids`). ``timings`` gets the seconds of each step."""
    from .index import ivf_tune

    t = time.perf_counter()
    size = sample_size or default_sample_size(ivf_tune.pick_nlist(source.count or 0), source.count)
    sample, where = sample_rows(source, size, seed)  # one pass: a JSON-lines source learns its count
    n = int(source.count if source.count is not None else sample.shape[0])
    t1 = time.perf_counter()
    check: dict[str, Any] = {"kmeans_iters": IVFIndex(source.dim, metric).kmeans_iters}
    if n >= ivf_tune.SMALL:
        qpos = ivf_tune.check_queries(sample.shape[0], seed)
        nb, stats = neighbours_and_stats(source, sample[qpos], where[qpos], metric,
                                         min(ivf_tune.NEIGHBOURS, max(1, n - 1)))
        check.update(neighbours=nb, query_rows=qpos)
    else:
        stats = record_sizes(source)
    t2 = time.perf_counter()
    choice = choose_params(kind, sample, metric, n, seed, stats, **check)
    if timings is not None:
        timings.update(sample=t1 - t, neighbours=t2 - t1, choose=time.perf_counter() - t2)
    return choice, sample


def reusable_centroids(index: Any, choice: Any, seed: int) -> np.ndarray | None:
    """The choice's centroids when the template would cluster the same rows the same way (same
    seed, float32 rows, as many lists, all of the sample: ``train`` trains on the whole sample)."""
    ivf = ivf_of(index)
    c = getattr(choice, "centroids", None)
    pos = getattr(choice, "train_pos", None)
    if c is None or ivf.vectors_dtype != "float32" or ivf.seed != seed or c.shape != (ivf.nlist, ivf.dim):
        return None
    if pos is None or (len(pos) and int(pos[-1]) != len(pos) - 1):  # sorted: all rows iff the last is n-1
        return None
    return c


def prepare_build(source: Source, *, kind: str, metric: str, params: Mapping[str, Any] | None,
                  sample_size: int | None, seed: int) -> tuple[Any, np.ndarray]:
    """The trained, empty template index and the sample it was trained on (see :func:`prepare`)."""
    index, sample, _ = prepare(source, kind=kind, metric=metric, params=params, sample_size=sample_size, seed=seed)
    return index, sample


def prepare(source: Source, *, kind: str, metric: str, params: Mapping[str, Any] | None,
            sample_size: int | None, seed: int, explain: Callable[[Any], Any] | None = None
            ) -> tuple[Any, np.ndarray, Any]:
    """(trained empty template index, its training sample, the Choice picked or None).

    Without ``params`` the sample is drawn first (64 rows per list of ``ivf_tune.pick_nlist(N)``)
    and the parameters are picked on it (:func:`choose_params`); ``explain(choice)`` hears of
    them before the (long) training starts."""
    kernels.check_metric(metric)
    if kind not in BUILD_KINDS:
        raise InvalidArgumentError(f"a bulk build makes an ivf or hybrid index, not {kind!r}")
    choice = None
    centroids = None
    if not params:
        choice, sample = choose_for_source(source, kind=kind, metric=metric, sample_size=sample_size, seed=seed)
        logging.getLogger("s5vec").info("%s", choice.line())
        if explain is not None:
            explain(choice)
        n = choice.record["n"]
        index = make_template(kind, source.dim, metric, choice.params, n)
        centroids = reusable_centroids(index, choice, seed)
    else:
        index = make_template(kind, source.dim, metric, params, source.count)
        size = sample_size or default_sample_size(ivf_of(index).nlist, source.count)
        sample = sample_vectors(source, size, seed)
    train(index, sample, centroids)
    return index, sample, choice


def build(source: Source, store: Any, *, kind: str = "ivf", metric: str = "cosine",
          params: Mapping[str, Any] | None = None, sample_size: int | None = None, seed: int = 0,
          now: float | None = None, created: float | None = None, rows: int = DEFAULT_BLOCK,
          threads: int = 4, progress: bool = False, dask: Any = None, portals: Sequence[str] | None = None,
          on_block: Callable[[int], Any] | None = None, connect_timeout: float = 10.0,
          auth_token: str | None = None, explain: Callable[[Any], Any] | None = None,
          extra: Mapping[str, Any] | None = None, spill_dir: str | None = None) -> BuildReport:
    """Build and publish an index of ``kind`` over ``source`` block by block; returns the report.

    Without ``params`` they are picked for the input's size and data (:func:`choose_params`,
    as ``api.publish`` does): ``explain(choice)`` is called with what was picked (the CLI
    prints ``choice.line()``) and the manifest records it under ``extra.auto``. ``extra`` goes
    into the manifest as is.

    ``dask``: None (this process; ``threads`` upload in parallel), ``"local"`` (a LocalCluster)
    or a scheduler address / ``distributed.Client``: then workers encode and upload and
    ``portals`` (their URLs) is required. ``sample_size`` rows (default
    :func:`default_sample_size`) drawn with ``seed`` train the index. ``spill_dir``: where this
    process keeps the encoded rows until their upload (a private temporary directory under it;
    default: the system's, ``TMPDIR``), ~160 B a record with the 10M defaults.
    """
    t0 = time.perf_counter()
    now = time.time() if now is None else float(now)
    index, _, choice = prepare(source, kind=kind, metric=metric, params=params, sample_size=sample_size, seed=seed,
                               explain=explain)
    extra = dict(extra or {})
    if choice is not None:
        extra["auto"] = choice.record
    t1 = time.perf_counter()
    spilled = 0
    if dask is not None:
        from .build_dask import run_dask

        results, timings = run_dask(index, source, dask, portals, rows=rows, now=now, progress=progress,
                                    on_block=on_block, connect_timeout=connect_timeout, auth_token=auth_token)
    else:
        results, timings, spilled = _run_local(index, source, store, rows=rows, now=now, threads=threads,
                                               progress=progress, on_block=on_block, spill_dir=spill_dir)
    t2 = time.perf_counter()
    cid = assemble(index, results, store, created=created, extra=extra)
    seconds = {"train": t1 - t0, **timings, "assemble": time.perf_counter() - t2}
    seconds["total"] = time.perf_counter() - t0
    chunks = sum(len(r.chunks) + sum(u[0] for u in r.unlisted.values()) for r in results)
    return BuildReport(cid, len(index), chunks, sum(r.bytes for r in results), seconds, index.spec(), choice,
                       spilled)


def _run_local(index: Any, source: Source, store: Any, *, rows: int, now: float, threads: int, progress: bool,
               on_block: Callable[[int], Any] | None, spill_dir: str | None = None
               ) -> tuple[list[UnitResult], dict[str, float], int]:
    """Encode every block, its pieces spilled to disk per unit (:class:`~s5vec.spill.PieceSpill`),
    then upload the units ``threads`` at a time, each read back from its file: memory is a block
    plus the units in flight, not the encoded collection. Returns (results, seconds, bytes spilled)."""
    from .spill import PieceSpill

    ivf = ivf_of(index)
    units = unit_lists(ivf)
    check = DuplicateCheck()
    with PieceSpill(len(units), spill_dir) as spill:
        bar = _bar(source.count, "encoding", "vec", progress)
        t0 = time.perf_counter()
        for b, block in enumerate(source.blocks(rows)):
            check(block)
            for u, p in enumerate(encode_block(ivf, stamp_block(block, now), units)):
                spill.add(u, p)
            if bar is not None:
                bar.update(len(block))
            if on_block is not None:
                on_block(b)
        if bar is not None:
            bar.close()
        check.finish(source, rows)
        t1 = time.perf_counter()
        bar = _bar(len(units), "uploading", "unit", progress)
        results: list[UnitResult] = [None] * len(units)  # type: ignore[list-item]

        def one(u: int) -> UnitResult:
            return upload_unit(ivf, units[u], spill.pieces(u), store)

        with ThreadPoolExecutor(max(1, threads), thread_name_prefix="s5upload") as ex:
            for u, r in zip(range(len(units)), ex.map(one, range(len(units)))):
                results[u] = r
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        spilled = spill.bytes
    return results, {"encode": t1 - t0, "upload": time.perf_counter() - t1}, spilled
