"""Shared test kit: every test file (tests/ and e2e/) builds data and checks results through here.

- :func:`assert_same_hits` -- tie-aware hit comparison that compares ids;
- :func:`clustered` -- the one data generator (plus :func:`queries_near`);
- :class:`MemChunks` -- the one in-memory chunk I/O, through the real layout (CBOR) and store;
- :func:`search` / :func:`run` -- a query through the real api path (prepare -> plan -> fetch -> search);
- :func:`flat_oracle` / :func:`recall_at_k` -- the flat index as the oracle of every recall test.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

SCORE_TOL = 1e-5


def assert_same_hits(got: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]],
                     *, tol: float = SCORE_TOL, metadata: bool = True) -> None:
    """Same hits, rank by rank, allowing only genuine ties to swap ids.

    Scores must agree within ``tol`` at every rank. Ids must be equal at every rank, except
    inside a run of tied scores (|a - b| <= tol), where the *set* of ids of the run must be
    equal — except for the last run, which may be cut by ``k`` and only needs the same size.
    An off-by-one id therefore fails unless its score ties its neighbour's.
    """
    assert len(got) == len(want), f"{len(got)} hits, expected {len(want)}"
    for r, (g, w) in enumerate(zip(got, want)):
        assert math.isclose(float(g["score"]), float(w["score"]), abs_tol=tol), (r, g, w)
    i, n = 0, len(want)
    while i < n:
        j = i + 1
        while j < n and abs(float(want[j]["score"]) - float(want[i]["score"])) <= tol:
            j += 1
        gids = [h["id"] for h in got[i:j]]
        wids = [h["id"] for h in want[i:j]]
        if j - i == 1:
            assert gids == wids, f"rank {i}: id {gids[0]!r}, expected {wids[0]!r}"
        elif j < n:  # a complete run of ties: same ids, any order
            assert sorted(gids) == sorted(wids), f"ranks {i}..{j - 1} (tied): {gids}, expected {wids}"
        i = j
    if metadata:
        want_meta = {h["id"]: h.get("metadata") for h in want}
        for g in got:
            if g["id"] in want_meta:
                assert g.get("metadata") == want_meta[g["id"]], (g["id"], g.get("metadata"), want_meta[g["id"]])


# ---------------------------------------------------------------------------------------------
# One data generator
# ---------------------------------------------------------------------------------------------

def clustered(n: int, dim: int, clusters: int = 50, seed: int = 0, spread: float = 0.35, *,
              top: int | None = None, sub: int | None = None, spread_sub: float = 0.5,
              labels: bool = False) -> Any:
    """Gaussian clusters (float32, ``n x dim``): the shape real embeddings have, where ANN indexes can fail.

    Two levels with ``top``: ``top`` centres, ``sub`` sub-centres around each (default
    ``clusters // top``) at ``spread_sub``, points at ``spread`` around the sub-centres, so
    nearest neighbours are well defined while k-means lists cut across sub-clusters.
    With ``labels`` returns ``(vectors, cluster / sub-cluster number of each row)``.
    """
    rng = np.random.default_rng(seed)
    if top:
        sub = sub or max(1, clusters // top)
        centres = rng.standard_normal((top, dim)).astype(np.float32)
        s = top * sub
        subs = centres[np.arange(s) // sub] + spread_sub * rng.standard_normal((s, dim)).astype(np.float32)
        which = rng.integers(0, s, n)
        x = subs[which] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    else:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        which = rng.integers(0, clusters, n)
        x = centres[which] + spread * rng.standard_normal((n, dim))
    x = x.astype(np.float32)
    return (x, which) if labels else x


def sentence_like(n: int, dim: int, seed: int, *, latent: int = 16, clusters: int = 40, noise: float = 0.1,
                  scales: tuple[float, float] = (0.6, 1.2), model: int = 1234) -> np.ndarray:
    """Unit vectors shaped like sentence embeddings: anisotropic clusters in a ``latent``-d space
    mapped to ``dim`` plus small isotropic ``noise`` (bench/common.py ``synthetic``'s shape). The
    distribution (centres, per-axis ``scales``, the map) is fixed by ``model``; ``seed`` is the
    draw, so another seed gives fresh queries from the same distribution, never records."""
    m = np.random.default_rng(model)
    centres = m.standard_normal((clusters, latent)).astype(np.float32)
    scale = m.uniform(scales[0], scales[1], (clusters, latent)).astype(np.float32)
    w = (m.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, clusters, n)
    z = centres[lab] + scale[lab] * rng.standard_normal((n, latent)).astype(np.float32)
    x = z @ w + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def queries_near(x: np.ndarray, nq: int, noise: float = 0.1, seed: int = 5) -> np.ndarray:
    """``nq`` queries: random data points plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(x.shape[0], nq, replace=False)
    return (x[pick] + noise * rng.standard_normal((nq, x.shape[1]))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# One in-memory chunk I/O, through the real layout (CBOR) and the real chunk store
# ---------------------------------------------------------------------------------------------

class MemChunks:
    """ChunkWriter + ChunkReader over a :class:`ChunkStore` on an in-memory S5 client.

    Every chunk goes through :mod:`s5vec.layout` (canonical CBOR, schemas, version) and the store
    (blake3-verified, cached), exactly as a published index does; ``puts``/``gets`` list the CIDs.
    """

    def __init__(self, cache_bytes: int = 64 * 2**20) -> None:
        from s5vec import layout
        from s5vec.s5.client import MemoryClient
        from s5vec.store import ChunkStore

        self.client = MemoryClient()
        self.store = ChunkStore(self.client, cache_bytes=cache_bytes)
        self._writer = layout.StoreWriter(self.store)
        self._reader = layout.StoreReader(self.store)
        self.puts: list[str] = []
        self.gets: list[str] = []

    def put(self, kind: str, body: Mapping[str, Any]) -> str:
        cid = self._writer.put(kind, body)
        self.puts.append(cid)
        return cid

    def get(self, cid: str, kind: str | None = None) -> dict[str, Any]:
        self.gets.append(cid)
        return self._reader.get(cid, kind)

    def peek(self, cid: str, kind: str | None = None) -> dict[str, Any] | None:
        return self._reader.peek(cid, kind)

    def fresh(self, cache_bytes: int = 64 * 2**20) -> "MemChunks":
        """The same blobs behind a new, empty cache (a new reader opening a published index)."""
        from s5vec.store import ChunkStore

        other = MemChunks.__new__(MemChunks)
        other.client = self.client
        other.store = ChunkStore(self.client, cache_bytes=cache_bytes)
        from s5vec import layout

        other._writer = layout.StoreWriter(other.store)
        other._reader = layout.StoreReader(other.store)
        other.puts, other.gets = [], []
        return other


# ---------------------------------------------------------------------------------------------
# Searching through the real request path: prepare -> (plan -> fetch -> search)*
# ---------------------------------------------------------------------------------------------

def run(index: Any, vector: Any, k: int = 10, filter: Any = None, *, chunks: MemChunks | None = None,
        **params: Any) -> tuple[list[Any], Any]:
    """(hits, the QueryRun with its ``rounds``) of one query run through :mod:`s5vec.api`."""
    from s5vec import api

    query = api.prepare_query(index, vector, k, filter, params)
    io = chunks if chunks is not None else MemChunks()
    return api.run_query_sync(index, query, io.store, io)


def search(index: Any, vector: Any, k: int = 10, filter: Any = None, *, chunks: MemChunks | None = None,
           **params: Any) -> list[tuple[str, float]]:
    """``[(id, distance)]`` best first, through the real api path (``chunks`` for lazy indexes)."""
    hits, _ = run(index, vector, k, filter, chunks=chunks, **params)
    return [(h.id, h.distance) for h in hits]


def assert_same_ranking(got: Sequence[tuple[str, float]], want: Sequence[tuple[str, float]],
                        *, tol: float = SCORE_TOL) -> None:
    """:func:`search` results (``(id, distance)``) that agree as :func:`assert_same_hits` says:
    what a resident IVF list and a lazily read one give, the latter scoring PQ refine codes
    against a rotated query instead of decoding them (float32 rounding apart)."""
    assert_same_hits([{"id": i, "score": d} for i, d in got], [{"id": i, "score": d} for i, d in want],
                     tol=tol, metadata=False)


def flat_oracle(ids: Sequence[str], vectors: np.ndarray, metric: str = "cosine",
                metadata: Sequence[Mapping[str, Any]] | None = None,
                timestamps: Sequence[float] | None = None) -> Any:
    """The exact index over the same records: the oracle of every recall test."""
    from s5vec.index.flat import FlatIndex

    oracle = FlatIndex(vectors.shape[1], metric)
    oracle.add(list(ids), vectors, metadata, timestamps)
    return oracle


def _ids_of(target: Any, q: np.ndarray, k: int, filter: Any, chunks: MemChunks | None, params: Mapping) -> list[str]:
    if hasattr(target, "search_with_stats"):  # an opened Database
        return [h["id"] for h in target.search(q, k, filter, dict(params) or None)]
    return [i for i, _ in search(target, q, k, filter, chunks=chunks, **params)]


def recall_at_k(index_or_db: Any, queries: np.ndarray, k: int = 10, *, oracle: Any, filter: Any = None,
                chunks: MemChunks | None = None, **params: Any) -> float:
    """Mean share of the oracle's (the flat index's) top ``k`` ids that ``index_or_db`` returns."""
    found = 0
    total = 0
    for q in queries:
        want = _ids_of(oracle, q, k, filter, None, {})
        got = set(_ids_of(index_or_db, q, k, filter, chunks, params))
        found += len(got.intersection(want))
        total += len(want)
    return found / max(total, 1)


class GetLog:
    """Records the GETs a local portal serves (pass ``record`` as ``portal.serve(on_request=...)``),
    so a test can count exactly which blobs a search downloaded."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.paths: list[str] = []

    def record(self, method: str, path: str) -> None:
        if method == "GET":
            with self.lock:
                self.paths.append(path)

    def clear(self) -> None:
        with self.lock:
            self.paths.clear()

    def blobs(self) -> list[str]:
        """Canonical CIDs of the blobs fetched since the last clear (one entry per GET)."""
        import urllib.parse

        from s5vec.s5.cid import BlobId

        prefix = "/s5/blob/"
        with self.lock:
            paths = list(self.paths)
        out = []
        for p in paths:
            path = urllib.parse.unquote(urllib.parse.urlsplit(p).path)
            if path.startswith(prefix):
                out.append(BlobId.parse(path[len(prefix):].strip("/")).to_string())
        return out
