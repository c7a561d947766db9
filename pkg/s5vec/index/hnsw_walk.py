"""Query-time HNSW walk for many queries in lockstep (and for one, as a batch of one).

Why: the heap-based beam search (:meth:`HNSWIndex._search_layer`) spends most of its time in
Python: a heap push per candidate and a handful of NumPy calls per expansion, for every query.
In Pyodide a NumPy call costs several microseconds, so a batch answered query by query is
bound by call overhead, not by arithmetic. Here every query of a batch moves one step at a
time, together: each step picks the ``width`` best unexpanded members of every query's pool,
gathers all their neighbour rows with one fancy index, tests the visited set of every query
with one lookup, computes every new distance with one ``einsum`` over a (queries x new x dim)
block, and merges the new candidates into the pools with one row-wise sort.

The pool of a query is its ``ef`` best nodes so far (distance, slot, expanded flag), kept
sorted; the walk of a query ends when every member of its pool has been expanded, which is the
usual HNSW stop rule (the nearest unexpanded candidate is farther than the ``ef``-th best).

Exactness: every step is row-wise (a query's pool, visited set and distances never depend on
the other rows: the ``einsum`` reduces each (query, node) pair over ``dim`` with the same kernel
whatever the block's shape, and padding is masked before the stable sort), and a search of one
query (:func:`walk_one`) takes the same steps with Python lists for its pool, so ``search_many``
returns exactly what ``search`` returns query by query (tests/test_batch_search.py, and in
Chromium e2e/test_batch_search.py).

Used for unfiltered searches of an index without tombstones; filtered searches and searches
through tombstones keep the accept-aware heap search (results there exclude nodes the walk
must still traverse).
"""
from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .hnsw import HNSWIndex

_INF32 = np.float32(np.inf)


class Graph:
    """Dense, padded copies of the links the walk reads, built once per graph version:
    ``nb0`` (n + 1, 2M) with -1 mapped to the sentinel ``n`` (its own row is all ``n``), and per
    upper layer an (n + 1, M) array with -1 padding (the sentinel row too)."""

    def __init__(self, index: "HNSWIndex") -> None:
        n = index._n
        self.n = n
        nb0 = index._nb0[:n]
        self.nb0 = np.full((n + 1, nb0.shape[1]), n, dtype=np.int32)  # int32: intp in Pyodide
        self.nb0[:n] = np.where(nb0 < 0, n, nb0)
        self.up: list[np.ndarray] = []
        for layer in index._up:
            width = max((a.shape[0] for a in layer.values()), default=0)
            dense = np.full((n + 1, max(width, 1)), -1, dtype=np.int32)
            for s, a in layer.items():
                dense[s, : a.shape[0]] = a
            self.up.append(dense)


def graph_of(index: "HNSWIndex") -> Graph:
    """The index's :class:`Graph`, rebuilt when the graph changed (insert, delete, vacuum)."""
    key = (index._n, index._inserted, index._n_dead, index._entry, index._max_level, len(index._up))
    memo = index.__dict__.get("_walk_graph")
    if memo is None or memo[0] != key:
        memo = (key, Graph(index))
        index.__dict__["_walk_graph"] = memo
    return memo[1]


