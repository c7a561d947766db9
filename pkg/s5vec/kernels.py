"""Numeric kernels: the only place that computes a distance.

Every index works in *distances* (lower is better) so that merging and top-k are
metric-agnostic; :func:`to_score` turns a distance into the user-facing score at
the edge (cosine similarity, inner product, or Euclidean distance).

Cosine is implemented as inner product on unit vectors: callers normalise with
:func:`prepare` on insert and on query, so the hot loop is one matrix-vector product.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

import numpy as np

from .errors import DimensionError, InvalidArgumentError, InvalidVectorError

METRICS: tuple[str, ...] = ("cosine", "l2", "ip")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InvalidArgumentError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    return metric


def as_matrix(vectors: object, dim: int | None = None) -> np.ndarray:
    """Validate a batch of vectors: 2-d, finite, float32, C-contiguous; copies only if needed."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"vectors must be numbers: {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise InvalidVectorError(f"expected a 2-d array of vectors, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionError(f"vector has dimension {arr.shape[1]}, index has dimension {dim}")
    if not np.isfinite(arr).all():
        raise InvalidVectorError("vector contains NaN or infinity")
    return np.ascontiguousarray(arr)


def as_vector(vector: object, dim: int | None = None) -> np.ndarray:
    """Validate one query vector; returns a 1-d float32 array (called once per query, by api)."""
    if not isinstance(vector, np.ndarray):
        try:
            vector = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidVectorError(f"vector must be numbers: {exc}") from None
    if vector.ndim != 1:
        raise InvalidVectorError(f"expected a 1-d vector, got shape {vector.shape}")
    return as_matrix(vector, dim)[0]


def prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Bring stored or query vectors into the form the metric's kernel expects.

    For cosine, rows are scaled to unit length (zero rows stay zero); other metrics are unchanged.
    """
    if metric != "cosine":
        return vectors
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)


def sq_norms(vectors: np.ndarray) -> np.ndarray:
    """Squared row norms, kept beside L2 data so distances cost one matmul."""
    return np.einsum("ij,ij->i", vectors, vectors, dtype=np.float32)


def distances(query: np.ndarray, data: np.ndarray, metric: str, data_sq: np.ndarray | None = None) -> np.ndarray:
    """Distances from one prepared query to every row of prepared ``data`` (lower is better).

    cosine: 1 - q.x ; ip: -q.x ; l2: squared Euclidean ||q - x||^2 (via norms, clamped at 0).
    """
    dots = data @ query
    if metric == "l2":
        if data_sq is None:
            data_sq = sq_norms(data)
        d = data_sq - 2.0 * dots + float(query @ query)
        return np.maximum(d, 0.0, out=d)
    if metric == "cosine":
        return 1.0 - dots
    return -dots


_ROWWISE_EINSUM = sys.platform == "emscripten"


def scan(query: np.ndarray, data: np.ndarray, metric: str, data_sq: np.ndarray | None = None) -> np.ndarray:
    """:func:`distances` by the faster exact route on this platform: NumPy's ``einsum`` in
    Pyodide (its matmul has no optimised BLAS there; einsum is ~1.7x faster for 1024 x 384),
    BLAS gemv elsewhere. Deterministic per platform, so plan and search, one query and a batch,
    agree bit for bit."""
    if not _ROWWISE_EINSUM:
        return distances(query, data, metric, data_sq)
    dots = np.einsum("nd,d->n", data, query)
    if metric == "l2":
        if data_sq is None:
            data_sq = sq_norms(data)
        d = data_sq - 2.0 * dots + float(np.einsum("d,d->", query, query))
        return np.maximum(d, 0.0, out=d)
    return dot_distances(dots, metric)


def dot_distances(dots: np.ndarray, metric: str) -> np.ndarray:
    """cosine / ip distances from inner products ``dots`` (overwritten): 1 - dot, -dot."""
    if metric == "cosine":
        return np.subtract(1.0, dots, out=dots)
    return np.negative(dots, out=dots)


def row_dots(data: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``data @ query`` by the route :func:`scan` takes on this platform (einsum in Pyodide)."""
    if _ROWWISE_EINSUM:
        return np.einsum("nd,d->n", data, query)
    return data @ query


def distance_matrix(queries: np.ndarray, data: np.ndarray, metric: str, data_sq: np.ndarray | None = None) -> np.ndarray:
    """Distances (queries x rows) as :func:`distances` gives them row by row, in one matrix
    product (batched search, the tuner's held-out checks)."""
    dots = queries @ data.T
    if metric == "l2":
        if data_sq is None:
            data_sq = sq_norms(data)
        d = data_sq[None, :] - 2.0 * dots + sq_norms(queries)[:, None]
        return np.maximum(d, 0.0, out=d)
    if metric == "cosine":
        return 1.0 - dots
    return -dots


def adc_many(tables: np.ndarray, codes: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Product-quantization distances of many queries at once: ``tables`` (b, m, ksub) are the
    queries' lookup tables, ``codes`` (n, m) uint8; returns (len(rows), n) = sum over subspaces of
    ``tables[r, j, codes[n, j]]`` for the table rows ``rows`` (default all), gathered straight from
    the tables (what :meth:`PQCodec.distances` gives one query at a time)."""
    b, m, ksub = tables.shape
    if rows is None:
        rows = np.arange(b, dtype=np.intp)
    if codes.shape[0] == 0:
        return np.empty((rows.shape[0], 0), dtype=np.float32)
    idx = codes.astype(np.intp) + (np.arange(m, dtype=np.intp) * ksub)[None, :]
    flat = tables.reshape(b * m * ksub)
    return flat[(rows.astype(np.intp) * (m * ksub))[:, None, None] + idx[None, :, :]].sum(axis=2, dtype=np.float32)


def top_k(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest distances, sorted ascending (ties broken by index)."""
    n = dist.shape[0]
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        part = np.argpartition(dist, k - 1)[:k]
    else:
        part = np.arange(n)
    order = np.lexsort((part, dist[part]))
    return part[order]


def to_score(dist: float | np.ndarray, metric: str) -> float | np.ndarray:
    """User-facing score: cosine similarity, inner product, or Euclidean distance."""
    if metric == "cosine":
        return 1.0 - dist
    if metric == "ip":
        return -dist
    return np.sqrt(np.maximum(dist, 0.0))


def check_k(k: object, limit: int = 10_000) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= limit:
        raise InvalidArgumentError(f"k must be an integer in 1..{limit}, got {k!r}")
    return int(k)


def subspace_distances(
    query: np.ndarray, codebooks: np.ndarray, metric: str, codebook_sq: np.ndarray | None = None
) -> np.ndarray:
    """Per-subspace distances for product quantization (asymmetric distance tables).

    ``query`` has shape (m, dsub) (one prepared query split into m subvectors), ``codebooks``
    has shape (m, ksub, dsub). Returns an (m, ksub) float32 table: squared Euclidean distances
    for ``l2``, negated inner products otherwise (summing a row choice per subspace gives the
    ``l2`` distance or ``-q.x`` of the reconstructed vector; a cosine caller adds 1).
    """
    dots = np.matmul(codebooks, query[:, :, None])[:, :, 0]
    if metric == "l2":
        if codebook_sq is None:
            codebook_sq = np.einsum("mkd,mkd->mk", codebooks, codebooks, dtype=np.float32)
        q_sq = np.einsum("md,md->m", query, query, dtype=np.float32)
        d = codebook_sq - 2.0 * dots + q_sq[:, None]
        return np.maximum(d, 0.0, out=d).astype(np.float32, copy=False)
    return (-dots).astype(np.float32, copy=False)


def nearest(queries: np.ndarray, data: np.ndarray, metric: str, data_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index of, and distance to, the nearest row of ``data`` for every prepared query row.

    Distances as :func:`distances` gives them row by row, but the per-query constant of ``l2`` is added
    only after the argmin, which saves passes over the (nq, n) matrix (k-means assignment).
    """
    dots = queries @ data.T
    rows = np.arange(dots.shape[0])
    if metric == "l2":
        if data_sq is None:
            data_sq = sq_norms(data)
        dots *= -2.0
        dots += data_sq[None, :]
        idx = dots.argmin(axis=1)
        d = dots[rows, idx] + sq_norms(queries)
        return idx, np.maximum(d, 0.0, out=d)
    idx = dots.argmax(axis=1)
    best = dots[rows, idx]
    return idx, (1.0 - best if metric == "cosine" else -best).astype(np.float32, copy=False)


def pairwise(data: np.ndarray, metric: str, data_sq: np.ndarray | None = None) -> np.ndarray:
    """(n, n) distances between the rows of prepared ``data``, in the sense of :func:`distances`
    (one sgemm instead of n gemv calls; used on small candidate sets, e.g. HNSW link pruning)."""
    g = data @ data.T
    if metric == "l2":
        if data_sq is None:
            data_sq = sq_norms(data)
        g *= -2.0
        g += data_sq[:, None]
        g += data_sq[None, :]
        return np.maximum(g, 0.0, out=g)
    if metric == "cosine":
        return np.subtract(1.0, g, out=g)
    return np.negative(g, out=g)


_CONTROLLER: Any = None  # threadpoolctl.ThreadpoolController, made once (False: not installed)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread for the block (threadpoolctl; a no-op without it, e.g. in Pyodide).

    Why, in the three places that use it:
    * loops of many small products (HNSW construction: thousands of 48 x 48 x dim products a
      second; PQ on <= 32-d subspaces): a threaded BLAS splits each one across cores and waits for
      them, which on a busy 2-core machine made a build 10x slower than one thread;
    * the PQ rotation: a threaded sgemm rounds differently, and a bulk build's chunks must not
      depend on how many threads the process (or a Dask worker) has.
    The controller is made once (entering it then costs ~2 us, not threadpool_limits' ~150 us)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        except ImportError:
            _CONTROLLER = False
    if _CONTROLLER is False:
        yield
        return
    with _CONTROLLER.limit(limits=1, user_api="blas"):
        yield
