"""Validation of a batch of records, shared by every index kind so each rejects bad input the same way."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from .. import kernels
from ..errors import InvalidArgumentError


def check_batch(
    dim: int,
    ids: Sequence[str],
    vectors: Any,
    metadata: Sequence[Mapping[str, Any] | None] | None,
    timestamps: Sequence[float] | None,
) -> tuple[list[str], np.ndarray, list[dict[str, Any]], np.ndarray]:
    """Return (ids, float32 matrix, metadata dicts, float64 timestamps) or raise before anything changes."""
    if isinstance(ids, (str, bytes)):
        raise InvalidArgumentError("ids must be a sequence of strings, not a single string")
    ids = list(ids)
    for i in ids:
        if not isinstance(i, str) or not i:
            raise InvalidArgumentError(f"ids must be non-empty strings, got {i!r}")
    if len(set(ids)) != len(ids):
        raise InvalidArgumentError("duplicate ids in one batch")
    mat = kernels.as_matrix(vectors, dim) if ids else np.empty((0, dim), np.float32)
    if mat.shape[0] != len(ids):
        raise InvalidArgumentError(f"{len(ids)} ids but {mat.shape[0]} vectors")
    if metadata is None:
        metas: list[dict[str, Any]] = [{} for _ in ids]
    else:
        metas = [dict(m) if m is not None else {} for m in _checked_meta(metadata)]
        if len(metas) != len(ids):
            raise InvalidArgumentError(f"{len(ids)} ids but {len(metas)} metadata entries")
    if timestamps is None:
        ts = np.zeros(len(ids), dtype=np.float64)
    else:
        try:
            ts = np.asarray(list(timestamps), dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidArgumentError("timestamps must be numbers (Unix seconds)") from None
        if ts.shape != (len(ids),) or not all(math.isfinite(t) for t in ts):
            raise InvalidArgumentError("need one finite timestamp per id")
    return ids, mat, metas, ts


def _checked_meta(metadata: Sequence[Any]) -> Sequence[Any]:
    for m in metadata:
        if m is not None and not isinstance(m, Mapping):
            raise InvalidArgumentError(f"metadata must be objects (dicts), got {type(m).__name__}")
    return metadata
