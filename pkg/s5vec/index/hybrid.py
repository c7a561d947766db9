"""Hybrid time-routed index: recent vectors in HNSW, historical ones in IVF.

Why: a video platform's new uploads arrive all the time and are searched most; HNSW takes
inserts cheaply and is small enough to load whole. The long tail of old videos is large,
changes rarely, and is best served by IVF lists fetched lazily, list by list.

Routing is by record timestamp: newer than ``now - recent_threshold`` goes to HNSW, older
to IVF. :meth:`migrate` moves records that have aged out of the recent window from HNSW to
IVF: it adds them to IVF first and only then deletes them from HNSW, so a failure part-way
loses nothing, and search de-duplicates by id, so nothing is ever returned twice.
"""
from __future__ import annotations

import re
import time
from dataclasses import replace
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .. import kernels
from ..errors import FormatError, InvalidArgumentError, UnknownIdError
from ..query import NO_CHUNKS, Chunks, Hit, HybridSearchParams, Outcome, Query, Record
from .base import ChunkReader, ChunkWriter
from .hnsw import HNSWIndex
from .ivf import IVFIndex, IVFParams
from .records import check_batch

HNSW_PARAMS = ("M", "ef_construction", "ef_search", "chunk_rows", "seed")
IVF_PARAMS = tuple(f for f in IVFParams.__dataclass_fields__ if f != "seed")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"90d"``, ``"12h"``, ``"1.5y"``."""
    if isinstance(value, bool):
        raise InvalidArgumentError(f"bad duration {value!r}")
    if isinstance(value, (int, float)):
        secs = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwy]?)\s*", value)
        if not m:
            raise InvalidArgumentError(f"bad duration {value!r}; use seconds or e.g. '30d', '12h'")
        secs = float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1)
    else:
        raise InvalidArgumentError(f"bad duration {value!r}")
    if not secs > 0:
        raise InvalidArgumentError("recent_threshold must be positive")
    return secs


def _route(params: Mapping[str, Any], hnsw_keys: tuple[str, ...], ivf_keys: tuple[str, ...],
           error: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword parameters between the HNSW and the IVF part; an unknown key is an error."""
    hp, ip = {}, {}
    for key, val in params.items():
        if key in hnsw_keys:
            hp[key] = val
        elif key in ivf_keys:
            ip[key] = val
        else:
            raise InvalidArgumentError(f"{error} {key!r}")
    return hp, ip


