"""IVF index: k-means inverted lists, optionally scalar- (SQ8) or product-quantized (PQ).

Layout in memory
    ``nlist`` inverted lists; list ``l`` holds its records' ids, codes (float32 vectors for the
    flat codec, uint8 codes for sq8/pq), optionally the full float32 vectors (``store_full``,
    used to re-rank quantized candidates exactly), metadata dicts and timestamps (float64, NaN
    = none). An ``id -> (list, row)`` map is kept while the index is fully resident.

Small indexes
    Until the index is trained, records go to a *pending* buffer that is searched exactly.
    The first ``add`` that brings the number of records to ``train_min`` (default
    ``max(1000, 30 * nlist)``) trains the index on everything and moves the buffer into lists.
    ``train(vectors)`` trains explicitly (and redistributes any records already held).

Persistence
    ``save(writer)`` writes one ``"ivf_centroids"`` chunk (params, centroids, codec state) and
    one ``"ivf_list"`` chunk per group of ``lists_per_chunk`` lists (plus one ``"ivf_list"``
    chunk for the pending buffer of an untrained index). Chunk bodies depend only on content,
    so unchanged lists keep their CID and an incremental save re-uploads only changed lists.

Lazy loading
    ``IVFIndex.load(desc, reader)`` reads only the centroids chunk (and the pending buffer of
    an untrained index). A search fetches the chunks of the lists it probes through
    ``reader.get`` and keeps decoded lists in an LRU bounded by ``cache_bytes``;
    ``chunks_for`` names the chunks a search would fetch so the caller can prefetch them
    in parallel. A lazily loaded index is read-only: ``add``/``delete``/``train``/``retrain``
    raise :class:`InvalidArgumentError` until ``load_all()`` makes every list resident.
    On a lazy index ``__contains__``/``metadata``/``timestamp`` look in the last search's
    results and the cached lists first, then fetch the remaining lists one by one.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .. import kernels, layout
from .. import quantizers as qz
from ..errors import FormatError, InvalidArgumentError, UnknownIdError
from ..filters import Filter, fields_of, parse, summarize
from .base import ChunkReader, ChunkWriter
from .records import check_batch

CENTROIDS_KIND = "ivf_centroids"
SUMMARIES_KIND = "ivf_summaries"
LIST_KIND = "ivf_list"
DESC_VERSION = 1
_PENDING = -1
FILTER_DEPTH = 4  # a filtered search probes until its lists are expected to hold 4k matches
_ADD_BLOCK = 16_384


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


class _List:
    """One inverted list (or the pending buffer)."""

    __slots__ = ("ids", "codes", "vectors", "metadata", "timestamps", "_sq", "_rows")

    def __init__(
        self,
        ids: list[str],
        codes: np.ndarray | None,
        vectors: np.ndarray | None,
        metadata: list[dict[str, Any]],
        timestamps: np.ndarray,
    ) -> None:
        self.ids = ids
        self.codes = codes
        self.vectors = vectors
        self.metadata = metadata
        self.timestamps = timestamps
        self._sq: np.ndarray | None = None
        self._rows: dict[str, int] | None = None

    @classmethod
    def empty(cls, code_size: int, code_dtype: np.dtype | None, dim: int | None) -> "_List":
        codes = None if code_dtype is None else np.empty((0, code_size), dtype=code_dtype)
        vectors = None if dim is None else np.empty((0, dim), dtype=np.float32)
        return cls([], codes, vectors, [], np.empty(0, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sq(self) -> np.ndarray:
        """Squared norms of the full vectors (for L2 distances), computed once per version."""
        if self._sq is None:
            self._sq = kernels.sq_norms(self.vectors)
        return self._sq

    def row_of(self, id: str) -> int | None:
        if self._rows is None:
            self._rows = {i: r for r, i in enumerate(self.ids)}
        return self._rows.get(id)

    def nbytes(self) -> int:
        n = self.timestamps.nbytes + 64 * len(self.ids) + 96 * len(self.metadata)
        if self.codes is not None:
            n += self.codes.nbytes
        if self.vectors is not None and self.vectors is not self.codes:
            n += self.vectors.nbytes
        return n

    def append(
        self,
        ids: list[str],
        codes: np.ndarray | None,
        vectors: np.ndarray | None,
        metadata: list[dict[str, Any]],
        timestamps: np.ndarray,
        shared: bool,
    ) -> None:
        self.ids = self.ids + ids
        self.metadata = list(self.metadata) + metadata
        self.timestamps = np.concatenate((self.timestamps, timestamps))
        if self.vectors is not None and vectors is not None:
            self.vectors = np.concatenate((self.vectors, vectors))
        if shared:
            self.codes = self.vectors
        elif self.codes is not None and codes is not None:
            self.codes = np.concatenate((self.codes, codes))
        self._sq = None
        self._rows = None

    def remove_rows(self, rows: np.ndarray, shared: bool) -> None:
        keep = np.ones(len(self.ids), dtype=bool)
        keep[rows] = False
        self.ids = [i for i, k in zip(self.ids, keep) if k]
        self.metadata = [m for m, k in zip(self.metadata, keep) if k]
        self.timestamps = self.timestamps[keep]
        if self.vectors is not None:
            self.vectors = self.vectors[keep]
        if shared:
            self.codes = self.vectors
        elif self.codes is not None:
            self.codes = self.codes[keep]
        self._sq = None
        self._rows = None

    def body(self, number: int, shared: bool, vectors_dtype: str = "float32") -> dict[str, Any]:
        out: dict[str, Any] = {
            "list": number,
            "ids": layout.pack_strings(self.ids),
            "metadata": layout.pack_records(self.metadata),
            "timestamps": np.ascontiguousarray(self.timestamps, dtype=np.float64),
        }
        if self.vectors is not None:
            out["vectors"] = np.ascontiguousarray(self.vectors, dtype=np.dtype(vectors_dtype))
        if not shared and self.codes is not None:
            out["codes"] = np.ascontiguousarray(self.codes)
        return out

    @classmethod
    def from_body(
        cls, body: Mapping[str, Any], dim: int, code_size: int, code_dtype: np.dtype | None, shared: bool
    ) -> "_List":
        try:
            ids = layout.unpack_strings(body["ids"])
            n = len(ids)
            metadata = layout.unpack_records(body["metadata"], n)
            ts = np.asarray(body["timestamps"], dtype=np.float64).reshape(n)
            vectors = body.get("vectors")
            if vectors is not None:
                vectors = np.asarray(vectors, dtype=np.float32).reshape(n, dim)
            if shared:
                codes = vectors
                if vectors is None:
                    raise FormatError("flat IVF list without vectors")
            elif code_dtype is None:
                codes = None
            else:
                codes = np.asarray(body["codes"], dtype=code_dtype).reshape(n, code_size)
            if len(metadata) != n:
                raise FormatError("IVF list has mismatched metadata")
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed IVF list chunk: {exc}") from None
        return cls(ids, codes, vectors, metadata, ts)


class IVFIndex:
    """Inverted-file index over k-means lists with flat, SQ8 or PQ codes (see module docstring)."""

    kind = "ivf"

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        nlist: int = 128,
        nprobe: int = 16,
        codec: str = "flat",
        pq_m: int | None = None,
        rerank: int | None = None,
        store_full: bool = True,
        seed: int = 0,
        *,
        pq_nbits: int = 8,
        lists_per_chunk: int = 1,
        cache_bytes: int = 64 * 2**20,
        train_min: int | None = None,
        kmeans_iters: int = 20,
        residual: bool | None = None,
        vectors_dtype: str = "float32",
    ) -> None:
        if not _is_int(dim) or dim < 1:
            raise InvalidArgumentError(f"dim must be a positive integer, got {dim!r}")
        kernels.check_metric(metric)
        for name, v in (("nlist", nlist), ("nprobe", nprobe), ("lists_per_chunk", lists_per_chunk), ("kmeans_iters", kmeans_iters)):
            if not _is_int(v) or v < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {v!r}")
        if codec not in ("flat", "sq8", "pq"):
            raise InvalidArgumentError(f"codec must be 'flat', 'sq8' or 'pq', got {codec!r}")
        if rerank is not None and (not _is_int(rerank) or rerank < 0):
            raise InvalidArgumentError(f"rerank must be None or an integer >= 0, got {rerank!r}")
        if not _is_int(cache_bytes) or cache_bytes < 0:
            raise InvalidArgumentError(f"cache_bytes must be an integer >= 0, got {cache_bytes!r}")
        if train_min is not None and (not _is_int(train_min) or train_min < nlist):
            raise InvalidArgumentError(f"train_min must be an integer >= nlist, got {train_min!r}")
        if vectors_dtype not in ("float32", "float16"):
            raise InvalidArgumentError(f"vectors_dtype must be 'float32' or 'float16', got {vectors_dtype!r}")
        # float16 halves the bytes of stored full vectors (the flat codec's codes, the re-rank
        # vectors of sq8/pq); vectors are rounded on insert so results are the same before and
        # after a save/load, in the browser and on CPython
        self.vectors_dtype = vectors_dtype
        self.dim = int(dim)
        self.metric = metric
        self.nlist = int(nlist)
        self.nprobe = int(nprobe)
        self.codec_name = codec
        self.rerank = None if rerank is None else int(rerank)
        self.store_full = bool(store_full) or codec == "flat"
        self.seed = int(seed)
        self.lists_per_chunk = int(lists_per_chunk)
        self.cache_bytes = int(cache_bytes)
        self.kmeans_iters = int(kmeans_iters)
        self.train_min = int(train_min) if train_min is not None else max(1000, 30 * self.nlist)
        # PQ encodes residuals x - centroid(list) by default (much finer codes on clustered data)
        self.residual = codec == "pq" and (residual is None or bool(residual))
        self.pq_nbits = int(pq_nbits)
        self.pq_m = pq_m
        self.codec: qz.Codec = self._fresh_codec()
        if codec == "pq":
            self.pq_m = self.codec.m  # type: ignore[attr-defined]
        self.centroids: np.ndarray | None = None
        self._csq: np.ndarray | None = None
        self._lists: list[_List | None] = []
        self._counts = np.zeros(self.nlist, dtype=np.int64)
        self._pending = self._new_pending()
        self._loc: dict[str, tuple[int, int]] | None = {}
        # persistence / lazy state
        self._reader: ChunkReader | None = None
        self._lazy = False
        self._chunk_cids: list[str | None] = [None] * self._nchunks
        # per-list metadata summaries (filters.summarize) so filtered searches skip lists that
        # cannot match; None = not computed yet (resident lists) or unknown (old manifests)
        self._summaries: list[dict[str, Any] | None] = [None] * self.nlist
        self._centroids_cid: str | None = None
        self._pending_cid: str | None = None
        self._lru: OrderedDict[int, tuple[int, dict[int, _List]]] = OrderedDict()
        self._lru_bytes = 0
        self._last: dict[str, tuple[dict[str, Any], float]] = {}

    # ------------------------------------------------------------------ basics

    @property
    def _shared(self) -> bool:
        """Flat codec: the codes *are* the full vectors (stored once)."""
        return self.codec_name == "flat"

    @property
    def _nchunks(self) -> int:
        return -(-self.nlist // self.lists_per_chunk)

    @property
    def trained(self) -> bool:
        return self.centroids is not None

    @property
    def lazy(self) -> bool:
        return self._lazy

    def _new_list(self) -> _List:
        return _List.empty(
            self.codec.code_size,
            None if self._shared else self.codec.code_dtype,
            self.dim if self.store_full else None,
        )

    def _new_pending(self) -> _List:
        return _List.empty(0, None, self.dim)

    def spec(self) -> str:
        """Short description for the manifest, faiss style: ``IVF256,PQ16``, ``IVF128,SQ8``, ``IVF128,Flat``."""
        code = {"flat": "Flat", "sq8": "SQ8", "pq": f"PQ{self.pq_m}"}[self.codec_name]
        return f"IVF{self.nlist},{code}" + (",f16" if self.vectors_dtype == "float16" else "")

    def params(self) -> dict[str, Any]:
        return {
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "codec": self.codec_name,
            "pq_m": self.pq_m,
            "pq_nbits": self.pq_nbits,
            "rerank": self.rerank,
            "store_full": self.store_full,
            "seed": self.seed,
            "lists_per_chunk": self.lists_per_chunk,
            "train_min": self.train_min,
            "kmeans_iters": self.kmeans_iters,
            "residual": self.residual,
            "vectors_dtype": self.vectors_dtype,
        }

    def __len__(self) -> int:
        return int(self._counts.sum()) + len(self._pending)

    def __repr__(self) -> str:
        return (
            f"IVFIndex(dim={self.dim}, metric={self.metric!r}, nlist={self.nlist}, codec={self.codec_name!r}, "
            f"n={len(self)}, trained={self.trained}, lazy={self._lazy})"
        )

    def list_sizes(self) -> np.ndarray:
        """Number of records in every inverted list."""
        return self._counts.copy()

    def imbalance(self) -> float:
        """Largest list size over the mean list size (1.0 = perfectly even; 0 when empty)."""
        total = int(self._counts.sum())
        if total == 0:
            return 0.0
        return float(self._counts.max() / (total / self.nlist))

    def imbalance_cv(self) -> float:
        """Coefficient of variation (std / mean) of the list sizes."""
        total = int(self._counts.sum())
        if total == 0:
            return 0.0
        return float(self._counts.std() / (total / self.nlist))

    def _require_mutable(self, what: str) -> None:
        if self._lazy:
            raise InvalidArgumentError(
                f"cannot {what} a lazily loaded IVF index: call load_all() first to make it writable"
            )

    # ------------------------------------------------------------------ validation

    def _validate_batch(
        self,
        ids: Sequence[str],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any]] | None,
        timestamps: Sequence[float | None] | None,
    ) -> tuple[list[str], np.ndarray, list[dict[str, Any]], np.ndarray]:
        return check_batch(self.dim, ids, vectors, metadata, timestamps)

    # ------------------------------------------------------------------ training

    def train(self, vectors: Any, progress: Callable[[int, int], Any] | None = None) -> None:
        """Train centroids (k-means) and the codec on ``vectors`` (not added to the index).

        Records already held (pending or in lists) are redistributed over the new lists.
        """
        self._require_mutable("train")
        x = kernels.as_matrix(vectors, self.dim)
        if x.shape[0] < self.nlist:
            raise InvalidArgumentError(f"training needs at least nlist={self.nlist} vectors, got {x.shape[0]}")
        x = kernels.prepare(x, self.metric)
        self._fit(x, progress)

    def _fit(self, x: np.ndarray, progress: Callable[[int, int], Any] | None = None) -> None:
        """Train on prepared vectors ``x`` and redistribute every record held."""
        ids, vecs, codes, metas, ts = self._gather()
        centroids = qz.kmeans(
            x, self.nlist, iters=self.kmeans_iters, seed=self.seed, progress=progress, metric=self.metric
        )
        if codes is not None and not self.store_full:
            # nothing better to re-encode from (retrain of PQ/SQ8 without full vectors): keep the
            # codec; keep the codes too unless they are residuals of the old centroids
            codec = self.codec
            if self.residual:
                codes = None
        else:
            codec = self._fresh_codec()
            if self.residual:
                labels = qz.assign(x, centroids, self.metric)
                codec.train(x - centroids[labels])
            else:
                codec.train(x)
        self.codec = codec
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self._csq = kernels.sq_norms(self.centroids)
        self._lists = [self._new_list() for _ in range(self.nlist)]
        self._counts = np.zeros(self.nlist, dtype=np.int64)
        self._pending = self._new_pending()
        self._loc = {}
        self._centroids_cid = None
        self._chunk_cids = [None] * self._nchunks
        self._summaries = [None] * self.nlist
        self._pending_cid = None
        if ids:
            self._insert_trained(ids, vecs, metas, ts, codes=codes)

    def _fresh_codec(self) -> qz.Codec:
        if self.codec_name == "pq":
            # residual PQ: the table holds l2 sub-distances to (q - c) or inner products with q;
            # the centroid term is added per list at search time
            metric = ("l2" if self.metric == "l2" else "ip") if self.residual else self.metric
            return qz.PQCodec(self.dim, self.pq_m, self.pq_nbits, metric, seed=self.seed)
        if self.codec_name == "sq8":
            return qz.SQ8Codec(self.dim, self.metric)
        return qz.Float32Codec(self.dim, self.metric)

    def _gather(self) -> tuple[list[str], np.ndarray, np.ndarray | None, list[dict[str, Any]], np.ndarray]:
        """Every record held, pending first then list by list: ids, vectors (full or decoded),
        codes (when lists have codes but no full vectors, else None), metadata, timestamps."""
        parts = [(_PENDING, self._pending)] + [(n, l) for n, l in enumerate(self._lists) if l is not None and len(l)]
        ids: list[str] = []
        metas: list[dict[str, Any]] = []
        vec_parts, code_parts, ts_parts = [], [], []
        lists_without_full = False
        for number, part in parts:
            ids.extend(part.ids)
            metas.extend(part.metadata)
            ts_parts.append(part.timestamps)
            if part.vectors is not None:
                vec_parts.append(part.vectors)
                if part is not self._pending and not self._shared:
                    code_parts.append(part.codes)
            else:
                vec_parts.append(self._decode(part, number))
                code_parts.append(part.codes)
                lists_without_full = True
        if not ids:
            return [], np.empty((0, self.dim), np.float32), None, [], np.empty(0, np.float64)
        vecs = np.concatenate(vec_parts).astype(np.float32, copy=False)
        ts = np.concatenate(ts_parts)
        codes = None
        if lists_without_full:
            if len(self._pending):
                # cannot happen: pending exists only before training, lists only after
                raise AssertionError("pending records next to code-only lists")
            codes = np.concatenate(code_parts)
        return ids, vecs, codes, metas, ts

    def _decode(self, lst: _List, number: int, rows: slice | None = None) -> np.ndarray:
        """Approximate vectors of a code-only list (adds the centroid back for residual codes)."""
        codes = lst.codes if rows is None else lst.codes[rows]
        out = self.codec.decode(codes)
        if self.residual:
            out = out + self.centroids[number]
        return out.astype(np.float32, copy=False)

    def retrain(self, progress: Callable[[int, int], Any] | None = None) -> None:
        """Retrain centroids (and the codec, when full vectors are stored) on the current data,
        then reassign every record. Without full vectors the decoded codes are clustered and
        the existing codes are kept."""
        self._require_mutable("retrain")
        n = len(self)
        if n < self.nlist:
            raise InvalidArgumentError(f"retraining needs at least nlist={self.nlist} records, held {n}")
        _, vecs, _, _, _ = self._gather()
        self._fit(vecs, progress)

    def needs_rebalance(self, max_ratio: float = 4.0, max_cv: float = 1.5) -> bool:
        """True when the largest list exceeds ``max_ratio`` x the mean or the CV exceeds ``max_cv``."""
        return self.trained and (self.imbalance() > max_ratio or self.imbalance_cv() > max_cv)

    def rebalance(self, max_ratio: float = 4.0, max_cv: float = 1.5, force: bool = False) -> bool:
        """Retrain and reassign if the list sizes are uneven (see :meth:`needs_rebalance`).

        Returns whether a retrain happened."""
        self._require_mutable("rebalance")
        if not force and not self.needs_rebalance(max_ratio, max_cv):
            return False
        self.retrain()
        return True

    # ------------------------------------------------------------------ mutation

    def add(
        self,
        ids: Sequence[str],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        timestamps: Sequence[float | None] | None = None,
        progress: Callable[[int, int], Any] | None = None,
    ) -> None:
        """Insert or replace (upsert) records. Validates everything before changing anything."""
        self._require_mutable("add to")
        ids, x, metas, ts = self._validate_batch(ids, vectors, metadata, timestamps)
        if not ids:
            return
        x = kernels.prepare(x, self.metric)
        if self.vectors_dtype == "float16":
            x = x.astype(np.float16).astype(np.float32)
        present = [i for i in ids if i in self._loc]  # type: ignore[operator]
        if present:
            self._remove(present)
        if not self.trained:
            if len(self._pending) + len(ids) >= self.train_min:
                self._pending.append(ids, None, x, metas, ts, shared=False)
                self._register(_PENDING, self._pending, 0)
                self._fit(self._pending.vectors)
                if progress is not None:
                    progress(len(ids), len(ids))
                return
            start = len(self._pending)
            self._pending.append(ids, None, x, metas, ts, shared=False)
            self._register(_PENDING, self._pending, start)
            self._pending_cid = None
            if progress is not None:
                progress(len(ids), len(ids))
            return
        self._insert_trained(ids, x, metas, ts, progress=progress)

    def _register(self, number: int, lst: _List, start: int) -> None:
        loc = self._loc
        assert loc is not None
        for r in range(start, len(lst.ids)):
            loc[lst.ids[r]] = (number, r)

    def _insert_trained(
        self,
        ids: list[str],
        x: np.ndarray,
        metas: list[dict[str, Any]],
        ts: np.ndarray,
        codes: np.ndarray | None = None,
        progress: Callable[[int, int], Any] | None = None,
    ) -> None:
        """Assign prepared vectors to lists, encode, append (ids known to be absent)."""
        n = len(ids)
        labels = np.empty(n, dtype=np.int64)
        enc = None if self._shared else (codes if codes is not None else np.empty((n, self.codec.code_size), self.codec.code_dtype))
        for s in range(0, n, _ADD_BLOCK):
            labels[s : s + _ADD_BLOCK] = qz.assign(x[s : s + _ADD_BLOCK], self.centroids, self.metric)
            if enc is not None and codes is None:
                block = x[s : s + _ADD_BLOCK]
                if self.residual:
                    block = block - self.centroids[labels[s : s + _ADD_BLOCK]]
                enc[s : s + _ADD_BLOCK] = self.codec.encode(block)
            if progress is not None:
                progress(min(s + _ADD_BLOCK, n), n)
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        cuts = np.flatnonzero(np.diff(sorted_labels)) + 1
        for group in np.split(order, cuts):
            l = int(labels[group[0]])
            lst = self._lists[l]
            assert lst is not None
            start = len(lst)
            g_ids = [ids[i] for i in group]
            lst.append(
                g_ids,
                None if enc is None else enc[group],
                x[group] if self.store_full else None,
                [metas[i] for i in group],
                ts[group],
                shared=self._shared,
            )
            self._counts[l] = len(lst)
            self._register(l, lst, start)
            self._chunk_cids[l // self.lists_per_chunk] = None
            self._summaries[l] = None

    def _remove(self, ids: Iterable[str]) -> None:
        loc = self._loc
        assert loc is not None
        by_list: dict[int, list[int]] = {}
        for i in ids:
            l, r = loc.pop(i)
            by_list.setdefault(l, []).append(r)
        for l, rows in by_list.items():
            lst = self._pending if l == _PENDING else self._lists[l]
            assert lst is not None
            first = min(rows)
            lst.remove_rows(np.asarray(rows, dtype=np.int64), shared=self._shared and l != _PENDING)
            self._register(l, lst, first)
            if l == _PENDING:
                self._pending_cid = None
            else:
                self._counts[l] = len(lst)
                self._chunk_cids[l // self.lists_per_chunk] = None
                self._summaries[l] = None

    def delete(self, ids: Iterable[str]) -> int:
        """Remove records; raises UnknownIdError (changing nothing) if any id is unknown."""
        self._require_mutable("delete from")
        if isinstance(ids, str):
            ids = [ids]
        uniq = list(dict.fromkeys(ids))
        loc = self._loc
        assert loc is not None
        missing = [i for i in uniq if not isinstance(i, str) or i not in loc]
        if missing:
            raise UnknownIdError(f"unknown id {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        self._remove(uniq)
        for i in uniq:
            self._last.pop(i, None)
        return len(uniq)

    # ------------------------------------------------------------------ lookup

    def _find(self, id: str) -> tuple[_List, int, int] | None:
        """(list, row, list number) of a record, or None."""
        if self._loc is not None:
            hit = self._loc.get(id)
            if hit is None:
                return None
            l, r = hit
            lst = self._pending if l == _PENDING else self._lists[l]
            assert lst is not None
            return lst, r, l
        # lazy: pending, cached lists, then every other list through the reader
        r = self._pending.row_of(id)
        if r is not None:
            return self._pending, r, _PENDING
        for _, (_, lists) in self._lru.items():
            for l, lst in lists.items():
                r = lst.row_of(id)
                if r is not None:
                    return lst, r, l
        for c in range(self._nchunks):
            if c in self._lru or not self._chunk_has_records(c):
                continue
            for l, lst in self._decode_chunk(c).items():
                r = lst.row_of(id)
                if r is not None:
                    return lst, r, l
        return None

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, str):
            return False
        if self._loc is not None:
            return id in self._loc
        return id in self._last or self._find(id) is not None

    def metadata(self, id: str) -> dict[str, Any]:
        """Metadata of a record (a copy)."""
        if self._loc is None and id in self._last:
            return dict(self._last[id][0])
        hit = self._find(id) if isinstance(id, str) else None
        if hit is None:
            raise UnknownIdError(f"unknown id {id!r}")
        return dict(hit[0].metadata[hit[1]])

    def timestamp(self, id: str) -> float | None:
        """Timestamp of a record (None if it has none)."""
        if self._loc is None and id in self._last:
            t = self._last[id][1]
        else:
            hit = self._find(id) if isinstance(id, str) else None
            if hit is None:
                raise UnknownIdError(f"unknown id {id!r}")
            t = float(hit[0].timestamps[hit[1]])
        return None if math.isnan(t) else t

    def vector(self, id: str) -> np.ndarray:
        """The stored (prepared) vector of a record: exact when full vectors are kept, else decoded."""
        hit = self._find(id) if isinstance(id, str) else None
        if hit is None:
            raise UnknownIdError(f"unknown id {id!r}")
        lst, r, l = hit
        if lst.vectors is not None:
            return lst.vectors[r].copy()
        return self._decode(lst, l, slice(r, r + 1))[0]

    def items(self) -> Iterator[tuple[str, np.ndarray, dict[str, Any], float | None]]:
        """Every record as ``(id, vector, metadata, timestamp)``; vectors are the stored
        (prepared) vectors, decoded from codes when full vectors are not kept. On a lazy
        index the lists are fetched one chunk at a time."""
        def emit(lst: _List, number: int) -> Iterator[tuple[str, np.ndarray, dict[str, Any], float | None]]:
            vecs = lst.vectors if lst.vectors is not None else self._decode(lst, number)
            for r, i in enumerate(lst.ids):
                t = float(lst.timestamps[r])
                yield i, vecs[r].copy(), dict(lst.metadata[r]), (None if math.isnan(t) else t)

        yield from emit(self._pending, _PENDING)
        if not self.trained:
            return
        if not self._lazy:
            for l, lst in enumerate(self._lists):
                if lst is not None:
                    yield from emit(lst, l)
            return
        for c in range(self._nchunks):
            if not self._chunk_has_records(c):
                continue
            hit = self._lru.get(c)
            lists = hit[1] if hit is not None else self._decode_chunk(c)
            for l in sorted(lists):
                yield from emit(lists[l], l)

    # ------------------------------------------------------------------ search

    def _prepare_query(self, query: Any) -> np.ndarray:
        q = kernels.as_vector(query, self.dim)
        return kernels.prepare(q[None, :], self.metric)[0]

    def _check_nprobe(self, nprobe: Any) -> int:
        if nprobe is None:
            return min(self.nprobe, self.nlist)
        if not _is_int(nprobe) or nprobe < 1:
            raise InvalidArgumentError(f"nprobe must be a positive integer, got {nprobe!r}")
        return min(int(nprobe), self.nlist)

    def _probe_dist(self, q: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """Probed list numbers (nearest first) and the query's distances to every centroid."""
        if self.centroids is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        d = kernels.distances(q, self.centroids, self.metric, self._csq)
        return kernels.top_k(d, nprobe), d

    def _probe(self, q: np.ndarray, nprobe: int) -> np.ndarray:
        return self._probe_dist(q, nprobe)[0]

    def _summary(self, l: int) -> dict[str, Any] | None:
        """The list's metadata summary: loaded with the centroids, or computed from a resident list."""
        s = self._summaries[l]
        if s is None and self._lists and self._lists[l] is not None:
            lst = self._lists[l]
            s = self._summaries[l] = summarize(lst.metadata, lst.timestamps.tolist())
        return s

    def _probe_filtered(self, q: np.ndarray, nprobe: int, flt: Filter | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Lists to probe, nearest centroid first.

        Without a filter: the ``nprobe`` nearest. With one: the nearest lists whose summary says
        they *can* hold a match (lists that cannot are skipped without being fetched), at least
        ``nprobe`` of them and enough that their *expected* matches reach ``FILTER_DEPTH * k``.
        So a filter correlated with the lists (a channel with its own topic) probes the nearest
        lists that hold it, and an uncorrelated selective filter probes deeper, as it must to
        find its nearest matches, instead of returning whatever few sit in the nearest lists.
        """
        if flt is None or self.centroids is None:
            return self._probe_dist(q, nprobe)
        d = kernels.distances(q, self.centroids, self.metric, self._csq)
        out: list[int] = []
        expected = 0.0
        for l in np.lexsort((np.arange(d.shape[0]), d)).tolist():
            count = int(self._counts[l])
            if count == 0:
                continue
            s = self._summary(l)
            if s is not None and flt.bound(s) <= 0:
                continue
            out.append(l)
            expected += count if s is None else flt.estimate(s)
            if len(out) >= nprobe and expected >= FILTER_DEPTH * k:
                break
        return np.asarray(out, dtype=np.int64), d

    def probed_lists(self, query: Any, nprobe: int | None = None) -> list[int]:
        """Numbers of the lists a search would probe, nearest centroid first."""
        q = self._prepare_query(query)
        return [int(l) for l in self._probe(q, self._check_nprobe(nprobe))]

    def _chunk_has_records(self, c: int) -> bool:
        g = self.lists_per_chunk
        return bool(self._counts[c * g : (c + 1) * g].sum() > 0)

    def chunks_for(
        self, query: Any, k: int = 10, nprobe: int | None = None, filter: Any = None, **params: Any
    ) -> list[str]:
        """CIDs of list chunks the search would probe that are not in memory yet (probe order)."""
        if not self._lazy:
            return []
        q = self._prepare_query(query)
        flt = filter if filter is None or isinstance(filter, Filter) else parse(filter)
        out: list[str] = []
        seen: set[int] = set()
        for l in self._probe_filtered(q, self._check_nprobe(nprobe), flt, kernels.check_k(k))[0]:
            if self._counts[l] == 0:
                continue
            c = int(l) // self.lists_per_chunk
            if c in seen or c in self._lru:
                continue
            seen.add(c)
            cid = self._chunk_cids[c]
            assert cid is not None
            out.append(cid)
        return out

    def _decode_chunk(self, c: int) -> dict[int, _List]:
        assert self._reader is not None
        cid = self._chunk_cids[c]
        assert cid is not None
        body = self._reader.get(cid, LIST_KIND)
        return self._lists_from_body(body, c)

    def _lists_from_body(self, body: Mapping[str, Any], c: int) -> dict[int, _List]:
        g = self.lists_per_chunk
        out: dict[int, _List] = {}
        try:
            entries = body["lists"]
        except (KeyError, TypeError):
            raise FormatError("IVF list chunk without lists") from None
        for entry in entries:
            l = int(entry["list"])
            if not c * g <= l < min((c + 1) * g, self.nlist):
                raise FormatError(f"IVF list chunk {c} holds list {l}")
            lst = _List.from_body(
                entry, self.dim, self.codec.code_size, None if self._shared else self.codec.code_dtype, self._shared
            )
            if len(lst) != self._counts[l]:
                raise FormatError(f"IVF list {l} has {len(lst)} records, descriptor says {int(self._counts[l])}")
            out[l] = lst
        for l in range(c * g, min((c + 1) * g, self.nlist)):
            out.setdefault(l, self._new_list())
        return out

    def _get_list(self, l: int) -> _List:
        """A list for searching: resident, from the LRU, or fetched through the reader."""
        lst = self._lists[l]
        if lst is not None:
            return lst
        c = l // self.lists_per_chunk
        hit = self._lru.get(c)
        if hit is not None:
            self._lru.move_to_end(c)
            return hit[1][l]
        lists = self._decode_chunk(c)
        size = sum(x.nbytes() for x in lists.values())
        if size <= self.cache_bytes:
            self._lru[c] = (size, lists)
            self._lru_bytes += size
            while self._lru_bytes > self.cache_bytes:
                _, (old, _) = self._lru.popitem(last=False)
                self._lru_bytes -= old
        return lists[l]

    def _default_rerank(self, k: int) -> int:
        if self._shared or not self.store_full:
            return 0
        if self.rerank is not None:
            return self.rerank
        return 10 * k if self.codec_name == "pq" else 4 * k

    def search(
        self,
        query: Any,
        k: int = 10,
        filter: Filter | Mapping[str, Any] | None = None,
        nprobe: int | None = None,
        rerank: int | None = None,
        **params: Any,
    ) -> list[tuple[str, float]]:
        """Best ``k`` (id, distance) pairs, best first. ``nprobe`` lists are scanned; with a
        quantized codec and full vectors, the best ``rerank`` candidates are re-scored exactly
        (``rerank=0`` disables; default 4k for sq8, 10k for pq)."""
        k = kernels.check_k(k)
        nprobe_n = self._check_nprobe(nprobe)
        if rerank is not None and (not _is_int(rerank) or rerank < 0):
            raise InvalidArgumentError(f"rerank must be an integer >= 0, got {rerank!r}")
        flt = filter if filter is None or isinstance(filter, Filter) else parse(filter)
        q = self._prepare_query(query)
        n_rerank = (self._default_rerank(k) if rerank is None else int(rerank)) if (self.store_full and not self._shared) else 0

        sources: list[_List] = []
        dists: list[np.ndarray] = []
        exact: list[bool] = []
        if len(self._pending):
            p = self._pending
            sources.append(p)
            dists.append(kernels.distances(q, p.vectors, self.metric, p.sq if self.metric == "l2" else None))
            exact.append(True)
        if self.trained and self._counts.sum() > 0:
            probe, cdist = self._probe_filtered(q, nprobe_n, flt, k)
            per_list_table = self.residual and self.metric == "l2"
            table = None if per_list_table else self.codec.distance_table(q)
            for l in probe:
                if self._counts[l] == 0:
                    continue
                lst = self._get_list(int(l))
                if self._shared:
                    d = kernels.distances(q, lst.vectors, self.metric, lst.sq if self.metric == "l2" else None)
                elif per_list_table:  # ||q - c - r||^2: table from the query's residual q - c
                    qr = q - self.centroids[l]
                    d = self.codec.distances(qr, lst.codes, self.codec.distance_table(qr))
                elif self.residual:  # ip/cosine: dist(q, c) - q.r
                    d = self.codec.distances(q, lst.codes, table)
                    d += cdist[l]
                else:
                    d = self.codec.distances(q, lst.codes, table)
                sources.append(lst)
                dists.append(d)
                exact.append(self._shared)
        if not sources:
            return []
        # intp, not int64: np.repeat casts its counts to intp 'safely', which int64 -> int32 is not on wasm32 (Pyodide)
        sizes = np.fromiter((d.shape[0] for d in dists), dtype=np.intp, count=len(dists))
        all_d = np.concatenate(dists) if len(dists) > 1 else dists[0]
        src = np.repeat(np.arange(len(sources)), sizes)
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        rows = np.arange(all_d.shape[0]) - np.repeat(offsets, sizes)
        need = max(k, n_rerank)

        if flt is None:
            cand = kernels.top_k(all_d, need)
        else:
            cand = self._filtered_candidates(all_d, src, rows, sources, flt, need)
            if cand.size < k and self.trained and nprobe_n < self.nlist:
                # the summaries' bounds were optimistic: widen the probe (bounded by nlist)
                return self.search(query, k, flt, nprobe=min(self.nlist, nprobe_n * 2), rerank=rerank)
        if cand.size == 0:
            return []

        cd = all_d[cand]
        if n_rerank > 0:
            cs, cr = src[cand], rows[cand]
            approx = ~np.asarray(exact)[cs]
            if approx.any():
                vecs = np.stack([sources[s].vectors[r] for s, r in zip(cs[approx], cr[approx])])
                cd = cd.copy()
                cd[approx] = kernels.distances(q, vecs, self.metric)
        best = kernels.top_k(cd, k)
        out: list[tuple[str, float]] = []
        self._last = {}
        for b in best:
            i = cand[b]
            lst, r = sources[src[i]], int(rows[i])
            rid = lst.ids[r]
            out.append((rid, float(cd[b])))
            if self._lazy:
                self._last[rid] = (lst.metadata[r], float(lst.timestamps[r]))
        return out

    @staticmethod
    def _filtered_candidates(
        all_d: np.ndarray, src: np.ndarray, rows: np.ndarray, sources: list[_List], flt: Filter, need: int
    ) -> np.ndarray:
        """Indices of the ``need`` best candidates that pass the filter (checked lazily, in
        distance order, in growing blocks, so a selective filter costs what it must)."""
        order = np.lexsort((np.arange(all_d.shape[0]), all_d))
        keep: list[int] = []
        pos = 0
        block = max(need * 2, 32)
        n = order.shape[0]
        while pos < n and len(keep) < need:
            chunk = order[pos : pos + block]
            pos += chunk.shape[0]
            for i in chunk.tolist():
                lst = sources[src[i]]
                r = rows[i]
                t = lst.timestamps[r]
                if flt.matches(fields_of(lst.metadata[r], None if t != t else float(t))):
                    keep.append(i)
                    if len(keep) >= need:
                        break
            block *= 2
        return np.asarray(keep, dtype=np.int64)

    # ------------------------------------------------------------------ persistence

    def _centroids_body(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "metric": self.metric,
            "params": self.params(),
            "trained": self.trained,
            "centroids": self.centroids if self.centroids is not None else np.empty((0, self.dim), np.float32),
            "codec": self.codec.state() if self.trained else None,
        }

    def _chunk_body(self, c: int) -> dict[str, Any]:
        g = self.lists_per_chunk
        entries = []
        for l in range(c * g, min((c + 1) * g, self.nlist)):
            lst = self._lists[l]
            assert lst is not None
            entries.append(lst.body(l, self._shared, self.vectors_dtype))
        return {"lists": entries}

    def save(self, writer: ChunkWriter, *, reuse_clean: bool = False) -> dict[str, Any]:
        """Write the index as chunks; returns the descriptor.

        Every resident list chunk is written (identical content gives the identical CID, so a
        store that knows the CID skips the upload). Chunks of a lazy index that were never
        loaded are not rewritten: their CIDs are reused. With ``reuse_clean`` the chunks not
        modified since the last save/load are not rewritten either (saves encoding work; the
        descriptor's ``chunks`` still names every chunk the index uses).
        """
        cid = self._centroids_cid
        if cid is None or not reuse_clean:
            cid = writer.put(CENTROIDS_KIND, self._centroids_body())
        self._centroids_cid = cid
        pending_cid = None
        if len(self._pending):
            pending_cid = self._pending_cid
            if pending_cid is None or not reuse_clean:
                pending_cid = writer.put(LIST_KIND, {"lists": [self._pending.body(_PENDING, False)]})
            self._pending_cid = pending_cid
        else:
            self._pending_cid = None
        list_cids: list[str] = []
        if self.trained:
            for c in range(self._nchunks):
                resident = self._lists[c * self.lists_per_chunk] is not None
                old = self._chunk_cids[c]
                if resident and (old is None or not reuse_clean):
                    old = writer.put(LIST_KIND, self._chunk_body(c))
                    self._chunk_cids[c] = old
                assert old is not None
                list_cids.append(old)
        summaries_cid = None
        if self.trained:
            # its own chunk, so an edit re-uploads these few KB and not the centroids
            summaries_cid = writer.put(SUMMARIES_KIND, {"lists": [self._summary(l) or {} for l in range(self.nlist)]})
        chunks = [cid] + ([summaries_cid] if summaries_cid else []) + ([pending_cid] if pending_cid else []) + list_cids
        return {
            "kind": self.kind,
            "version": DESC_VERSION,
            "dim": self.dim,
            "metric": self.metric,
            "params": self.params(),
            "trained": self.trained,
            "count": len(self),
            "centroids": cid,
            "summaries": summaries_cid,
            "pending": pending_cid,
            "lists_per_chunk": self.lists_per_chunk,
            "counts": [int(c) for c in self._counts],
            "lists": list_cids,
            "chunks": list(dict.fromkeys(chunks)),
        }

    @classmethod
    def load(
        cls, desc: Mapping[str, Any], reader: ChunkReader, lazy: bool = True, cache_bytes: int | None = None
    ) -> "IVFIndex":
        """Rebuild from a descriptor. Reads the centroids chunk (and the pending buffer of an
        untrained index); with ``lazy`` the lists are fetched when a search probes them,
        otherwise all at once (and the index is writable)."""
        try:
            if desc.get("kind") != cls.kind or desc.get("version") != DESC_VERSION:
                raise FormatError(f"not an IVF descriptor (kind={desc.get('kind')!r}, version={desc.get('version')!r})")
            body = reader.get(desc["centroids"], CENTROIDS_KIND)
            p = dict(body["params"])
            idx = cls(
                int(body["dim"]),
                str(body["metric"]),
                nlist=int(p["nlist"]),
                nprobe=int(p["nprobe"]),
                codec=str(p["codec"]),
                pq_m=p["pq_m"],
                rerank=p["rerank"],
                store_full=bool(p["store_full"]),
                seed=int(p["seed"]),
                pq_nbits=int(p["pq_nbits"]),
                lists_per_chunk=int(p["lists_per_chunk"]),
                cache_bytes=int(cache_bytes if cache_bytes is not None else getattr(reader, "cache_bytes", 64 * 2**20)),
                train_min=int(p["train_min"]),
                kmeans_iters=int(p["kmeans_iters"]),
                residual=bool(p["residual"]),
                vectors_dtype=str(p.get("vectors_dtype", "float32")),
            )
            counts = np.asarray([int(c) for c in desc["counts"]], dtype=np.int64)
            if counts.shape != (idx.nlist,):
                raise FormatError(f"IVF descriptor has {counts.shape[0]} list counts, expected {idx.nlist}")
            idx._counts = counts
            idx._reader = reader
            idx._centroids_cid = desc["centroids"]
            if body["trained"]:
                idx.centroids = np.ascontiguousarray(
                    np.asarray(body["centroids"], dtype=np.float32).reshape(idx.nlist, idx.dim)
                )
                idx._csq = kernels.sq_norms(idx.centroids)
                idx.codec = qz.codec_from_state(body["codec"])
                cids = [str(c) for c in desc["lists"]]
                if len(cids) != idx._nchunks:
                    raise FormatError(f"IVF descriptor has {len(cids)} list chunks, expected {idx._nchunks}")
                idx._chunk_cids = list(cids)
                if desc.get("summaries"):
                    sums = reader.get(desc["summaries"], SUMMARIES_KIND)["lists"]
                    if len(sums) != idx.nlist:
                        raise FormatError(f"IVF summaries chunk has {len(sums)} lists, expected {idx.nlist}")
                    idx._summaries = [s if isinstance(s, dict) and "n" in s else None for s in sums]
                idx._lists = [None] * idx.nlist
                idx._lazy = True
                idx._loc = None
            elif counts.any() or desc["lists"]:
                raise FormatError("untrained IVF descriptor with list chunks")
            if desc.get("pending"):
                pb = reader.get(desc["pending"], LIST_KIND)
                entry = pb["lists"][0]
                idx._pending = _List.from_body(entry, idx.dim, 0, None, False)
                idx._pending_cid = desc["pending"]
            if not idx.trained:
                idx._reader = None
                idx._loc = {}
                idx._register(_PENDING, idx._pending, 0)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise FormatError(f"malformed IVF descriptor or chunk: {exc!r}") from None
        if not lazy:
            idx.load_all()
        return idx

    def load_all(self) -> None:
        """Fetch every list not in memory and make the index fully resident (and writable)."""
        if not self._lazy:
            return
        for c in range(self._nchunks):
            hit = self._lru.get(c)
            lists = hit[1] if hit is not None else self._decode_chunk(c)
            for l, lst in lists.items():
                self._lists[l] = lst
        self._lru.clear()
        self._lru_bytes = 0
        self._lazy = False
        self._reader = None
        self._last = {}
        self._loc = {}
        self._register(_PENDING, self._pending, 0)
        for l, lst in enumerate(self._lists):
            assert lst is not None
            self._register(l, lst, 0)

    def cached_bytes(self) -> int:
        """Approximate bytes of lazily loaded lists held in the LRU."""
        return self._lru_bytes
