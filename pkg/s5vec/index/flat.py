"""Exact (brute-force) index: the reference every approximate index is tested against.

One matrix-vector product per query over all live rows; a filter is applied by walking
candidates in distance order, so a selective filter costs a sort only when it is needed.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .. import kernels
from ..errors import FormatError, UnknownIdError
from ..filters import Filter, fields_of
from ..query import NO_CHUNKS, Chunks, FlatSearchParams, Hit, Outcome, Query, Record
from .base import ChunkReader, ChunkWriter
from .records import check_batch


class FlatIndex:
    kind = "flat"
    search_params = FlatSearchParams

    def __init__(self, dim: int, metric: str = "cosine", chunk_rows: int = 4096) -> None:
        self.dim = int(dim)
        self.metric = kernels.check_metric(metric)
        self.chunk_rows = int(chunk_rows)
        self._vecs = np.empty((0, self.dim), np.float32)
        self._sq = np.empty(0, np.float32)
        self._ids: list[str] = []
        self._meta: list[dict[str, Any]] = []
        self._ts = np.empty(0, np.float64)
        self._slot: dict[str, int] = {}

    # -- mutation -------------------------------------------------------------
    def add(
        self,
        ids: Sequence[str],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        timestamps: Sequence[float] | None = None,
        progress: Any = None,
    ) -> None:
        ids, mat, metas, ts = check_batch(self.dim, ids, vectors, metadata, timestamps)
        replaced = [i for i in ids if i in self._slot]
        if replaced:
            self._remove(replaced)
        mat = kernels.prepare(mat, self.metric)
        base = len(self._ids)
        self._vecs = np.concatenate([self._vecs, mat]) if base else mat.copy()
        self._sq = kernels.sq_norms(self._vecs)
        self._ids.extend(ids)
        self._meta.extend(metas)
        self._ts = np.concatenate([self._ts, ts])
        for off, i in enumerate(ids):
            self._slot[i] = base + off
        if progress:
            progress(len(ids), len(ids))

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(ids))
        unknown = [i for i in ids if i not in self._slot]
        if unknown:
            raise UnknownIdError(f"unknown id(s): {', '.join(map(str, unknown[:5]))}")
        self._remove(ids)
        return len(ids)

    def _remove(self, ids: list[str]) -> None:
        drop = np.array(sorted(self._slot[i] for i in ids), dtype=np.int64)
        keep = np.ones(len(self._ids), bool)
        keep[drop] = False
        self._vecs = self._vecs[keep]
        self._sq = self._sq[keep]
        self._ts = self._ts[keep]
        self._ids = [x for x, k in zip(self._ids, keep) if k]
        self._meta = [x for x, k in zip(self._meta, keep) if k]
        self._slot = {x: n for n, x in enumerate(self._ids)}

    # -- queries --------------------------------------------------------------
    def plan(self, query: Query) -> list[str]:
        return []  # loaded whole

    def search(self, query: Query, chunks: Chunks = NO_CHUNKS) -> Outcome:
        """Exact top ``k``: one matrix-vector product over every row."""
        if not self._ids:
            return Outcome()
        k = query.k
        dist = kernels.distances(query.vector, self._vecs, self.metric, self._sq)
        idx = kernels.top_k(dist, k) if query.filter is None else self._filtered_top_k(dist, k, query.filter)
        return Outcome([Hit(self._ids[i], float(dist[i]), self._meta[i]) for i in idx])

    def plan_get(self, id: str) -> list[str]:
        return []

    def get(self, id: str, chunks: Chunks = NO_CHUNKS) -> Record | None:
        s = self._slot.get(id)
        return None if s is None else Record(id, self._meta[s], float(self._ts[s]))

    def _filtered_top_k(self, dist: np.ndarray, k: int, flt: Filter) -> list[int]:
        n = dist.shape[0]
        window = min(n, max(4 * k, 64))
        seen = 0
        out: list[int] = []
        while True:
            order = kernels.top_k(dist, window)
            for i in order[seen:]:
                if flt.matches(fields_of(self._meta[i], self._ts[i])):
                    out.append(int(i))
                    if len(out) == k:
                        return out
            if window >= n:
                return out
            seen, window = window, min(n, window * 4)

    def metadata(self, id: str) -> dict[str, Any]:
        try:
            return self._meta[self._slot[id]]
        except KeyError:
            raise UnknownIdError(f"unknown id: {id}") from None

    def timestamp(self, id: str) -> float:
        if id not in self._slot:
            raise UnknownIdError(f"unknown id: {id}")
        return float(self._ts[self._slot[id]])

    def vector(self, id: str) -> np.ndarray:
        if id not in self._slot:
            raise UnknownIdError(f"unknown id: {id}")
        return self._vecs[self._slot[id]]

    def ids(self) -> list[str]:
        return list(self._ids)

    def items(self) -> Iterator[tuple[str, np.ndarray, dict[str, Any], float]]:
        for n, i in enumerate(self._ids):
            yield i, self._vecs[n], self._meta[n], float(self._ts[n])

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id: object) -> bool:
        return id in self._slot

    def spec(self) -> str:
        return "Flat"

    # -- persistence ----------------------------------------------------------
    def save(self, writer: ChunkWriter) -> dict[str, Any]:
        cids = []
        for lo in range(0, len(self._ids), self.chunk_rows):
            hi = min(lo + self.chunk_rows, len(self._ids))
            cids.append(writer.put("flat_rows", {
                "ids": self._ids[lo:hi], "vectors": self._vecs[lo:hi],
                "metadata": self._meta[lo:hi], "timestamps": self._ts[lo:hi],
            }))
        return {"dim": self.dim, "metric": self.metric, "chunk_rows": self.chunk_rows, "rows": cids}

    @classmethod
    def load(cls, desc: Mapping[str, Any], reader: ChunkReader) -> "FlatIndex":
        try:
            dim, metric = int(desc["dim"]), str(desc["metric"])
        except (KeyError, TypeError, ValueError):
            raise FormatError("flat index descriptor lacks dim/metric") from None
        idx = cls(dim, metric, chunk_rows=int(desc.get("chunk_rows", 4096)))
        ids: list[str] = []
        vecs: list[np.ndarray] = []
        metas: list[dict[str, Any]] = []
        ts: list[np.ndarray] = []
        for cid in desc.get("rows", []):
            body = reader.get(cid, "flat_rows")
            try:
                v = np.asarray(body["vectors"], np.float32).reshape(-1, dim)
                if not (len(body["ids"]) == v.shape[0] == len(body["metadata"]) == len(body["timestamps"])):
                    raise ValueError("column lengths differ")
            except (KeyError, ValueError, TypeError) as exc:
                raise FormatError(f"bad flat_rows chunk {cid}: {exc}") from None
            ids.extend(body["ids"])
            vecs.append(v)
            metas.extend(body["metadata"])
            ts.append(np.asarray(body["timestamps"], np.float64))
        if ids:
            idx._vecs = np.concatenate(vecs)
            idx._sq = kernels.sq_norms(idx._vecs)
            idx._ts = np.concatenate(ts)
        idx._ids, idx._meta = ids, metas
        idx._slot = {x: n for n, x in enumerate(ids)}
        if len(idx._slot) != len(ids):
            raise FormatError("duplicate ids in flat index chunks")
        return idx