def _dist(index: "HNSWIndex", Q: np.ndarray, qq: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """Distances (as :func:`s5vec.kernels.distances` defines them) from each query ``Q[a]`` to the
    nodes ``rows[a, :]``; row-wise exact: the same (query, node) pair always gives the same float."""
    dots = np.einsum("awd,ad->aw", index._vecs[rows], Q)
    metric = index.metric
    if metric == "cosine":
        return np.subtract(np.float32(1.0), dots, out=dots)
    if metric == "ip":
        return np.negative(dots, out=dots)
    d = index._sq[rows] - np.float32(2.0) * dots + qq[:, None]
    return np.maximum(d, np.float32(0.0), out=d)


def descend(index: "HNSWIndex", g: Graph, Q: np.ndarray, qq: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy (ef = 1) descent through the upper layers, all queries together: the layer-0
    entry point of each query and its distance."""
    b = Q.shape[0]
    ep = np.full(b, index._entry, dtype=np.intp)
    dep = _dist(index, Q, qq, ep[:, None])[:, 0]
    for level in range(index._max_level, 0, -1):
        up = g.up[level - 1]
        act = np.arange(b)
        while act.shape[0]:
            nb = up[ep[act]]
            valid = nb >= 0
            d = _dist(index, Q[act], qq[act] if qq is not None else None, np.where(valid, nb, 0))
            d[~valid] = _INF32
            j = d.argmin(axis=1)
            dj = d[np.arange(act.shape[0]), j]
            better = dj < dep[act]
            act = act[better]
            ep[act] = nb[better, j[better]]
            dep[act] = dj[better]
    return ep, dep


def descend_one(index: "HNSWIndex", g: Graph, Q: np.ndarray, qq: np.ndarray | None) -> tuple[int, np.float32]:
    """:func:`descend` for one query (``Q`` of one row): the same steps and floats, fewer calls."""
    ep = int(index._entry)
    dep = _dist(index, Q, qq, np.array([[ep]], dtype=np.intp))[0, 0]
    for level in range(index._max_level, 0, -1):
        up = g.up[level - 1]
        while True:
            nb = up[ep]
            nb = nb[nb >= 0]  # links are packed left: the batch's valid prefix
            if nb.shape[0] == 0:
                break
            d = _dist(index, Q, qq, nb[None, :])[0]
            j = int(d.argmin())
            if not d[j] < dep:
                break
            ep, dep = int(nb[j]), d[j]
    return ep, dep


def walk_one(index: "HNSWIndex", q: np.ndarray, ef: int, width: int) -> tuple[list[float], list[int], np.ndarray]:
    """:func:`walk` for one query, step for step the same (same picks, same candidates, same
    float distances, same stable order), with the pool kept in Python lists: for a single query
    a few list operations are cheaper than the batch's masks over padded rows."""
    g = graph_of(index)
    n = g.n
    Q = q[None, :]
    qq = np.einsum("ad,ad->a", Q, Q) if index.metric == "l2" else None
    ep, dep = descend_one(index, g, Q, qq)
    pd: list[float] = [float(dep)]
    ps: list[int] = [ep]
    px: list[bool] = [False]
    size = 1
    lo = 0  # every pool member before lo is expanded
    visited = np.zeros(n + 1, dtype=bool)
    visited[n] = True
    visited[ep] = True
    scratch = np.empty(n + 1, dtype=np.int32)
    nb0 = g.nb0
    pos_all = np.arange(width * nb0.shape[1], dtype=np.int32)
    while True:
        sel = []
        i = lo
        while i < size:
            if not px[i]:
                px[i] = True
                sel.append(ps[i])
                if len(sel) == width:
                    break
            i += 1
        if not sel:
            break
        lo = i
        nb = nb0[sel].ravel()
        new = ~visited[nb]
        pos = pos_all[: nb.shape[0]]
        scratch[nb] = pos
        new &= scratch[nb] == pos
        visited[nb] = True
        cs = nb[new]
        if cs.shape[0] == 0:
            continue
        cd = _dist(index, Q, qq, cs[None, :])[0]
        for d, c in zip(cd.tolist(), cs.tolist()):
            if size >= ef:
                if d >= pd[-1]:
                    continue
                del pd[-1], ps[-1], px[-1]
                size -= 1
            i = bisect_right(pd, d)
            pd.insert(i, d)
            ps.insert(i, c)
            px.insert(i, False)
            size += 1
            if i < lo:
                lo = i
    return pd, ps, visited


#: a step over at least this many queries computes its distances in _SPLITS groups of rows with
#: similar counts of new nodes (less padding gathered: the gather is most of a step's cost)
_SPLIT_MIN = 32
_SPLITS = 4


def walk(index: "HNSWIndex", Q: np.ndarray, ef: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer-0 pools of the queries ``Q`` (b, dim): distances (b, ef) float32 ascending, slots
    (b, ef) (-1 = empty), and the visited sets (b, n + 1) bool (column n is the sentinel)."""
    g = graph_of(index)
    n = g.n
    b = Q.shape[0]
    qq = np.einsum("ad,ad->a", Q, Q) if index.metric == "l2" else None
    rows_all = np.arange(b)
    ep, dep = descend(index, g, Q, qq)
    # -- layer 0: lockstep beam search with fixed pools of ef
    pool_d = np.full((b, ef), _INF32, dtype=np.float32)
    pool_s = np.full((b, ef), -1, dtype=np.intp)
    pool_x = np.ones((b, ef), dtype=bool)  # expanded (empty entries count as expanded)
    pool_d[:, 0], pool_s[:, 0], pool_x[:, 0] = dep, ep, False
    visited = np.zeros((b, n + 1), dtype=bool)
    visited[:, n] = True
    visited[rows_all, ep] = True
    vflat = visited.reshape(-1)
    scratch = np.empty(b * (n + 1), dtype=np.int32)  # written before it is read
    nb0 = g.nb0
    m0 = nb0.shape[1]
    pos_all = np.arange(width * m0, dtype=np.int32)[None, :]
    act = rows_all
    while act.shape[0]:
        a = act.shape[0]
        ar = rows_all[:a, None]
        px = pool_x[act]
        open_ = ~px
        rank = np.cumsum(open_, axis=1)
        pick = open_ & (rank <= width)
        r, c = np.nonzero(pick)
        ps = pool_s[act]
        sel = np.full((a, width), n, dtype=np.intp)
        sel[r, rank[r, c] - 1] = ps[r, c]
        px[r, c] = True
        nb = nb0[sel].reshape(a, width * m0)
        fi = nb + (act * (n + 1))[:, None]
        new = ~vflat[fi]
        # shared neighbours of the expanded nodes: keep one copy (the last write wins)
        scratch[fi] = pos_all
        new &= scratch[fi] == pos_all
        vflat[fi] = True
        cnt = new.sum(axis=1)
        w = int(cnt.max())
        if w:
            order = np.argsort(~new, axis=1, kind="stable")[:, :w]
            cs = nb[ar, order]
            ok = new[ar, order]
            bad = ~ok
            cs[bad] = 0
            Qa = Q[act]
            qa = qq[act] if qq is not None else None
            if a < _SPLIT_MIN:
                cd = _dist(index, Qa, qa, cs)
            else:  # rows by their count of new nodes, in groups padded to their own width
                cd = np.empty((a, w), dtype=np.float32)
                for g in np.array_split(np.argsort(cnt, kind="stable"), _SPLITS):
                    wg = int(cnt[g[-1]])
                    if wg:
                        cd[g, :wg] = _dist(index, Qa[g], qa[g] if qa is not None else None, cs[g, :wg])
            cd[bad] = _INF32
            cs[bad] = -1
            all_d = np.concatenate([pool_d[act], cd], axis=1)
            keep = np.argsort(all_d, axis=1, kind="stable")[:, :ef]
            nd = all_d[ar, keep]
            ns = np.concatenate([ps, cs], axis=1)[ar, keep]
            nx = np.concatenate([px, bad], axis=1)[ar, keep]
        else:
            nd, ns, nx = pool_d[act], ps, px
        pool_d[act], pool_s[act], pool_x[act] = nd, ns, nx
        act = act[~nx.all(axis=1)]
    return pool_d, pool_s, visited


def scan_rest(index: "HNSWIndex", q: np.ndarray, visited: np.ndarray, k: int,
              have: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The walk held fewer than ``k`` nodes (a graph smaller than ``k`` or not all reachable):
    add the live nodes it never visited, nearest first, until ``k``."""
    n = index._n
    rest = np.flatnonzero(~visited[:n] & ~index._dead[:n])
    if rest.shape[0] == 0:
        return have
    qq = np.einsum("ad,ad->a", q[None, :], q[None, :]) if index.metric == "l2" else None
    d = _dist(index, q[None, :], qq, rest[None, :])[0]
    out = list(have)
    for i in np.lexsort((rest, d))[: max(0, k - len(have))].tolist():
        out.append((float(d[i]), int(rest[i])))
    out.sort()
    return out


#: a lockstep group holds at most this many (query, slot) cells of visited state
_GROUP_CELLS = 1 << 22


def search_many(index: "HNSWIndex", Q: np.ndarray, k: int, ef: int) -> list[list[tuple[float, int]]]:
    """Best ``k`` (distance, slot) of each query row of ``Q`` (no filter, no tombstones), in
    groups small enough that the per-query visited sets stay a few MB."""
    ef = max(ef, k)
    group = max(1, min(256, _GROUP_CELLS // (index._n + 1)))
    out: list[list[tuple[float, int]]] = []
    for lo in range(0, Q.shape[0], group):
        Qg = Q[lo: lo + group]
        pool_d, pool_s, visited = walk(index, Qg, ef, index.expand_batch)
        got_all = (pool_s >= 0).sum(axis=1).tolist()
        for j, got in enumerate(got_all):
            res = list(zip(pool_d[j, :min(got, k)].tolist(), pool_s[j, :min(got, k)].tolist()))
            if got < k:
                res = scan_rest(index, Qg[j], visited[j], k, res)
            out.append(res)
    return out


def search_one(index: "HNSWIndex", q: np.ndarray, k: int, ef: int) -> list[tuple[float, int]]:
    """:func:`search_many` of one query (the same result), through :func:`walk_one`."""
    pd, ps, visited = walk_one(index, q, max(ef, k), index.expand_batch)
    res = list(zip(pd[:k], ps[:k]))
    if len(res) < k:
        res = scan_rest(index, q, visited, k, res)
    return res
