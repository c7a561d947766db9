"""Validation of a batch of records, shared by every index kind so each rejects bad input the same way.

Everything is checked before an index changes anything: ids (non-empty strings of at most 512 bytes,
no duplicates in the batch), vectors (dimension, finite), metadata (maps with string keys, one per id,
bounded in depth and size, numbers finite: :mod:`s5vec.limits`) and
timestamps (finite Unix seconds, one per id).

The one rule for a missing timestamp (:func:`stamp`): a record added without one (no
``timestamps`` at all, or a ``None`` entry) is stamped with the time it is added,
``time.time()``. :mod:`s5vec.api` applies it when it turns user records into columns, so every
index receives numbers; an index used directly applies the same function here.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .. import kernels, limits
from ..errors import InvalidArgumentError


def check_batch(
    dim: int,
    ids: Sequence[str],
    vectors: Any,
    metadata: Sequence[Mapping[str, Any] | None] | None,
    timestamps: Sequence[float | None] | None,
) -> tuple[list[str], np.ndarray, list[dict[str, Any]], np.ndarray]:
    """Return (ids, float32 matrix, metadata dicts, float64 timestamps) or raise before anything changes."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InvalidArgumentError("ids must be a sequence of strings, not a single string")
    ids = list(ids)
    for i in ids:
        limits.check_id(i)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InvalidArgumentError(f"duplicate id {dup!r} in one batch")
    n = len(ids)
    if n == 0:
        if vectors is not None and np.size(vectors) != 0:
            raise InvalidArgumentError("got vectors but no ids")
        return [], np.empty((0, dim), np.float32), [], np.empty(0, np.float64)
    mat = kernels.as_matrix(vectors, dim)
    if mat.shape[0] != n:
        raise InvalidArgumentError(f"{n} ids but {mat.shape[0]} vectors")
    return ids, mat, _metadata(metadata, n, ids), stamp(timestamps, n)


def _metadata(metadata: Any, n: int, ids: Sequence[str]) -> list[dict[str, Any]]:
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, Mapping) or not isinstance(metadata, Iterable):
        raise InvalidArgumentError("metadata must be a sequence of dicts, one per id")
    metas = []
    for m in metadata:
        if m is None:
            metas.append({})
        elif isinstance(m, Mapping) and all(isinstance(k, str) for k in m):
            metas.append(dict(m))
        else:
            raise InvalidArgumentError(f"metadata must be dicts with string keys, got {type(m).__name__}")
    if len(metas) != n:
        raise InvalidArgumentError(f"{n} ids but {len(metas)} metadata entries")
    for i, m in zip(ids, metas):
        limits.check_metadata(m, i)
    return metas


def stamp(timestamps: Any, n: int, now: float | None = None) -> np.ndarray:
    """Float64 Unix seconds, one per record; missing ones (``None``) become ``now`` (default
    ``time.time()``, read once per batch). NaN, infinity and non-numbers are rejected."""
    if timestamps is not None and (isinstance(timestamps, (str, bytes)) or not isinstance(timestamps, Iterable)):
        raise InvalidArgumentError("timestamps must be a sequence of numbers (Unix seconds), one per id")
    tl = [None] * n if timestamps is None else list(timestamps)
    if len(tl) != n:
        raise InvalidArgumentError(f"{n} ids but {len(tl)} timestamps")
    if any(isinstance(t, bool) for t in tl):
        raise InvalidArgumentError("timestamps must be numbers (Unix seconds), not booleans")
    missing = time.time() if now is None else float(now)
    try:
        ts = np.array([missing if t is None else float(t) for t in tl], dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError("timestamps must be numbers (Unix seconds) or None") from None
    if not np.isfinite(ts).all():
        raise InvalidArgumentError("timestamps must be finite numbers (Unix seconds), not NaN or infinity")
    return ts