def _check_cap(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(f"recent_max must be a positive integer or None, got {value!r}")
    return int(value)


@lru_cache(maxsize=64)
def _split_params(p: HybridSearchParams) -> tuple[Any, Any]:
    return p.hnsw(), p.ivf()


class HybridIndex:
    kind = "hybrid"
    search_params = HybridSearchParams

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        recent_threshold: Any = "30d",
        clock: Callable[[], float] | None = None,
        hnsw: Mapping[str, Any] | None = None,
        ivf: Mapping[str, Any] | None = None,
        recent_max: int | None = None,
        **params: Any,
    ) -> None:
        self.dim = int(dim)
        self.metric = kernels.check_metric(metric)
        self.recent_threshold = parse_duration(recent_threshold)
        self.recent_max = _check_cap(recent_max)
        self.clock = clock or time.time
        hp, ip = _route(params, HNSW_PARAMS, IVF_PARAMS, "unknown hybrid parameter")
        hp, ip = {**(hnsw or {}), **hp}, {**(ivf or {}), **ip}
        # the recent part is capped and searched whole in every round: never a lazy base layer
        self.recent = HNSWIndex(self.dim, metric=self.metric, lazy_base=False, **hp)
        self.historical = IVFIndex(self.dim, metric=self.metric, **ip)

    def spec(self) -> str:
        days = self.recent_threshold / 86400
        cap = f",max={self.recent_max}" if self.recent_max else ""
        return f"Hybrid({self.recent.spec()}|{self.historical.spec()};recent={days:.4g}d{cap})"

    # -- routing ----------------------------------------------------------------
    def cutoff(self, now: float | None = None) -> float:
        return (self.clock() if now is None else now) - self.recent_threshold

    def _part_of(self, id: str):
        if id in self.recent:
            return self.recent
        if id in self.historical:
            return self.historical
        return None

    def add(
        self,
        ids: Sequence[str],
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        timestamps: Sequence[float] | None = None,
        progress: Callable[[int, int], None] | None = None,
        now: float | None = None,
    ) -> None:
        ids, mat, metas, ts = check_batch(self.dim, ids, vectors, metadata, timestamps)
        if timestamps is None:  # stamped with the time they are added: recent by definition
            ts = np.full(len(ids), self.clock() if now is None else now, np.float64)
        recent = ts >= self.cutoff(now)
        # An upsert may move a record between parts: drop the old copy where it would not be replaced.
        for part, mask in ((self.recent, ~recent), (self.historical, recent)):
            stale = [i for i, m in zip(ids, mask) if m and i in part]
            if stale:
                part.delete(stale)
        total, done = len(ids), 0
        for part, mask in ((self.recent, recent), (self.historical, ~recent)):
            sel = np.flatnonzero(mask)
            if sel.size == 0:
                continue

            def sub_progress(d: int, _t: int, base: int = done) -> None:
                if progress:
                    progress(base + d, total)

            part.add([ids[i] for i in sel], mat[sel], [metas[i] for i in sel], ts[sel], progress=sub_progress)
            done += int(sel.size)
        if progress:
            progress(total, total)

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(ids))
        unknown = [i for i in ids if self._part_of(i) is None]
        if unknown:
            raise UnknownIdError(f"unknown id(s): {', '.join(map(str, unknown[:5]))}")
        rec = [i for i in ids if i in self.recent]
        hist = [i for i in ids if i not in self.recent]
        if rec:
            self.recent.delete(rec)
        if hist:
            self.historical.delete(hist)
        return len(ids)

    def migrate(self, now: float | None = None, batch: int = 10_000) -> int:
        """Move records older than the recent window from HNSW to IVF; returns how many moved."""
        cutoff = self.cutoff(now)
        aged = [(i, v, m, t) for i, v, m, t in self.recent.items() if t < cutoff]
        for lo in range(0, len(aged), batch):
            part = aged[lo: lo + batch]
            ids = [a[0] for a in part]
            self.historical.add(ids, np.stack([a[1] for a in part]), [a[2] for a in part], [a[3] for a in part])
            self.recent.delete(ids)
        if aged and hasattr(self.recent, "vacuum"):
            self.recent.vacuum()
        # recent uploads can be about new topics that all land in a few old lists: retrain then
        if aged and self.historical.trained and self.historical.needs_rebalance():
            self.historical.rebalance()
        return len(aged)

    def enforce_cap(self) -> int:
        """Keep the HNSW part (loaded whole at open) at most ``recent_max`` records: the oldest
        beyond the cap move to IVF (added there first, then deleted here). Runs at every save
        (publish and commit). Returns how many moved."""
        extra = len(self.recent) - self.recent_max if self.recent_max else 0
        if extra <= 0:
            return 0
        items = sorted(self.recent.items(), key=lambda it: (it[3], it[0]))[:extra]
        for lo in range(0, len(items), 10_000):
            part = items[lo: lo + 10_000]
            ids = [a[0] for a in part]
            self.historical.add(ids, np.stack([a[1] for a in part]), [a[2] for a in part], [a[3] for a in part])
            self.recent.delete(ids)
        self.recent.vacuum()
        return extra

    # -- queries ----------------------------------------------------------------
    @staticmethod
    def _parts(query: Query) -> tuple[Query, Query]:
        """The query as its HNSW part and as its IVF part (same vector object, k, filter, state);
        built directly, not with ``dataclasses.replace`` (a batch builds thousands of them)."""
        hp, ip = _split_params(query.params)
        v, k, f, st = query.vector, query.k, query.filter, query.state
        return Query(v, k, f, hp, st), Query(v, k, f, ip, st)

    def plan(self, query: Query) -> list[str]:
        return self.historical.plan(self._parts(query)[1]) if len(self.historical) else []

    def search(self, query: Query, chunks: Chunks = NO_CHUNKS) -> Outcome:
        """Both parts, merged by distance; an id in both (mid-migration) is returned once."""
        hq, iq = self._parts(query)
        out = self.historical.search(iq, chunks) if len(self.historical) else None
        if out is not None and out.widen is not None:
            return self._merge(query, out, [])
        return self._merge(query, out, self.recent.search(hq).hits if len(self.recent) else [])

    def plan_many(self, queries: Sequence[Query]) -> list[list[str]]:
        if not len(self.historical):
            return [[] for _ in queries]
        return self.historical.plan_many([self._parts(q)[1] for q in queries])

    def search_many(self, queries: Sequence[Query], chunks: Chunks = NO_CHUNKS) -> list[Outcome]:
        """``search`` of every query; the IVF part scores them together (``IVFIndex.search_many``)
        and the queries it has answered walk the HNSW part together (``HNSWIndex.search_many``)."""
        parts = [self._parts(q) for q in queries]
        outs = (self.historical.search_many([p[1] for p in parts], chunks) if len(self.historical)
                else [None] * len(queries))
        done = [i for i, o in enumerate(outs) if o is None or o.widen is None]
        recent: dict[int, list[Hit]] = {}
        if done and len(self.recent):
            got = self.recent.search_many([parts[i][0] for i in done])
            recent = {i: o.hits for i, o in zip(done, got)}
        return [self._merge(q, o, recent.get(i, [])) for i, (q, o) in enumerate(zip(queries, outs))]

    def _merge(self, query: Query, out: Outcome | None, recent: list[Hit]) -> Outcome:
        """The IVF part's outcome and the HNSW part's hits (of ``query``) as one outcome."""
        best: dict[str, Any] = {}
        if out is not None:
            if out.widen is not None:  # a wider probe, or the refine round: carry its state
                w = out.widen
                return Outcome(widen=replace(query.with_params(nprobe=w.params.nprobe), state=w.state))
            for h in out.hits:
                best[h.id] = h
        for h in recent:
            if h.id not in best or h.distance < best[h.id].distance:
                best[h.id] = h
        return Outcome(sorted(best.values(), key=lambda h: (h.distance, h.id))[: query.k])

    def plan_get(self, id: str) -> list[str]:
        return [] if id in self.recent else self.historical.plan_get(id)

    def get(self, id: str, chunks: Chunks = NO_CHUNKS) -> Record | None:
        return self.recent.get(id) or self.historical.get(id, chunks)

    def plan_all(self) -> list[str]:
        return self.historical.plan_all()

    def load_all(self, chunks: Chunks) -> None:
        self.historical.load_all(chunks)

    def metadata(self, id: str) -> dict[str, Any]:
        part = self._part_of(id)
        if part is None:
            raise UnknownIdError(f"unknown id: {id}")
        return part.metadata(id)

    def timestamp(self, id: str) -> float:
        part = self._part_of(id)
        if part is None:
            raise UnknownIdError(f"unknown id: {id}")
        return part.timestamp(id)

    def items(self) -> Iterator[tuple[str, np.ndarray, dict[str, Any], float]]:
        yield from self.recent.items()
        yield from self.historical.items()

    def __len__(self) -> int:
        return len(self.recent) + len(self.historical)

    def __contains__(self, id: object) -> bool:
        return id in self.recent or id in self.historical

    # -- persistence ------------------------------------------------------------
    def save(self, writer: ChunkWriter) -> dict[str, Any]:
        self.enforce_cap()
        out = {"dim": self.dim, "metric": self.metric, "recent_threshold": self.recent_threshold,
               "recent": self.recent.save(writer), "historical": self.historical.save(writer)}
        if self.recent_max:
            out["recent_max"] = self.recent_max
        return out

    @classmethod
    def load(cls, desc: Mapping[str, Any], reader: ChunkReader) -> "HybridIndex":
        try:
            obj = cls.__new__(cls)
            obj.dim, obj.metric = int(desc["dim"]), kernels.check_metric(desc["metric"])
            obj.recent_threshold = parse_duration(desc["recent_threshold"])
            obj.recent_max = _check_cap(desc.get("recent_max"))
            obj.clock = time.time
            obj.recent = HNSWIndex.load(desc["recent"], reader)
            if obj.recent.plan_all():
                raise FormatError("a hybrid index's recent (HNSW) part must not have a lazy base layer")
            obj.recent.lazy_base = False
            obj.historical = IVFIndex.load(desc["historical"], reader)
        except (KeyError, TypeError, InvalidArgumentError) as exc:
            raise FormatError(f"bad hybrid index descriptor: {exc}") from None
        return obj
