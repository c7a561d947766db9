"""The prepared query every index receives, and the typed search parameters of each kind.

Why one object: a query is validated and normalised exactly once, in :mod:`s5vec.api`
(:func:`s5vec.api.prepare_query`); indexes trust it and check nothing again. Each index kind
declares its search parameters as a frozen dataclass (``search_params`` on the class); a
user's ``params`` dict is turned into it by :func:`build_params`, which rejects unknown or
mistyped keys naming the accepted ones.

The index protocol built on it (see :mod:`s5vec.index.base`):

    plan(query)            -> [chunk CID, ...]   every chunk the search will read (may be cached)
    search(query, chunks)  -> Outcome            ``chunks`` maps those CIDs to decoded bodies

An :class:`Outcome` either holds the hits or, when a filtered search found too few matches in
what it was handed, a wider query to run another round with (plan -> fetch -> search again).
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

import numpy as np

from .errors import InvalidArgumentError
from .filters import Filter

#: decoded chunk bodies handed to ``Index.search``, keyed by CID
Chunks = Mapping[str, Mapping[str, Any]]
#: the empty hand-over, for indexes that are fully resident
NO_CHUNKS: Chunks = MappingProxyType({})


@dataclass(frozen=True)
class Query:
    """A validated query: ``vector`` is float32, prepared for the index metric (unit length for
    cosine); ``k`` is in 1..10000; ``filter`` is compiled; ``params`` is the kind's dataclass."""

    vector: np.ndarray
    k: int
    filter: Filter | None = None
    params: Any = None

    def with_params(self, **changes: Any) -> "Query":
        return dataclasses.replace(self, params=dataclasses.replace(self.params, **changes))


class Hit(NamedTuple):
    """One result: ``distance`` as in :mod:`s5vec.kernels` (lower is better)."""

    id: str
    distance: float
    metadata: dict[str, Any]


@dataclass
class Outcome:
    """What one search round gives: the hits, or (``widen`` set) a wider query to run next."""

    hits: list[Hit] = field(default_factory=list)
    widen: Query | None = None


class Record(NamedTuple):
    """One stored record as ``Database.get`` returns it."""

    id: str
    metadata: dict[str, Any]
    timestamp: float | None


# -- typed search parameters --------------------------------------------------------------
# A field's ``metadata["min"]`` is its lower bound; every field is an optional integer
# (None = the index's default).

def _int_field(minimum: int, doc: str) -> Any:
    return field(default=None, metadata={"min": minimum, "doc": doc})


@dataclass(frozen=True)
class FlatSearchParams:
    """The flat index is exact: it takes no search parameters."""


@dataclass(frozen=True)
class HNSWSearchParams:
    ef: int | None = _int_field(1, "beam width (default the index's ef_search, never below k)")


@dataclass(frozen=True)
class IVFSearchParams:
    nprobe: int | None = _int_field(1, "lists probed (default the index's nprobe)")
    rerank: int | None = _int_field(0, "quantized candidates re-scored exactly (0 = off)")


@dataclass(frozen=True)
class HybridSearchParams:
    """Union of the parts' parameters: ``ef`` goes to HNSW, ``nprobe``/``rerank`` to IVF."""

    ef: int | None = _int_field(1, "HNSW beam width")
    nprobe: int | None = _int_field(1, "IVF lists probed")
    rerank: int | None = _int_field(0, "IVF exact re-scoring depth")

    def hnsw(self) -> HNSWSearchParams:
        return HNSWSearchParams(ef=self.ef)

    def ivf(self) -> IVFSearchParams:
        return IVFSearchParams(nprobe=self.nprobe, rerank=self.rerank)


_MAX_PARAM = 1 << 31


def build_params(cls: type, raw: Mapping[str, Any] | None, kind: str) -> Any:
    """``cls(**raw)`` after checking every key is a field of ``cls`` and every value an integer
    in range; raises :class:`InvalidArgumentError` naming the accepted keys otherwise."""
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise InvalidArgumentError(f"search params must be an object, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    accepted = ", ".join(fields) if fields else "none"
    out: dict[str, Any] = {}
    for key, val in raw.items():
        f = fields.get(key) if isinstance(key, str) else None
        if f is None:
            raise InvalidArgumentError(
                f"unknown search parameter {key!r} for a {kind} index; accepted: {accepted}")
        if val is None:
            continue
        if isinstance(val, float) and val.is_integer():
            val = int(val)  # JSON numbers from the bridge may arrive as floats
        lo = f.metadata.get("min", 0)
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or not lo <= int(val) <= _MAX_PARAM:
            raise InvalidArgumentError(
                f"search parameter {key!r} must be an integer in {lo}..{_MAX_PARAM}, got {val!r}")
        out[key] = int(val)
    return cls(**out)
