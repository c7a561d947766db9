"""The Index protocol every index kind implements, and the chunk I/O protocols they persist through.

Contract (all kinds):
- ids are ``str``; vectors are float32 of the index dimension; metadata is a CBOR-able ``dict``;
  timestamps are Unix seconds (``float``; a record added without one is stamped with the time it
  was added, see :func:`s5vec.index.records.stamp`).
- Queries arrive *prepared* (:class:`s5vec.query.Query`, built once by :func:`s5vec.api.prepare_query`):
  indexes do not validate the vector, ``k``, the filter or the search parameters again.
- Plan, then execute: an index never fetches. ``plan(query)`` lists the CIDs of every chunk the
  search will read (the request layer fetches the missing ones in parallel through the store, which
  verifies and caches them), then ``search(query, chunks)`` runs on what it was handed and returns an
  :class:`s5vec.query.Outcome`: the hits (distances as in :mod:`s5vec.kernels`, lower is better,
  best first), or a wider query for another plan/fetch/search round.
- ``plan_get(id)`` / ``get(id, chunks)`` are the same two steps for reading one record.
- A filter is a compiled :class:`s5vec.filters.Filter` (or ``None``); filtered-out records are never returned.
- Every validation error in ``add``/``delete`` is raised before any state changes.

Persistence: ``save(writer)`` writes the index as chunks and returns a CBOR-able *descriptor*
(plain types and CID strings) that goes in the manifest; ``load(desc, reader)`` rebuilds it from
the chunks the request layer fetched at open time.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..query import Chunks, Outcome, Query, Record


class ChunkWriter(Protocol):
    """Writes one chunk (a dict of plain values and NumPy arrays) and returns its CID."""

    def put(self, kind: str, body: Mapping[str, Any]) -> str: ...


class ChunkReader(Protocol):
    """Reads one chunk by CID (verified against the CID, decoded, checked to be of ``kind``)."""

    def get(self, cid: str, kind: str) -> dict[str, Any]: ...


@runtime_checkable
class Index(Protocol):
    kind: str
    dim: int
    metric: str
    #: the frozen dataclass of this kind's search parameters (see :mod:`s5vec.query`)
    search_params: ClassVar[type]

    def add(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        timestamps: Sequence[float] | None = None,
    ) -> None:
        """Insert records; an id already present is replaced (upsert)."""
        ...

    def delete(self, ids: Iterable[str]) -> int:
        """Remove records; raises UnknownIdError (changing nothing) if any id is unknown. Returns count."""
        ...

    def plan(self, query: Query) -> list[str]:
        """CIDs of the chunks ``search(query, ...)`` reads (empty for a fully resident index)."""
        ...

    def search(self, query: Query, chunks: Chunks) -> Outcome:
        """Best ``query.k`` hits from resident data plus ``chunks`` (decoded bodies by CID)."""
        ...

    def plan_get(self, id: str) -> list[str]:
        """CIDs of the chunks that may hold ``id`` (empty when it is resident or absent)."""
        ...

    def get(self, id: str, chunks: Chunks) -> Record | None:
        """The record ``id`` from resident data plus ``chunks``, or None when it is not there."""
        ...

    def __len__(self) -> int: ...

    def save(self, writer: ChunkWriter) -> dict[str, Any]: ...

    def spec(self) -> str:
        """A short description for the manifest, e.g. ``HNSW16`` or ``IVF256,PQ16``."""
        ...
