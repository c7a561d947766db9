"""The Index protocol every index kind implements, and the chunk I/O protocols they persist through.

Contract (all kinds):
- ids are ``str``; vectors are float32 of the index dimension; metadata is a CBOR-able ``dict``;
  timestamps are Unix seconds (``float``).
- ``search`` returns ``[(id, distance)]`` best first, *distances* as defined in :mod:`s5vec.kernels`
  (lower is better); :func:`s5vec.kernels.to_score` converts them for users.
- A filter is a compiled :class:`s5vec.filters.Filter` (or ``None``); filtered-out records are never returned.
- Every validation error is raised before any state changes.

Persistence: ``save(writer)`` writes the index as chunks and returns a CBOR-able *descriptor*
(plain types and CID strings) that goes in the manifest; ``load(desc, reader)`` rebuilds it.
Indexes that fetch lazily (IVF) report, through ``chunks_for``, which chunk CIDs a search
would read that are not loaded yet, so the caller can fetch them in parallel first.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..filters import Filter


class ChunkWriter(Protocol):
    """Writes one chunk (a CBOR-able dict; numpy arrays allowed) and returns its CID."""

    def put(self, kind: str, body: Mapping[str, Any]) -> str: ...


class ChunkReader(Protocol):
    """Reads one chunk by CID (verified against the CID, decoded, checked to be of ``kind``)."""

    def get(self, cid: str, kind: str) -> dict[str, Any]: ...


@runtime_checkable
class Index(Protocol):
    kind: str
    dim: int
    metric: str

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

    def search(
        self, query: np.ndarray, k: int = 10, filter: Filter | None = None, **params: Any
    ) -> list[tuple[str, float]]:
        """Best ``k`` (id, distance) pairs for one query vector, best first."""
        ...

    def metadata(self, id: str) -> dict[str, Any]:
        """Metadata of a record (at least of every id the last search returned)."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, id: object) -> bool: ...

    def save(self, writer: ChunkWriter) -> dict[str, Any]: ...

    def spec(self) -> str:
        """A short description for the manifest, e.g. ``HNSW16`` or ``IVF256,PQ16``."""
        ...

    def chunks_for(self, query: np.ndarray, k: int = 10, **params: Any) -> list[str]:
        """CIDs of not-yet-loaded chunks that ``search`` with these arguments would read."""
        ...
