"""Clustering and vector codecs used by the IVF index.

* :func:`kmeans` - k-means++ initialisation (on a sample for large inputs) followed by Lloyd
  iterations, or mini-batch k-means (Sculley 2010) for large inputs / when ``batch_size`` is given.
  Empty clusters are re-seeded from the largest cluster. ``metric="cosine"`` runs spherical
  k-means (unit-length centroids, assignment by cosine distance on unit vectors).
* :func:`assign` - nearest centroid of every row (blocked, so memory stays bounded).
* Codecs (:class:`Codec` protocol): :class:`Float32Codec` (identity), :class:`SQ8Codec`
  (per-dimension min/max scalar quantization to uint8) and :class:`PQCodec` (product
  quantization, asymmetric distance computation through an (m, ksub) lookup table).

Every codec works on vectors already *prepared* for its metric (see :func:`s5vec.kernels.prepare`:
cosine vectors are unit length) and returns *distances* in the sense of :mod:`s5vec.kernels`
(lower is better). All distance arithmetic goes through :mod:`s5vec.kernels`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np

from . import kernels
from .errors import FormatError, InvalidArgumentError

MINIBATCH_THRESHOLD = 50_000
"""Inputs with more rows than this use mini-batch k-means automatically."""

KMEANS_WORK = 1 << 28
"""k x rows that k-means++ seeding and one mini-batch step may cost (k = 4096 on 65,536 rows, a 1M
index's training): beyond it both shrink as 1/k (see :func:`seeding_rows`, :func:`minibatch_rows`)."""

_ENCODE_BLOCK = 2048  # PQ encoding rows per block: a 2048 x 256 float32 matrix stays in L2 cache
_DIST_BUDGET = 1 << 22  # entries of a (rows x k) distance block: 16 MiB of float32

Progress = Callable[[int, int], Any]


SMALL_GEMM_DIM = 32
"""Inner dimensions up to this (PQ subspaces) run BLAS single-threaded: a threaded OpenBLAS
spends 7-14x longer synchronising threads than computing (10k x 8 @ 8 x 256), worse on a busy machine."""


@contextlib.contextmanager
def _blas_threads(inner_dim: int) -> Iterator[None]:
    """One BLAS thread for small inner dimensions (:func:`kernels.one_blas_thread`), else as configured."""
    if inner_dim > SMALL_GEMM_DIM:
        yield
        return
    with kernels.one_blas_thread():
        yield


def _as_float32_2d(x: Any) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise InvalidArgumentError(f"expected a 2-d array, got shape {arr.shape}")
    return arr


def _train_metric(metric: str) -> str:
    """Clustering metric: spherical (cosine) for cosine data, Euclidean otherwise."""
    return "cosine" if metric == "cosine" else "l2"


def _normalise_rows(c: np.ndarray) -> np.ndarray:
    return kernels.prepare(c, "cosine")


def assign(
    x: np.ndarray, centroids: np.ndarray, metric: str = "l2", *, return_distances: bool = False,
    groups: "CentroidGroups | None" = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centroid (by ``metric`` distance) of every row of ``x``.

    ``x`` and ``centroids`` must be prepared for ``metric``. Works in row blocks so that the
    (rows x k) distance matrix stays around 16 MiB. With ``return_distances`` also returns
    the distance to that centroid. With ``groups`` (:func:`group_centroids` of these centroids)
    only the centroids of each row's nearest groups are scored (:func:`assign_grouped`).
    """
    if groups is not None:
        return assign_grouped(x, centroids, groups, metric, return_distances=return_distances)
    x = _as_float32_2d(x)
    centroids = _as_float32_2d(centroids)
    n, k = x.shape[0], centroids.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dmin = np.empty(n, dtype=np.float32)
    c_sq = kernels.sq_norms(centroids) if metric == "l2" else None
    block = max(1, _DIST_BUDGET // max(k, 1))
    for s in range(0, n, block):
        lab, d = kernels.nearest(x[s : s + block], centroids, metric, c_sq)
        labels[s : s + block] = lab
        dmin[s : s + block] = d
    if return_distances:
        return labels, dmin
    return labels


# --------------------------------------------------------------------------- two-level assignment

GROUPED_MIN_K = 8192
"""From this many centroids on an IVF index assigns rows through :func:`assign_grouped` (see
:func:`grouped_pays`): exact assignment of 10M rows to 16,384 centroids is ~126 TFLOP, hours here."""

GROUP_PROBE = 16
"""Groups whose centroids a row scores (of ~sqrt(k)): 16 of 64 at k = 8192 (3M), 16 of 128 at 16,384
(10M), so a row scores 1,088 / 2,176 centroids instead of 8,192 / 16,384. Measured on the k-means
centroids of 1M / 3M / 10M (bench/assign_recall.py, 65,536 random rows): 99.5% / 99.4% / 99.2% of rows
get the exact list (8 groups: 97.9% / 97.6% / 97.7%; 32 of 128: 99.8%); at 3M the probe recall of the
true top 10 at nprobe 14 is 0.9309 vs 0.9311 exact (8 groups: 0.929)."""


@dataclass(frozen=True, eq=False)
class CentroidGroups:
    """The centroids clustered into groups (a coarse quantizer over the coarse quantizer).

    ``centers``: (G, dim) group centres; ``order``: centroid numbers, group by group, group ``g``
    being ``order[offsets[g]:offsets[g+1]]``; ``grouped``: the centroids in that order (one
    contiguous block per group) and ``grouped_sq`` their squared norms (l2)."""

    centers: np.ndarray
    order: np.ndarray
    offsets: np.ndarray
    grouped: np.ndarray
    grouped_sq: np.ndarray | None
    probe: int

    @property
    def count(self) -> int:
        return int(self.centers.shape[0])


def grouped_pays(k: int, metric: str) -> bool:
    """Whether an IVF index of ``k`` lists assigns rows through groups: from :data:`GROUPED_MIN_K`
    lists on (below, exact assignment is cheap enough and a build is dominated by other work), for
    cosine and l2 (an ``ip`` index's nearest centroid is not the one nearest in angle)."""
    return k >= GROUPED_MIN_K and metric in ("cosine", "l2")


def group_centroids(centroids: np.ndarray, metric: str, *, seed: int = 0, groups: int | None = None,
                    probe: int | None = None) -> CentroidGroups:
    """Cluster ``centroids`` (prepared for ``metric``) into ~sqrt(k) groups (k-means on them, seeded:
    the same centroids always give the same groups)."""
    c = _as_float32_2d(centroids)
    k = c.shape[0]
    g = int(groups) if groups is not None else int(2 ** round(math.log2(max(math.sqrt(k), 1.0))))
    g = max(1, min(g, k))
    tm = _train_metric(metric)
    with kernels.one_blas_thread():  # the same groups whatever the process's thread count
        centers = kmeans(c, g, iters=10, seed=seed, metric=tm)
        labels = np.asarray(assign(c, centers, tm), dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    offsets = np.searchsorted(labels[order], np.arange(g + 1)).astype(np.int64)
    grouped = np.ascontiguousarray(c[order])
    p = GROUP_PROBE if probe is None else int(probe)
    return CentroidGroups(centers, order, offsets, grouped,
                          kernels.sq_norms(grouped) if metric == "l2" else None, max(1, min(p, g)))


_GROUPED_BLOCK = 16_384  # rows per pass: a (rows x probe) gather of the block stays ~200 MB at 384-d


def assign_grouped(x: np.ndarray, centroids: np.ndarray, groups: CentroidGroups, metric: str = "l2", *,
                   return_distances: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """:func:`assign`, two-level: every row scores the ``G`` group centres, then only the centroids
    of its ``groups.probe`` nearest groups (one GEMM per group over the rows that chose it), so the
    work per row is ``G + probe * k / G`` centroids instead of ``k`` (2,176 of 16,384 at the 10M
    default). Not exact: a row whose nearest centroid sits in a group outside its nearest few gets
    the best one inside them (its distance is then slightly larger; measured on 3M/10M in bench/).
    Deterministic for the same rows in the same blocks (a pure function of the block).

    Runs BLAS on one thread (:func:`kernels.one_blas_thread`): its products are many and small (a
    few thousand rows by ~128 centroids), where a threaded BLAS spends more time synchronising than
    computing (measured 3.7 vs 0.7 CPU s on 65k rows at k = 16,384 on the busy 2-core machine), and
    the result then cannot depend on how many threads a process or Dask worker has."""
    with kernels.one_blas_thread():
        return _assign_grouped(_as_float32_2d(x), groups, metric, return_distances)


def _assign_grouped(x: np.ndarray, groups: CentroidGroups, metric: str,
                    return_distances: bool) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    G, P = groups.count, groups.probe
    labels = np.empty(n, dtype=np.int64)
    best = np.empty(n, dtype=np.float32)  # the score: higher is nearer
    l2 = metric == "l2"
    tm = _train_metric(metric)
    gsq = kernels.sq_norms(groups.centers) if tm == "l2" else None
    for s in range(0, n, _GROUPED_BLOCK):
        xb = x[s: s + _GROUPED_BLOCK]
        b = xb.shape[0]
        gs = xb @ groups.centers.T
        if gsq is not None:
            gs *= 2.0
            gs -= gsq[None, :]
        if P < G:
            top = np.argpartition(-gs, P - 1, axis=1)[:, :P]
        else:
            top = np.broadcast_to(np.arange(G), (b, G))
        flat = top.ravel()
        rows_all = np.repeat(np.arange(b), top.shape[1])
        by = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[by], np.arange(G + 1))
        lab = np.full(b, -1, dtype=np.int64)
        sc_best = np.full(b, -np.inf, dtype=np.float32)
        for g in range(G):
            a, e = int(bounds[g]), int(bounds[g + 1])
            lo, hi = int(groups.offsets[g]), int(groups.offsets[g + 1])
            if a == e or lo == hi:
                continue
            r = rows_all[by[a:e]]  # ascending within the group (stable sort of row-major flat)
            sc = xb[r] @ groups.grouped[lo:hi].T
            if l2:
                sc *= 2.0
                sc -= groups.grouped_sq[None, lo:hi]  # type: ignore[index]
            j = sc.argmax(axis=1)
            v = sc[np.arange(r.shape[0]), j]
            # nearer, or as near and a lower centroid number (exact assign's argmax keeps the first)
            cand = groups.order[lo + j]
            better = (v > sc_best[r]) | ((v == sc_best[r]) & (cand < lab[r]))
            rb = r[better]
            sc_best[rb] = v[better]
            lab[rb] = cand[better]
        labels[s: s + b] = lab
        best[s: s + b] = sc_best
    if not return_distances:
        return labels
    if l2:
        d = kernels.sq_norms(x) - best
        return labels, np.maximum(d, 0.0, out=d)
    return labels, (1.0 - best if metric == "cosine" else -best).astype(np.float32, copy=False)


def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator, metric: str) -> np.ndarray:
    """Greedy-free k-means++ seeding (D^2 sampling) over the rows of ``x``."""
    n, d = x.shape
    centers = np.empty((k, d), dtype=np.float32)
    x_sq = kernels.sq_norms(x) if metric == "l2" else None
    idx = int(rng.integers(n))
    centers[0] = x[idx]
    closest = np.maximum(kernels.distances(x[idx], x, metric, x_sq), 0.0).astype(np.float64)
    for i in range(1, k):
        total = closest.sum()
        if total <= 0.0:  # every point coincides with a centre already: pick any point
            idx = int(rng.integers(n))
        else:
            idx = int(np.searchsorted(np.cumsum(closest), rng.random() * total, side="right"))
            idx = min(idx, n - 1)
        centers[i] = x[idx]
        np.minimum(closest, np.maximum(kernels.distances(x[idx], x, metric, x_sq), 0.0), out=closest)
    return centers


def _cluster_sums(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster row sums (float64) and counts, vectorised with a sort + reduceat."""
    counts = np.bincount(labels.astype(np.intp, copy=False), minlength=k)  # intp: wasm32-safe
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    if labels.shape[0] == 0:
        return sums, counts
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    nonzero = counts > 0
    sums[nonzero] = np.add.reduceat(x[order], starts[nonzero], axis=0, dtype=np.float64)
    return sums, counts


def _reseed_empty(
    x: np.ndarray, centers: np.ndarray, labels: np.ndarray, dmin: np.ndarray, counts: np.ndarray
) -> int:
    """Move every empty centre onto the worst-fitting point of the currently largest cluster.

    Updates ``centers``, ``labels``, ``dmin`` and ``counts`` in place; returns how many moved.
    """
    empty = np.flatnonzero(counts == 0)
    moved = 0
    for j in empty:
        big = int(np.argmax(counts))
        if counts[big] <= 1:
            break  # fewer distinct points than clusters: nothing left to split
        members = np.flatnonzero(labels == big)
        p = int(members[np.argmax(dmin[members])])
        centers[j] = x[p]
        labels[p] = j
        dmin[p] = 0.0
        counts[big] -= 1
        counts[j] = 1
        moved += 1
    return moved


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    iters: int = 20,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
    metric: str = "l2",
    tol: float = 1e-4,
    init_sample: int | None = None,
    grouped: bool = False,
) -> np.ndarray:
    """Cluster the rows of ``x`` into ``k`` centroids; returns a (k, dim) float32 array.

    k-means++ seeding runs on a random sample of :func:`seeding_rows` rows (all rows when
    fewer). Then, for at most :data:`MINIBATCH_THRESHOLD` rows and no ``batch_size``, Lloyd
    iterations (stopping early when the inertia improves by less than ``tol`` relatively);
    otherwise mini-batch k-means with per-centre learning rates (``iters * 3`` steps of
    ``batch_size`` rows, default :func:`minibatch_rows`). Empty clusters are re-seeded from the
    worst-fitting point of the largest cluster. ``metric`` is ``"l2"`` or ``"cosine"``
    (spherical k-means on unit vectors; ``"ip"`` clusters as ``"l2"``).
    ``progress(done, total)`` is called after every iteration / step. With ``grouped`` the
    mini-batch steps assign through :func:`assign_grouped` (the moving centres regrouped every step).
    """
    x = _as_float32_2d(x)
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if n < k:
        raise InvalidArgumentError(f"k-means needs at least k={k} rows, got {n}")
    if not np.isfinite(x).all():
        raise InvalidArgumentError("k-means input contains NaN or infinity")
    if iters < 1:
        raise InvalidArgumentError(f"iters must be >= 1, got {iters}")
    metric = _train_metric(metric)
    if metric == "cosine":
        x = _normalise_rows(x)
    with _blas_threads(x.shape[1]):
        return _kmeans(x, k, iters, seed, batch_size, progress, metric, tol, init_sample, grouped)


def seeding_rows(k: int) -> int:
    """Rows k-means++ seeds ``k`` centres from: 16 per centre (at least 10,000), but no more than
    :data:`KMEANS_WORK` / k (and no fewer than k). Why: seeding is k sequential passes over its rows
    (memory-bound, ~0.1 s per pass over 256k x 384 rows here), so 16 k rows cost 16 k^2 dim: fine
    at k = 4096 (the 1M default, 65,536 rows, ~1 min), 34 min at the 10M default k = 16384. From
    k = 16384 on it is k rows, i.e. a random draw of k rows (faiss's IVF initialisation)."""
    return int(max(10_000, k, min(16 * k, KMEANS_WORK // max(k, 1))))


def minibatch_rows(k: int) -> int:
    """Rows per mini-batch step for ``k`` centres: 16 per centre (at least 4096), but no more than
    :data:`KMEANS_WORK` / k, so a step costs at most what it costs at k = 4096 (a step is a
    rows x k x dim GEMM: 16 k rows made 60 steps at k = 16384 ~190 TFLOP, hours on 2 cores; the
    centres still see 60 rows each, on top of a seeding that starts them on data points)."""
    return int(max(4096, min(16 * k, KMEANS_WORK // max(k, 1))))


def _kmeans(x: np.ndarray, k: int, iters: int, seed: int, batch_size: int | None, progress: Progress | None,
            metric: str, tol: float, init_sample: int | None, grouped: bool = False) -> np.ndarray:
    n = x.shape[0]
    rng = np.random.default_rng(seed)

    sample_n = init_sample if init_sample is not None else seeding_rows(k)
    if n > sample_n:
        sample = x[np.sort(rng.choice(n, sample_n, replace=False))]
    else:
        sample = x
    if sample.shape[0] == k:
        centers = sample.copy()  # k-means++ over k rows picks every one of them
    else:
        centers = _kmeanspp(sample, k, rng, metric)
    if k == n:
        return x.copy()

    if batch_size is None and n <= MINIBATCH_THRESHOLD:
        return _lloyd(x, centers, iters, metric, tol, progress)
    b = int(batch_size) if batch_size is not None else minibatch_rows(k)
    if b < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
    return _minibatch(x, centers, min(b, n), iters * 3, metric, rng, progress, grouped, seed)


def _lloyd(
    x: np.ndarray, centers: np.ndarray, iters: int, metric: str, tol: float, progress: Progress | None
) -> np.ndarray:
    k = centers.shape[0]
    prev = math.inf
    for it in range(iters):
        labels, dmin = assign(x, centers, metric, return_distances=True)
        inertia = float(dmin.sum(dtype=np.float64))
        sums, counts = _cluster_sums(x, labels, k)
        nonzero = counts > 0
        new = centers.copy()
        new[nonzero] = (sums[nonzero] / counts[nonzero, None]).astype(np.float32)
        _reseed_empty(x, new, labels, dmin, counts)
        if metric == "cosine":
            new = _normalise_rows(new)
        centers = new
        if progress is not None:
            progress(it + 1, iters)
        if prev < math.inf and prev - inertia <= tol * max(prev, 1e-30):
            break
        prev = inertia
    return np.ascontiguousarray(centers, dtype=np.float32)


def _minibatch(
    x: np.ndarray,
    centers: np.ndarray,
    b: int,
    steps: int,
    metric: str,
    rng: np.random.Generator,
    progress: Progress | None,
    grouped: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Sculley's mini-batch k-means, batch-vectorised: c_j += (S_j - n_j c_j) / v_j."""
    n = x.shape[0]
    k = centers.shape[0]
    centers = centers.astype(np.float64)
    seen = np.zeros(k, dtype=np.float64)
    reseed_every = 10
    for step in range(steps):
        batch = x[rng.choice(n, b, replace=False)] if b < n else x
        c32 = centers.astype(np.float32)
        if metric == "cosine":
            c32 = _normalise_rows(c32)
        groups = group_centroids(c32, metric, seed=seed) if grouped else None
        labels, dmin = assign(batch, c32, metric, return_distances=True, groups=groups)
        sums, counts = _cluster_sums(batch, labels, k)
        hit = counts > 0
        seen[hit] += counts[hit]
        centers[hit] += (sums[hit] - counts[hit, None] * centers[hit]) / seen[hit, None]
        if metric == "cosine":
            centers = _normalise_rows(centers)
        # Dead centres (never or rarely hit) are moved onto badly fitting batch points.
        if (step + 1) % reseed_every == 0 or step == steps - 1:
            dead = np.flatnonzero(seen < 1e-3 * seen.sum() / k) if step + 1 < steps else np.flatnonzero(seen == 0)
            if dead.size:
                worst = np.argsort(-dmin, kind="stable")[: dead.size]
                centers[dead[: worst.size]] = batch[worst]
                seen[dead[: worst.size]] = 1.0
        if progress is not None:
            progress(step + 1, steps)
    out = centers.astype(np.float32)
    if metric == "cosine":
        out = _normalise_rows(out)
    # Final guarantee on the full data: no centre without members (when the data allow it).
    groups = group_centroids(out, metric, seed=seed) if grouped else None
    labels, dmin = assign(x, out, metric, return_distances=True, groups=groups)
    counts = np.bincount(labels.astype(np.intp, copy=False), minlength=k)  # intp: wasm32-safe
    if (counts == 0).any():
        _reseed_empty(x, out, labels, dmin, counts)
    return np.ascontiguousarray(out)


def inertia(x: np.ndarray, centroids: np.ndarray, metric: str = "l2") -> float:
    """Sum of distances of every row to its nearest centroid (the k-means objective)."""
    metric = _train_metric(metric)
    x = _as_float32_2d(x)
    if metric == "cosine":
        x = _normalise_rows(x)
    _, d = assign(x, centroids, metric, return_distances=True)
    return float(d.sum(dtype=np.float64))


# --------------------------------------------------------------------------- codecs


@runtime_checkable
class Codec(Protocol):
    """Vector codec: train on prepared vectors, encode them into compact codes, score codes.

    ``distance_table(query)`` precomputes whatever a query needs (the query itself for
    float32/SQ8, the (m, ksub) lookup table for PQ); ``distances(query, codes, table=None)``
    returns one distance per code row (lower is better), reusing ``table`` when given.
    """

    name: str
    dim: int
    metric: str

    @property
    def trained(self) -> bool: ...

    @property
    def code_dtype(self) -> np.dtype: ...

    @property
    def code_size(self) -> int: ...

    def train(self, x: np.ndarray) -> None: ...

    def encode(self, x: np.ndarray) -> np.ndarray: ...

    def decode(self, codes: np.ndarray) -> np.ndarray: ...

    def distance_table(self, query: np.ndarray) -> Any: ...

    def distances(self, query: np.ndarray, codes: np.ndarray, table: Any = None) -> np.ndarray: ...

    def state(self) -> dict[str, Any]: ...


def _check_dim_metric(dim: int, metric: str) -> None:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InvalidArgumentError(f"dim must be a positive integer, got {dim!r}")
    kernels.check_metric(metric)


class Float32Codec:
    """Identity codec: codes are the float32 vectors themselves (exact distances)."""

    name = "flat"

    def __init__(self, dim: int, metric: str = "l2") -> None:
        _check_dim_metric(dim, metric)
        self.dim = int(dim)
        self.metric = metric

    @property
    def trained(self) -> bool:
        return True

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def code_size(self) -> int:
        return self.dim

    def train(self, x: np.ndarray) -> None:
        return None

    def encode(self, x: np.ndarray) -> np.ndarray:
        return _as_float32_2d(x)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes, dtype=np.float32)

    def distance_table(self, query: np.ndarray) -> np.ndarray:
        return query

    def distances(
        self, query: np.ndarray, codes: np.ndarray, table: Any = None, data_sq: np.ndarray | None = None
    ) -> np.ndarray:
        return kernels.distances(query, codes, self.metric, data_sq)

    def state(self) -> dict[str, Any]:
        return {"codec": self.name, "dim": self.dim, "metric": self.metric}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "Float32Codec":
        return cls(int(state["dim"]), str(state["metric"]))


class SQ8Codec:
    """Per-dimension scalar quantizer: x ~ vmin + code * scale with one uint8 per dimension.

    The range comes from the training data; values outside it are clipped. Distances decode
    a block of codes to float32 and call :func:`s5vec.kernels.distances`.
    """

    name = "sq8"

    def __init__(self, dim: int, metric: str = "l2") -> None:
        _check_dim_metric(dim, metric)
        self.dim = int(dim)
        self.metric = metric
        self.vmin: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    @property
    def trained(self) -> bool:
        return self.vmin is not None

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def code_size(self) -> int:
        return self.dim

    def train(self, x: np.ndarray) -> None:
        x = _as_float32_2d(x)
        if x.shape[0] == 0 or x.shape[1] != self.dim:
            raise InvalidArgumentError(f"SQ8 training needs a non-empty (n, {self.dim}) array")
        lo = x.min(axis=0)
        hi = x.max(axis=0)
        span = hi - lo
        self.vmin = lo.astype(np.float32)
        self.scale = np.where(span > 0, span / 255.0, 1.0).astype(np.float32)

    def _need(self) -> None:
        if self.vmin is None:
            raise InvalidArgumentError("SQ8 codec is not trained")

    def encode(self, x: np.ndarray) -> np.ndarray:
        self._need()
        x = _as_float32_2d(x)
        q = np.rint((x - self.vmin) / self.scale)
        return np.clip(q, 0, 255).astype(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        self._need()
        out = codes.astype(np.float32)
        out *= self.scale
        out += self.vmin
        return out

    def distance_table(self, query: np.ndarray) -> np.ndarray:
        return query

    def distances(self, query: np.ndarray, codes: np.ndarray, table: Any = None) -> np.ndarray:
        return kernels.distances(query, self.decode(codes), self.metric)

    def state(self) -> dict[str, Any]:
        self._need()
        return {"codec": self.name, "dim": self.dim, "metric": self.metric, "vmin": self.vmin, "scale": self.scale}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "SQ8Codec":
        c = cls(int(state["dim"]), str(state["metric"]))
        c.vmin = np.asarray(state["vmin"], dtype=np.float32).reshape(c.dim)
        c.scale = np.asarray(state["scale"], dtype=np.float32).reshape(c.dim)
        return c


def default_pq_m(dim: int) -> int:
    """Largest divisor of ``dim`` not above ``dim // 8`` (at least 1): ~8 dimensions per byte."""
    target = max(1, dim // 8)
    for m in range(target, 0, -1):
        if dim % m == 0:
            return m
    return 1


class PQCodec:
    """Product quantizer: ``m`` sub-vectors, each coded by one of ``2**nbits`` centroids (uint8).

    Training runs :func:`kmeans` per subspace (on at most ``train_size`` rows). Search uses
    asymmetric distance computation: :meth:`distance_table` builds an (m, ksub) table of
    sub-distances from the exact query to every sub-centroid (squared L2 for ``l2``, negated
    inner products for ``ip``/``cosine``, plus 1 for cosine), and :meth:`distances` sums one
    table entry per subspace for all codes with a single gather + row sum.

    ``rotate``: code ``x @ R`` instead of ``x``, with ``R`` the principal axes of the training
    rows, dealt to the subspaces in turn (axis ``i`` to subspace ``i % m``) so each subspace gets
    an equal share of the variance (the non-parametric OPQ of Ge et al., CVPR 2013). Embeddings
    keep most of their variance in a few directions; unrotated, most subspaces code what varies
    least. ``R`` is orthonormal, so distances (and the tables, built from ``q @ R``) are
    unchanged; ``decode`` rotates back. It rides in the codec state (``"rotation"``).
    """

    name = "pq"

    def __init__(
        self,
        dim: int,
        m: int | None = None,
        nbits: int = 8,
        metric: str = "l2",
        *,
        seed: int = 0,
        iters: int = 10,
        train_size: int = 10_000,
        rotate: bool = False,
    ) -> None:
        _check_dim_metric(dim, metric)
        self.dim = int(dim)
        m = default_pq_m(self.dim) if m is None else m
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1 or self.dim % m:
            raise InvalidArgumentError(f"PQ m must be a positive divisor of dim={self.dim}, got {m!r}")
        if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)) or not 1 <= nbits <= 8:
            raise InvalidArgumentError(f"PQ nbits must be an integer in 1..8, got {nbits!r}")
        self.m = int(m)
        self.nbits = int(nbits)
        self.dsub = self.dim // self.m
        self.metric = metric
        self.seed = seed
        self.iters = iters
        self.train_size = train_size
        self.codebooks: np.ndarray | None = None  # (m, ksub, dsub)
        self._cb_sq: np.ndarray | None = None
        self._offsets: np.ndarray | None = None
        self.rotate = bool(rotate)
        self.rotation: np.ndarray | None = None  # (dim, dim) orthonormal, when rotate

    def _rotated(self, x: np.ndarray) -> np.ndarray:
        if self.rotation is None:
            return x
        with kernels.one_blas_thread():
            return (x @ self.rotation).astype(np.float32, copy=False)

    def _fit_rotation(self, x: np.ndarray) -> None:
        """Principal axes of ``x``, axis ``i`` (by variance) dealt to subspace ``i % m``."""
        xc = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
        with kernels.one_blas_thread():  # the same axes whatever the thread count
            w, v = np.linalg.eigh((xc.T @ xc).astype(np.float64))
        axes = v[:, np.argsort(-w, kind="stable")]
        pos = np.empty(self.dim, dtype=np.intp)
        i = np.arange(self.dim)
        pos[(i % self.m) * self.dsub + i // self.m] = i
        self.rotation = np.ascontiguousarray(axes[:, pos], dtype=np.float32)

    @property
    def trained(self) -> bool:
        return self.codebooks is not None

    @property
    def ksub(self) -> int:
        return 0 if self.codebooks is None else int(self.codebooks.shape[1])

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def code_size(self) -> int:
        return self.m

    def _set_codebooks(self, cb: np.ndarray) -> None:
        self.codebooks = np.ascontiguousarray(cb, dtype=np.float32)
        self._cb_sq = np.einsum("mkd,mkd->mk", self.codebooks, self.codebooks, dtype=np.float32)
        self._offsets = (np.arange(self.m, dtype=np.intp) * self.codebooks.shape[1])[None, :]

    def train(self, x: np.ndarray) -> None:
        x = _as_float32_2d(x)
        n = x.shape[0]
        if n == 0 or x.shape[1] != self.dim:
            raise InvalidArgumentError(f"PQ training needs a non-empty (n, {self.dim}) array")
        rng = np.random.default_rng(self.seed)
        if n > self.train_size:
            x = x[np.sort(rng.choice(n, self.train_size, replace=False))]
            n = x.shape[0]
        ksub = min(1 << self.nbits, n)
        if self.rotate:
            self._fit_rotation(x)
            x = self._rotated(x)
        cb = np.empty((self.m, ksub, self.dsub), dtype=np.float32)
        for j in range(self.m):
            sub = np.ascontiguousarray(x[:, j * self.dsub : (j + 1) * self.dsub])
            cb[j] = kmeans(sub, ksub, iters=self.iters, seed=self.seed + j)
        self._set_codebooks(cb)

    def _need(self) -> None:
        if self.codebooks is None:
            raise InvalidArgumentError("PQ codec is not trained")

    def encode(self, x: np.ndarray) -> np.ndarray:
        self._need()
        x = _as_float32_2d(x)
        n = x.shape[0]
        codes = np.empty((n, self.m), dtype=np.uint8)
        block = _ENCODE_BLOCK
        with _blas_threads(self.dsub):
            for s in range(0, n, block):  # row blocks keep each (rows x ksub) matrix in cache
                xb = self._rotated(x[s : s + block])
                for j in range(self.m):
                    sub = np.ascontiguousarray(xb[:, j * self.dsub : (j + 1) * self.dsub])
                    codes[s : s + block, j] = kernels.nearest(sub, self.codebooks[j], "l2", self._cb_sq[j])[0]
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        self._need()
        codes = np.asarray(codes)
        parts = self.codebooks[np.arange(self.m)[None, :], codes.astype(np.intp)]  # (n, m, dsub)
        out = parts.reshape(codes.shape[0], self.dim)
        if self.rotation is None:
            return out
        with kernels.one_blas_thread():
            return (out @ self.rotation.T).astype(np.float32, copy=False)

    def dots(self, query: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``decode(codes) @ query`` without decoding: ``R`` is orthonormal, so q . (D R^T) =
        (q R) . D, with D the codebook rows the codes name. One dim x dim product per query
        instead of one per row: in Pyodide (no optimised BLAS) rotating back 20 re-rank rows of
        384-d took 1.3 ms, the rotated query 0.1 ms."""
        self._need()
        q = self._rotated(np.asarray(query, dtype=np.float32).reshape(1, self.dim)).reshape(self.dim)
        parts = self.codebooks[np.arange(self.m)[None, :], np.asarray(codes).astype(np.intp)]
        return kernels.row_dots(parts.reshape(parts.shape[0], self.dim), q)

    def distance_table(self, query: np.ndarray) -> np.ndarray:
        self._need()
        q = np.asarray(query, dtype=np.float32).reshape(1, self.dim)
        q = self._rotated(q).reshape(self.m, self.dsub)
        table = kernels.subspace_distances(q, self.codebooks, "l2" if self.metric == "l2" else "ip", self._cb_sq)
        if self.metric == "cosine":
            table = table.copy()
            table[0] += 1.0  # cosine distance = 1 - q.x; the constant rides on subspace 0
        return table

    def distances(self, query: np.ndarray, codes: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
        if table is None:
            table = self.distance_table(query)
        if codes.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        flat = table.ravel()
        return flat[codes + self._offsets].sum(axis=1, dtype=np.float32)

    def state(self) -> dict[str, Any]:
        self._need()
        return {
            "codec": self.name,
            "dim": self.dim,
            "metric": self.metric,
            "m": self.m,
            "nbits": self.nbits,
            "codebooks": self.codebooks,
            **({"rotation": self.rotation} if self.rotation is not None else {}),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "PQCodec":
        c = cls(int(state["dim"]), int(state["m"]), int(state["nbits"]), str(state["metric"]))
        cb = np.asarray(state["codebooks"], dtype=np.float32)
        c._set_codebooks(cb.reshape(c.m, -1, c.dsub))
        rot = state.get("rotation")
        if rot is not None:
            c.rotate = True
            c.rotation = np.ascontiguousarray(np.asarray(rot, dtype=np.float32).reshape(c.dim, c.dim))
        return c


_CODECS = {"flat": Float32Codec, "sq8": SQ8Codec, "pq": PQCodec}


def codec_from_state(state: Mapping[str, Any]) -> Codec:
    """Rebuild any codec from its :meth:`state` dict."""
    try:
        cls = _CODECS[state["codec"]]
    except (KeyError, TypeError):
        raise FormatError(f"unknown codec state {state!r:.80}") from None
    return cls.from_state(state)  # type: ignore[attr-defined]
