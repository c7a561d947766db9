"""IVF index: k-means inverted lists, optionally scalar- (SQ8) or product-quantized (PQ).

Layout in memory
    ``nlist`` inverted lists (:class:`s5vec.index.ivf_lists.IVFList`); list ``l`` holds its
    records' ids, codes, optionally the full vectors (``store_full``, used to re-rank quantized
    candidates exactly), metadata and timestamps. An ``id -> (list, row)`` map is kept while the
    index is fully resident.

Small indexes
    Until the index is trained, records go to a *pending* buffer that is searched exactly.
    The first ``add`` that brings the number of records to ``train_min`` (default
    ``max(1000, 30 * nlist)``) trains the index on everything and moves the buffer into lists.
    ``train(vectors)`` trains explicitly (and redistributes any records already held).

Searching (plan, then execute)
    ``plan(query)`` names the list chunks the probe needs (nothing when every list is
    resident); ``search(query, chunks)`` scores the probed lists, taking the ones that are not
    resident from ``chunks``. A filtered search whose probed lists held fewer than ``k``
    matches returns ``Outcome(widen=...)`` with twice the ``nprobe``: the request layer runs
    another plan/fetch/search round. Persistence and lazy loading live in
    :mod:`s5vec.index.ivf_store`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .. import kernels
from .. import quantizers as qz
from ..errors import InvalidArgumentError, UnknownIdError
from ..filters import Filter, fields_of, summarize
from ..query import NO_CHUNKS, Chunks, Hit, IVFSearchParams, Outcome, Query, Record
from .ivf_lists import PENDING as _PENDING, IVFList, IVFParams, Refiner, is_int as _is_int, make_codec
from .ivf_store import IVFStorage, RefineState, storable_centroids
from .records import check_batch

FILTER_DEPTH = 4  # a filtered search probes until its lists are expected to hold 4k matches
_ADD_BLOCK = 16_384


class IVFIndex(IVFStorage):
    """Inverted-file index over k-means lists with flat, SQ8 or PQ codes (see module docstring)."""

    kind = "ivf"
    search_params = IVFSearchParams

    def __init__(self, dim: int, metric: str = "cosine", params: IVFParams | None = None, **kw: Any) -> None:
        """``IVFIndex(dim, metric, nlist=..., codec=...)`` or ``IVFIndex(dim, metric, IVFParams(...))``."""
        if not _is_int(dim) or dim < 1:
            raise InvalidArgumentError(f"dim must be a positive integer, got {dim!r}")
        p = params if params is not None else IVFParams(**kw)
        self.dim = int(dim)
        self.metric = kernels.check_metric(metric)
        self.vectors_dtype = p.vectors_dtype
        self.nlist, self.nprobe, self.codec_name = int(p.nlist), int(p.nprobe), p.codec
        self.rerank = None if p.rerank is None else int(p.rerank)
        self.store_full = bool(p.store_full) or p.codec == "flat"
        self.seed, self.lists_per_chunk, self.kmeans_iters = int(p.seed), int(p.lists_per_chunk), int(p.kmeans_iters)
        self.train_min = int(p.train_min) if p.train_min is not None else max(1000, 30 * self.nlist)
        # PQ encodes residuals x - centroid(list) by default (much finer codes on clustered data)
        self.residual = p.codec == "pq" and (p.residual is None or bool(p.residual))
        self.pq_nbits, self.pq_m, self.pq_rotate = int(p.pq_nbits), p.pq_m, bool(p.pq_rotate)
        self.codec: qz.Codec = self._fresh_codec()
        if p.codec == "pq":
            self.pq_m = self.codec.m  # type: ignore[attr-defined]
        self.refine_kind, self.refine_rows, self.refine_m = p.refine, int(p.refine_rows), p.refine_m
        self.refiner: Refiner | None = self._fresh_refiner()
        if self.refiner is not None and self.refine_kind == "pq":
            self.refine_m = self.refiner.m
        self.centroids: np.ndarray | None = None
        self._centroids_f16 = False  # stored as float16 (see ivf_store.storable_centroids)
        # two-level assignment (large nlist), see assign: decided and made at training (so a build's
        # template carries both to its workers), or at first use after a load; None = not decided
        self._grouped: bool | None = None
        self._groups: qz.CentroidGroups | None = None
        self._csq: np.ndarray | None = None
        self._lists: list[IVFList | None] = []
        self._counts = np.zeros(self.nlist, dtype=np.int64)
        self._pending = self._new_pending()
        self._loc: dict[str, tuple[int, int]] | None = {}
        # per-list metadata summaries (filters.summarize) so filtered searches skip lists that
        # cannot match; None = not computed yet (resident lists) or unknown (old manifests)
        self._summaries: list[dict[str, Any] | None] = [None] * self.nlist
        self._init_storage()
        #: probes computed by ``plan`` for ``search`` (and by ``plan_many`` for ``search_many``),
        #: keyed by the query's vector object; see :meth:`_probe_for`
        self._planned: dict[int, tuple[Query, np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ basics

    @property
    def _shared(self) -> bool:
        """Flat codec: the codes *are* the full vectors (stored once)."""
        return self.codec_name == "flat"

    @property
    def trained(self) -> bool:
        return self.centroids is not None

    def _new_list(self) -> IVFList:
        return IVFList.empty(
            self.codec.code_size,
            None if self._shared else self.codec.code_dtype,
            self.dim if self.store_full else None,
        )

    def _new_pending(self) -> IVFList:
        return IVFList.empty(0, None, self.dim)

    def spec(self) -> str:
        """Short description for the manifest, faiss style: ``IVF256,PQ16``, ``IVF128,SQ8``, ``IVF128,Flat``;
        separate refine data adds ``,Refine(f16|SQ8|PQ<m>)``."""
        code = {"flat": "Flat", "sq8": "SQ8", "pq": f"{'O' if self.pq_rotate else ''}PQ{self.pq_m}"}[self.codec_name]
        out = f"IVF{self.nlist},{code}" + (",f16" if self.vectors_dtype == "float16" else "")
        if self.refine_kind is not None:
            out += ",Refine(" + {"float16": "f16", "sq8": "SQ8", "pq": f"PQ{self.refine_m}"}[self.refine_kind] + ")"
        return out

    def params(self) -> dict[str, Any]:
        """The construction parameters as resolved (what the centroids chunk records)."""
        return {
            "nlist": self.nlist, "nprobe": self.nprobe, "codec": self.codec_name, "pq_m": self.pq_m,
            "pq_nbits": self.pq_nbits, "rerank": self.rerank, "store_full": self.store_full, "seed": self.seed,
            "lists_per_chunk": self.lists_per_chunk, "train_min": self.train_min,
            "kmeans_iters": self.kmeans_iters, "residual": self.residual, "vectors_dtype": self.vectors_dtype,
            "refine": self.refine_kind, "refine_rows": self.refine_rows, "refine_m": self.refine_m,
            **({"pq_rotate": True} if self.pq_rotate else {}),
        }

    def __len__(self) -> int:
        return int(self._counts.sum()) + len(self._pending)

    def __repr__(self) -> str:
        return (
            f"IVFIndex(dim={self.dim}, metric={self.metric!r}, nlist={self.nlist}, codec={self.codec_name!r}, "
            f"n={len(self)}, trained={self.trained}, lazy={self.lazy})"
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

    # ------------------------------------------------------------------ training

    def train(self, vectors: Any, progress: Callable[[int, int], Any] | None = None) -> None:
        """Train centroids (k-means) and the codec on ``vectors`` (not added to the index).

        Records already held (pending or in lists) are redistributed over the new lists.
        """
        self._require_resident("train")
        x = kernels.as_matrix(vectors, self.dim)
        if x.shape[0] < self.nlist:
            raise InvalidArgumentError(f"training needs at least nlist={self.nlist} vectors, got {x.shape[0]}")
        x = kernels.prepare(x, self.metric)
        self._fit(x, progress)

    def _fit(self, x: np.ndarray, progress: Callable[[int, int], Any] | None = None,
             centroids: np.ndarray | None = None) -> None:
        """Train on prepared vectors ``x`` and redistribute every record held. ``centroids``: the
        k-means result on ``x`` computed already (a bulk build's choice clustered the same rows)."""
        ids, vecs, codes, metas, ts = self._gather()
        if centroids is None:
            # from nlist 8192 on the mini-batch steps assign two-level too (3M: k-means 252 -> 137 CPU s,
            # probe recall 0.9311 -> 0.9306 at nprobe 14; bench/README.md)
            centroids = qz.kmeans(
                x, self.nlist, iters=self.kmeans_iters, seed=self.seed, progress=progress, metric=self.metric,
                grouped=qz.grouped_pays(self.nlist, self.metric))
        elif centroids.shape != (self.nlist, self.dim):
            raise InvalidArgumentError(f"centroids must be ({self.nlist}, {self.dim}), got {centroids.shape}")
        centroids, f16 = storable_centroids(centroids)
        # nothing better to re-encode from (retrain of PQ/SQ8 without full vectors): keep the
        # codec; keep the codes too unless they are residuals of the old centroids
        keep_codec = codes is not None and not self.store_full
        if keep_codec and self.residual:
            codes = None
        codec = self.codec
        self.centroids, self._centroids_f16 = centroids, f16
        self._csq = kernels.sq_norms(self.centroids)
        self._grouped, self._groups = None, None
        self.centroid_groups()
        if not keep_codec:
            codec = self._fresh_codec()
            if self.residual:
                codec.train(x - centroids[self.assign(x)])
            else:
                codec.train(x)
        self.codec = codec
        if self.refine_kind is not None:
            self.refiner = self._fresh_refiner()
            self._train_refiner(x)
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
        return make_codec(self.codec_name, self.dim, self.metric, self.residual, self.pq_m, self.pq_nbits, self.seed,
                          self.pq_rotate)

    def _fresh_refiner(self) -> Refiner | None:
        if self.refine_kind is None:
            return None
        return Refiner(self.refine_kind, self.dim, self.metric, self.refine_m, self.seed, self.codec, self.residual,
                       self.pq_rotate)

    REFINE_TRAIN = 20_000  # rows the refine code is trained on (a sample, like PQ's codebooks)

    def _train_refiner(self, x: np.ndarray) -> None:
        """Train the refine code on a sample of prepared vectors (after centroids and codec)."""
        assert self.refiner is not None and self.centroids is not None
        if x.shape[0] > self.REFINE_TRAIN:
            rng = np.random.default_rng(self.seed + 1)
            x = x[np.sort(rng.choice(x.shape[0], self.REFINE_TRAIN, replace=False))]
        cents, codes = self._first_level(x)
        self.refiner.train(x, cents, codes)

    def assign(self, x: np.ndarray) -> np.ndarray:
        """The list of every prepared row: its nearest centroid, exactly, or from ``nlist`` >=
        :data:`s5vec.quantizers.GROUPED_MIN_K` on through the centroids' groups (two-level, see
        :func:`s5vec.quantizers.assign_grouped`; 1/8 of the work at 16,384 lists, the same list for
        nearly every row). The one assignment of adds, bulk builds and codec training, so a resident
        index and a bulk-built one put a record in the same list."""
        assert self.centroids is not None
        return np.asarray(qz.assign(x, self.centroids, self.metric, groups=self.centroid_groups()), dtype=np.int64)

    def centroid_groups(self) -> qz.CentroidGroups | None:
        """The groups of the centroids (made once per training, or on first use after a load; a
        pure function of the centroids and seed), or None where exact assignment is used."""
        if self.centroids is None:
            return None
        if self._grouped is None:
            self._grouped = qz.grouped_pays(self.nlist, self.metric)
        if self._grouped and self._groups is None:
            self._groups = qz.group_centroids(self.centroids, self.metric, seed=self.seed)
        return self._groups

    def _first_level(self, x: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """(centroid of each row's list or None, first-level codes) of prepared vectors."""
        assert self.centroids is not None
        if labels is None:
            labels = self.assign(x)
        cents = self.centroids[labels] if self.residual else None
        return cents, self.codec.encode(x if cents is None else x - cents)

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

    def _decode(self, lst: IVFList, number: int, rows: slice | None = None) -> np.ndarray:
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
        self._require_resident("retrain")
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
        self._require_resident("rebalance")
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
        self._require_resident("add to")
        ids, x, metas, ts = check_batch(self.dim, ids, vectors, metadata, timestamps)
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

    def _register(self, number: int, lst: IVFList, start: int) -> None:
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
            labels[s : s + _ADD_BLOCK] = self.assign(x[s : s + _ADD_BLOCK])
            if enc is not None and codes is None:
                block = x[s : s + _ADD_BLOCK]
                if self.residual:
                    block = block - self.centroids[labels[s : s + _ADD_BLOCK]]
                enc[s : s + _ADD_BLOCK] = self.codec.encode(block)
            if self.refiner is not None and enc is not None:
                # keep what the refine chunks will hold, so resident and loaded searches agree
                if s == 0:
                    x = x.copy()
                sl = slice(s, s + _ADD_BLOCK)
                cents = self.centroids[labels[sl]] if self.residual else None
                x[sl] = self.refiner.roundtrip(x[sl], cents, enc[sl])
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
        self._require_resident("delete from")
        if isinstance(ids, str):
            ids = [ids]
        uniq = list(dict.fromkeys(ids))
        loc = self._loc
        assert loc is not None
        missing = [i for i in uniq if not isinstance(i, str) or i not in loc]
        if missing:
            raise UnknownIdError(f"unknown id {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        self._remove(uniq)
        return len(uniq)

    # ------------------------------------------------------------------ lookup

    def _find(self, id: str, chunks: Chunks = NO_CHUNKS) -> tuple[IVFList, int, int] | None:
        """(list, row, list number) of a record among resident lists and ``chunks``, or None."""
        if self._loc is not None:
            hit = self._loc.get(id)
            if hit is None:
                return None
            l, r = hit
            lst = self._pending if l == _PENDING else self._lists[l]
            assert lst is not None
            return lst, r, l
        r = self._pending.row_of(id)
        if r is not None:
            return self._pending, r, _PENDING
        for c, cid in enumerate(self._chunk_cids):
            if cid in chunks:
                for l, lst in self._chunk_lists(c, chunks).items():
                    r = lst.row_of(id)
                    if r is not None:
                        return lst, r, l
        return None

    def _resident_find(self, id: Any) -> tuple[IVFList, int, int]:
        self._require_resident("look up records of")
        hit = self._find(id) if isinstance(id, str) else None
        if hit is None:
            raise UnknownIdError(f"unknown id {id!r}")
        return hit

    def get(self, id: str, chunks: Chunks = NO_CHUNKS) -> Record | None:
        hit = self._find(id, chunks)
        if hit is None:
            return None
        lst, r, _ = hit
        return Record(id, dict(lst.metadata[r]), lst.timestamp(r))

    def __contains__(self, id: object) -> bool:
        self._require_resident("look up records of")
        return isinstance(id, str) and id in self._loc  # type: ignore[operator]

    def metadata(self, id: str) -> dict[str, Any]:
        """Metadata of a record (a copy); a lazy index answers through ``get`` (plan_get first)."""
        lst, r, _ = self._resident_find(id)
        return dict(lst.metadata[r])

    def timestamp(self, id: str) -> float | None:
        """Timestamp of a record (None only for records saved before every record had one)."""
        lst, r, _ = self._resident_find(id)
        return lst.timestamp(r)

    def vector(self, id: str) -> np.ndarray:
        """The stored (prepared) vector of a record: exact when full vectors are kept, else decoded."""
        lst, r, l = self._resident_find(id)
        if lst.vectors is not None:
            return lst.vectors[r].copy()
        return self._decode(lst, l, slice(r, r + 1))[0]

    def items(self) -> Iterator[tuple[str, np.ndarray, dict[str, Any], float | None]]:
        """Every record as ``(id, vector, metadata, timestamp)``; vectors are the stored
        (prepared) vectors, decoded from codes when full vectors are not kept."""
        self._require_resident("list the records of")
        parts = [(_PENDING, self._pending)] + [(l, x) for l, x in enumerate(self._lists) if x is not None]
        for number, lst in parts:
            vecs = lst.vectors if lst.vectors is not None else self._decode(lst, number)
            for r, i in enumerate(lst.ids):
                yield i, vecs[r].copy(), dict(lst.metadata[r]), lst.timestamp(r)

    # ------------------------------------------------------------------ search: the probe

    def _probe_dist(self, q: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """Probed list numbers (nearest first) and the query's distances to every centroid."""
        if self.centroids is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        d = kernels.scan(q, self.centroids, self.metric, self._csq)
        return kernels.top_k(d, nprobe), d

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
        d = kernels.scan(q, self.centroids, self.metric, self._csq)
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

    def _nprobe(self, query: Query) -> int:
        return min(query.params.nprobe or self.nprobe, self.nlist)

    _PLANNED_MAX = 1024  # probes remembered between plan and search (a batch's worth)

    def _probe_for(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        """The probe of ``query``, computed once for its plan and its search. Remembered by the
        query's vector object (a hybrid hands its IVF part a new Query around the same vector)
        and checked against k, filter and params, for the last ``_PLANNED_MAX`` queries."""
        memo = self._planned
        key = id(query.vector)
        got = memo.get(key)
        if got is not None:
            q0 = got[0]
            if (q0.vector is query.vector and q0.k == query.k and q0.filter is query.filter
                    and q0.params == query.params):
                return got[1], got[2]
        probe, cdist = self._probe_filtered(query.vector, self._nprobe(query), query.filter, query.k)
        memo.pop(key, None)
        memo[key] = (query, probe, cdist)
        while len(memo) > self._PLANNED_MAX:
            del memo[next(iter(memo))]
        return probe, cdist

    def probed_lists(self, query: Query) -> list[int]:
        """Numbers of the lists a search of ``query`` probes, nearest centroid first."""
        return [int(l) for l in self._probe_for(query)[0]]

    def plan(self, query: Query) -> list[str]:
        """CIDs of the list chunks the probe of ``query`` reads that are not resident (probe order);
        on a refine round, the refine chunks of its candidates."""
        if isinstance(query.state, RefineState):
            return self._refine_plan(query.state)
        if not self._lazy:
            return []
        probe, _ = self._probe_for(query)
        return self._chunks_of_lists(probe)

    def plan_get(self, id: str) -> list[str]:
        """A lazy index does not know which list holds ``id``: every list chunk, in order."""
        if not self._lazy or self._pending.row_of(id) is not None:
            return []
        return self._chunks_of_lists(range(self.nlist))

    # ------------------------------------------------------------------ search: scoring

    def _default_rerank(self, k: int) -> int:
        if self._shared or not self.store_full:
            return 0
        if self.rerank is not None:
            return self.rerank
        return 10 * k if self.codec_name == "pq" else 4 * k

    def search(self, query: Query, chunks: Chunks = NO_CHUNKS) -> Outcome:
        """Best ``k`` hits of the probed lists (``chunks`` supplies the ones not resident).

        With a quantized codec and full vectors the best ``rerank`` candidates are re-scored
        exactly (``rerank=0`` disables; default 4k for sq8, 10k for pq). A filtered search that
        found fewer than ``k`` matches asks for another round with twice the ``nprobe``."""
        if isinstance(query.state, RefineState):
            return self._search_refined(query, chunks)
        if self._concat_pq():
            return self._finish_all(query, *self._score_pq(query, chunks))
        return self._finish(query, *self._score(query, chunks))

    def _concat_pq(self) -> bool:
        """PQ codes scored with one table shared by every probed list: all of a query's lists are
        scored in one gather over their concatenated codes (a row's distance is a sum over its
        own codes, so it is the same float as scoring its list alone)."""
        return self.codec_name == "pq" and not self._shared and not (self.residual and self.metric == "l2")

    def _score_pq(self, query: Query, chunks: Chunks
                  ) -> tuple[list[IVFList], np.ndarray, np.ndarray, list[bool], list[int]]:
        """:meth:`_score` for :meth:`_concat_pq` indexes, distances concatenated (``_finish_all``)."""
        q = query.vector
        sources: list[IVFList] = []
        parts: list[np.ndarray] = []
        exact: list[bool] = []
        numbers: list[int] = []
        if len(self._pending):
            p = self._pending
            sources.append(p)
            parts.append(kernels.distances(q, p.vectors, self.metric, p.sq if self.metric == "l2" else None))
            exact.append(True)
            numbers.append(_PENDING)
        if self.trained and self._counts.sum() > 0:
            probe, cdist = self._probe_for(query)
            ls = [l for l in probe.tolist() if self._counts[l]]
            if ls:
                lsts = [self._list(l, chunks) for l in ls]
                codes = np.concatenate([x.codes for x in lsts]) if len(lsts) > 1 else lsts[0].codes
                d = self.codec.distances(q, codes, self.codec.distance_table(q))
                if self.residual:  # ip/cosine: dist(q, c) - q.r
                    d += np.repeat(cdist[ls], np.fromiter((len(x) for x in lsts), dtype=np.intp, count=len(lsts)))
                sources.extend(lsts)
                parts.append(d)
                exact.extend([False] * len(lsts))
                numbers.extend(ls)
        sizes = np.fromiter((len(x) for x in sources), dtype=np.intp, count=len(sources))
        all_d = (np.concatenate(parts) if len(parts) > 1 else parts[0]) if parts else np.empty(0, np.float32)
        return sources, all_d, sizes, exact, numbers

    def _finish(self, query: Query, sources: list[IVFList], dists: list[np.ndarray], exact: list[bool],
                numbers: list[int]) -> Outcome:
        """Candidates, filter, re-rank and hits from the scored lists (one query)."""
        if not sources:
            return Outcome()
        # intp, not int64: np.repeat casts its counts to intp 'safely', which int64 -> int32 is not on wasm32 (Pyodide)
        sizes = np.fromiter((d.shape[0] for d in dists), dtype=np.intp, count=len(dists))
        all_d = np.concatenate(dists) if len(dists) > 1 else dists[0]
        return self._finish_all(query, sources, all_d, sizes, exact, numbers)

    def _finish_all(self, query: Query, sources: list[IVFList], all_d: np.ndarray, sizes: np.ndarray,
                    exact: list[bool], numbers: list[int]) -> Outcome:
        """:meth:`_finish` on the distances of all sources concatenated (``sizes`` rows each)."""
        k, flt = query.k, query.filter
        rerank = query.params.rerank
        n_rerank = (self._default_rerank(k) if rerank is None else rerank) if self.store_full and not self._shared else 0
        if not sources:
            return Outcome()
        starts = np.zeros(len(sources) + 1, dtype=np.intp)
        np.cumsum(sizes, out=starts[1:])
        need = max(k, n_rerank)
        if flt is None:
            cand = kernels.top_k(all_d, need)
        else:
            src = np.repeat(np.arange(len(sources)), sizes)
            rows = np.arange(all_d.shape[0]) - np.repeat(starts[:-1], sizes)
            cand = self._filtered_candidates(all_d, src, rows, sources, flt, need)
            nprobe = self._nprobe(query)
            if cand.size < k and self.trained and nprobe < self.nlist:
                # the summaries' bounds were optimistic: another round, probing wider
                return Outcome(widen=query.with_params(nprobe=min(self.nlist, nprobe * 2)))
        if cand.size == 0:
            return Outcome()
        cd = all_d[cand]
        # each candidate's source and row (located for the candidates only, not for every row)
        cs = np.searchsorted(starts, cand, side="right") - 1
        cr = cand - starts[cs]
        if n_rerank > 0:
            approx = ~np.asarray(exact)[cs]
            if approx.any() and any(sources[s].vectors is None for s in np.unique(cs[approx]).tolist()):
                # separate refine data: the candidates' refine chunks are the next round
                return Outcome(widen=query.with_state(RefineState(
                    sources=sources, numbers=numbers, exact=exact, src=cs, rows=cr, dist=cd)))
            cd = self._rerank(query.vector, cd, cs, cr, sources, exact)
        hits = []
        for b in kernels.top_k(cd, k).tolist():
            lst, r = sources[int(cs[b])], int(cr[b])
            hits.append(Hit(lst.ids[r], float(cd[b]), lst.metadata[r]))
        return Outcome(hits)

    def _score(self, query: Query, chunks: Chunks) -> tuple[list[IVFList], list[np.ndarray], list[bool], list[int]]:
        """Distances from the query to every record of the pending buffer and the probed lists
        (sources, their distances, whether those are exact, their list numbers)."""
        q = query.vector
        sources: list[IVFList] = []
        dists: list[np.ndarray] = []
        exact: list[bool] = []
        numbers: list[int] = []
        if len(self._pending):
            p = self._pending
            sources.append(p)
            dists.append(kernels.distances(q, p.vectors, self.metric, p.sq if self.metric == "l2" else None))
            exact.append(True)
            numbers.append(_PENDING)
        if not self.trained or self._counts.sum() == 0:
            return sources, dists, exact, numbers
        probe, cdist = self._probe_for(query)
        per_list_table = self.residual and self.metric == "l2"
        table = None if per_list_table else self.codec.distance_table(q)
        for l in probe.tolist():
            if self._counts[l] == 0:
                continue
            lst = self._list(l, chunks)
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
            numbers.append(l)
        return sources, dists, exact, numbers

    # ------------------------------------------------------------------ many queries at once

    def _batchable(self, query: Query) -> bool:
        """First-round unfiltered queries of a trained index without pending records (and not
        residual PQ under l2, whose tables are per list), scored list by list for all queries.
        PQ with one shared table is not: one gather per query over its concatenated lists is
        cheaper than per-list gathers for all (above all in Pyodide), and its probe is memoised
        from ``plan_many`` to ``search_many`` like a single query's."""
        return (not self._concat_pq() and query.state is None and query.filter is None and self.trained and not len(self._pending)
                and not (self.residual and self.metric == "l2"))

    def _probes_many(self, queries: Sequence[Query]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each query's probe as its single search computes it (memoised from ``plan_many``)."""
        got = [self._probe_for(q) for q in queries]
        return np.stack([g[1] for g in got]), [g[0] for g in got]

    def plan_many(self, queries: Sequence[Query]) -> list[list[str]]:
        """``plan`` of every query, the centroid distances of the batchable ones in one product."""
        if not self._lazy:
            return [self.plan(q) if q.state is not None else [] for q in queries]
        out: list[list[str] | None] = [None] * len(queries)
        batch = [i for i, q in enumerate(queries) if self._batchable(q)]
        if batch:
            _, probes = self._probes_many([queries[i] for i in batch])
            for i, probe in zip(batch, probes):
                out[i] = self._chunks_of_lists(probe)
        return [p if p is not None else self.plan(q) for p, q in zip(out, queries)]

    def search_many(self, queries: Sequence[Query], chunks: Chunks = NO_CHUNKS) -> list[Outcome]:
        """``search`` of every query; the batchable ones share the work: one product for their
        centroid distances, and each probed list scored once for all the queries that probe it
        (one matrix product for flat lists, one table gather for PQ codes)."""
        out: list[Outcome | None] = [None] * len(queries)
        batch = [i for i, q in enumerate(queries) if self._batchable(q)]
        if len(batch) > 1:
            qb = [queries[i] for i in batch]
            cd, probes = self._probes_many(qb)
            qs = np.stack([q.vector for q in qb])
            users: dict[int, list[int]] = {}
            for j, probe in enumerate(probes):
                for l in probe.tolist():
                    if self._counts[l]:
                        users.setdefault(l, []).append(j)
            tables = None
            if self.codec_name == "pq":
                tables = np.stack([self.codec.distance_table(q) for q in qs])
            scored: list[dict[int, tuple[IVFList, np.ndarray]]] = [{} for _ in qb]
            for l, js in users.items():
                lst = self._list(l, chunks)
                sel = np.asarray(js, dtype=np.intp)
                if self._shared:
                    d = kernels.distance_matrix(qs[sel], lst.vectors, self.metric,
                                                lst.sq if self.metric == "l2" else None)
                elif tables is None:  # sq8: decode the list once for all its queries
                    d = kernels.distance_matrix(qs[sel], self.codec.decode(lst.codes), self.metric)
                else:
                    d = kernels.adc_many(tables, lst.codes, sel)
                    if self.residual:
                        d += cd[sel, l][:, None]
                for r, j in enumerate(js):
                    scored[j][l] = (lst, d[r])
            for j, (i, probe) in enumerate(zip(batch, probes)):
                got = scored[j]
                ls = [l for l in probe.tolist() if l in got]
                out[i] = self._finish(queries[i], [got[l][0] for l in ls], [got[l][1] for l in ls],
                                      [self._shared] * len(ls), ls)
        return [o if o is not None else self.search(q, chunks) for o, q in zip(out, queries)]

    def _search_refined(self, query: Query, chunks: Chunks) -> Outcome:
        """Second round of a search with separate refine data: exact distances of the PQ pass's
        candidates from the refine chunks the plan named, then the best ``k``."""
        st: RefineState = query.state
        cd = st.dist.copy()
        approx = np.flatnonzero(~np.asarray(st.exact)[st.src])
        if approx.size:
            R = self.refine_rows
            src, rows = st.src[approx], st.rows[approx]
            key = src.astype(np.int64) * (1 << 32) + rows // R
            blocks, where = np.unique(key, return_inverse=True)
            where = where.reshape(-1)
            parts, resident = [], []
            for k in blocks.tolist():  # the rows of each (source, refine block), once
                s, b = k >> 32, k & 0xFFFFFFFF
                lst = st.sources[s]
                resident.append(lst.vectors is not None)
                if lst.vectors is not None:
                    parts.append(lst.vectors[b * R: (b + 1) * R])
                else:
                    parts.append(self._refine_block(st.numbers[s], lst, b, chunks)[1])
            dist = np.empty(approx.size, dtype=np.float32)
            res = np.asarray(resident)[where]
            for flag in (True, False):  # resident rows as they are; stored codes scored for these rows only
                sel = np.flatnonzero(res == flag)
                if not sel.size:
                    continue
                group = [i for i, r in enumerate(resident) if r == flag]
                sub = [parts[i] for i in group]
                pos = np.full(len(parts), -1, dtype=np.intp)
                pos[group] = np.arange(len(group))
                starts = np.zeros(len(sub), dtype=np.intp)
                if len(sub) > 1:
                    np.cumsum([p.shape[0] for p in sub[:-1]], out=starts[1:])
                pool = np.concatenate(sub) if len(sub) > 1 else sub[0]
                got = pool[starts[pos[where[sel]]] + rows[sel] % R]
                if flag:
                    dist[sel] = kernels.scan(query.vector, got, self.metric)
                else:
                    s_sel = src[sel]
                    dist[sel] = self._refine_distances(query.vector, np.asarray([st.numbers[int(x)] for x in s_sel]),
                                                       [st.sources[int(x)] for x in s_sel], rows[sel], got)
            cd[approx] = dist
        hits = []
        for b in kernels.top_k(cd, query.k):
            lst, r = st.sources[int(st.src[b])], int(st.rows[b])
            hits.append(Hit(lst.ids[r], float(cd[b]), lst.metadata[r]))
        return Outcome(hits)

    def _rerank(self, q: np.ndarray, cd: np.ndarray, cs: np.ndarray, cr: np.ndarray,
                sources: list[IVFList], exact: list[bool]) -> np.ndarray:
        """Exact distances for the candidates whose distance came from quantized codes."""
        approx = ~np.asarray(exact)[cs]
        if not approx.any():
            return cd
        vecs = np.stack([sources[s].vectors[r] for s, r in zip(cs[approx], cr[approx])])
        cd = cd.copy()
        cd[approx] = kernels.distances(q, vecs, self.metric)
        return cd

    @staticmethod
    def _filtered_candidates(
        all_d: np.ndarray, src: np.ndarray, rows: np.ndarray, sources: list[IVFList], flt: Filter, need: int
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
                if flt.matches(fields_of(lst.metadata[r], lst.timestamp(r))):
                    keep.append(i)
                    if len(keep) >= need:
                        break
            block *= 2
        return np.asarray(keep, dtype=np.int64)
