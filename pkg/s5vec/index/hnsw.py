"""HNSW graph index (Malkov & Yashunin, 2016/2018) in pure Python + NumPy.

Layout (``n`` = slots in use, slots are append-only until :meth:`HNSWIndex.vacuum` compacts):

- ``_vecs``  float32 ``[cap, dim]``: vectors *prepared* for the metric (unit length for cosine);
  ``_sq`` their squared norms (used by the l2 kernel).
- ``_ids`` / ``_meta`` per slot lists, ``_slot`` live id -> slot, ``_ts`` float64 timestamps,
  ``_levels`` int32 top layer of each node, ``_dead`` bool tombstones.
- layer 0: ``_nb0`` int32 ``[cap, 2M]`` neighbour rows, packed left and padded with -1,
  ``_cnt0`` int32 counts; layers >= 1: ``_up[l - 1]`` dict slot -> int32 array (at most M).

Search hot loop: for each popped candidate its unvisited neighbours are gathered with one
fancy index and their distances computed with one :func:`s5vec.kernels.distances` call; the
visited set is a generation-stamped int32 array, the heaps are :mod:`heapq`.

Construction connects new nodes in batches (:meth:`HNSWIndex._insert_batch0`): the batch searches
the graph in lockstep on one pool matrix, so NumPy calls are shared by up to 64 insertions.

Tombstoned and filtered-out nodes are traversed but never returned.  With a filter (or
tombstones) the layer-0 search keeps expanding until ``ef`` *accepted* nodes are held (the
hnswlib rule), so it only runs dry when every node reachable from the entry point has been
visited; the remaining nodes (unreachable, e.g. after heavy deletion) are then scanned in
distance order, so a search returns ``k`` results whenever ``k`` matching records exist.
"""
from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .. import kernels
from ..errors import FormatError, InvalidArgumentError, UnknownIdError
from ..filters import Filter, fields_of
from ..query import NO_CHUNKS, Chunks, Hit, HNSWSearchParams, Outcome, Query, Record
from . import hnsw_lazy, hnsw_walk
from .base import ChunkReader, ChunkWriter
from .records import check_batch

_INF = float("inf")
_MAX_LEVEL = 30
_EF_LIMIT = 1_000_000
# A filter matching at most this many records (or this share of them) is answered exactly by
# brute force over its matches; a broader one walks the graph with a cached match mask.
_BRUTE_MIN = 2048
_BRUTE_FRACTION = 0.05
_MASK_CACHE = 16


_PAIRWISE_MAX = 80  # link pruning with up to this many candidates scores all pairs at once


def _check_int(name: str, value: object, lo: int, hi: int = 1 << 31) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise InvalidArgumentError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return int(value)


class HNSWIndex:
    """Hierarchical navigable small world graph; see the module docstring for the layout."""

    kind = "hnsw"
    search_params = HNSWSearchParams

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        seed: int = 0,
        vectors_dtype: str = "float32",
        lazy_base: bool | None = None,
    ) -> None:
        self.dim = _check_int("dim", dim, 1, 1 << 20)
        if lazy_base is not None and not isinstance(lazy_base, bool):
            raise InvalidArgumentError(f"lazy_base must be true, false or null, got {lazy_base!r}")
        #: save the base layer as lazily fetched chunks (hnsw_lazy): None = when it is big
        self.lazy_base = lazy_base
        #: the lazily fetched base layer of an index opened that way (None = eager)
        self._lazy: hnsw_lazy.LazyBase | None = None
        if vectors_dtype not in ("float32", "float16"):
            raise InvalidArgumentError(f"vectors_dtype must be 'float32' or 'float16', got {vectors_dtype!r}")
        #: float16 halves the bytes an open downloads (vectors are rounded on insert, so a loaded
        #: index equals the one that was saved); searches compute in float32 either way
        self.vectors_dtype = vectors_dtype
        self.metric = kernels.check_metric(metric)
        self.M = _check_int("M", M, 2, 1024)
        self.ef_construction = _check_int("ef_construction", ef_construction, 1, _EF_LIMIT)
        self.ef_search = _check_int("ef_search", ef_search, 1, _EF_LIMIT)
        self.seed = _check_int("seed", seed, 0, (1 << 63) - 1)
        self.M0 = 2 * self.M
        #: candidates expanded per step of the beam search (1 = the paper's loop); batching cuts
        #: NumPy calls per distance computed, which is what costs in CPython and even more in Pyodide
        self.expand_batch = 4
        #: pool members expanded per step while building (see _search_build)
        self.build_batch = 16
        #: level-0 nodes connected together (see _insert_batch0); fewer while the graph is small
        self.insert_batch = 64
        #: nearest candidates scored all-pairs at once by the batched heuristic (_select_many)
        self.select_width = 48
        self._mult = 1.0 / math.log(self.M)
        self._inserted = 0  # total insertions ever; seeds the level RNG of each batch
        self._reset(16)

    # ------------------------------------------------------------------ storage

    def _reset(self, cap: int) -> None:
        self._n = 0
        self._cap = cap
        self._vecs = np.zeros((cap, self.dim), dtype=np.float32)
        self._sq = np.zeros(cap, dtype=np.float32)
        self._ts = np.zeros(cap, dtype=np.float64)
        self._levels = np.zeros(cap, dtype=np.int32)
        self._dead = np.zeros(cap, dtype=bool)
        self._nb0 = np.full((cap, self.M0), -1, dtype=np.int32)
        self._cnt0 = np.zeros(cap, dtype=np.int32)
        self._visit = np.zeros(cap + 1, dtype=np.int32)  # [cap] is the sentinel for padding -1
        self._scratch = np.zeros(cap + 1, dtype=np.int32)
        self._stamp = 0
        self._ids: list[str] = []
        self._meta: list[dict[str, Any]] = []
        self._slot: dict[str, int] = {}
        self._up: list[dict[int, np.ndarray]] = []
        self._entry = -1
        self._max_level = -1
        self._n_dead = 0

    def _reserve(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = self._cap
        while cap < need:
            cap *= 2

        def grow(a: np.ndarray, fill: Any = 0) -> np.ndarray:
            out = np.full((cap,) + a.shape[1:], fill, dtype=a.dtype)
            out[: self._n] = a[: self._n]
            return out

        self._vecs = grow(self._vecs)
        self._sq = grow(self._sq)
        self._ts = grow(self._ts)
        self._levels = grow(self._levels)
        self._dead = grow(self._dead, False)
        self._nb0 = grow(self._nb0, -1)
        self._cnt0 = grow(self._cnt0)
        self._visit = np.zeros(cap + 1, dtype=np.int32)
        self._scratch = np.zeros(cap + 1, dtype=np.int32)
        self._stamp = 0
        self._cap = cap

    def _new_stamp(self) -> int:
        self._stamp += 1
        if self._stamp >= 2**31 - 1:
            self._visit[:] = 0
            self._stamp = 1
        self._visit[-1] = self._stamp
        return self._stamp

    def _neighbours(self, s: int, level: int) -> np.ndarray:
        if level == 0:
            return self._nb0[s, : self._cnt0[s]]
        return self._up[level - 1][s]

    def _dist(self, q: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return kernels.distances(q, self._vecs.take(slots.astype(np.intp, copy=False), axis=0), self.metric, self._sq[slots])

    # ------------------------------------------------------------------ public accessors

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, id: object) -> bool:
        return id in self._slot

    def _live_slot(self, id: str) -> int:
        try:
            return self._slot[id]
        except (KeyError, TypeError):
            raise UnknownIdError(f"unknown id {id!r}") from None

    def metadata(self, id: str) -> dict[str, Any]:
        return dict(self._meta[self._live_slot(id)])

    def timestamp(self, id: str) -> float:
        return float(self._ts[self._live_slot(id)])

    def vector(self, id: str) -> np.ndarray:
        """The stored vector (as prepared for the metric: unit length for cosine)."""
        hnsw_lazy.require_resident(self, "read a vector of")
        return self._vecs[self._live_slot(id)].copy()

    def ids(self) -> list[str]:
        return [self._ids[s] for s in np.flatnonzero(~self._dead[: self._n]).tolist()]

    def items(self) -> Iterator[tuple[str, np.ndarray, dict[str, Any], float]]:
        """(id, vector, metadata, timestamp) of every live record, in slot order."""
        hnsw_lazy.require_resident(self, "read the vectors of")
        for s in np.flatnonzero(~self._dead[: self._n]).tolist():
            yield self._ids[s], self._vecs[s].copy(), dict(self._meta[s]), float(self._ts[s])

    def spec(self) -> str:
        """Short description for the manifest, faiss style."""
        return f"HNSW{self.M}" + (",f16" if self.vectors_dtype == "float16" else "")

    # ------------------------------------------------------------------ mutation

    def add(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        timestamps: Sequence[float] | None = None,
        progress: Callable[[int, int], Any] | None = None,
    ) -> None:
        """Insert records; an id already present is replaced (its old slot is tombstoned)."""
        hnsw_lazy.require_resident(self, "add to")
        ids, mat, metas, ts = check_batch(self.dim, ids, vectors, metadata, timestamps)
        total = len(ids)
        if total == 0:
            return
        prepared = kernels.prepare(mat, self.metric)
        if self.vectors_dtype == "float16":
            prepared = prepared.astype(np.float16).astype(np.float32)
        sq = kernels.sq_norms(prepared)
        rng = np.random.default_rng([self.seed, self._inserted])
        u = 1.0 - rng.random(total)  # in (0, 1]
        levels = np.minimum((-np.log(u) * self._mult).astype(np.int64), _MAX_LEVEL).tolist()
        self._inserted += total
        self._reserve(self._n + total)
        s0 = self._n
        self._vecs[s0 : s0 + total] = prepared
        self._sq[s0 : s0 + total] = sq
        self._ts[s0 : s0 + total] = ts
        self._levels[s0 : s0 + total] = levels
        for i in range(total):
            old = self._slot.get(ids[i])
            if old is not None:
                self._tombstone(old)
            self._ids.append(ids[i])
            self._meta.append(metas[i])
            self._slot[ids[i]] = s0 + i
        self._n = s0 + total
        # Slots s0.. hold their vectors now but have no links, so no search reaches them until
        # they are connected, in batches (see _insert_batch0) once the graph is big enough.
        every = max(1, min(1000, total // 100))
        done = 0

        def report(k: int) -> None:
            nonlocal done
            if progress is not None and (done // every != (done + k) // every or done + k == total):
                progress(done + k, total)
            done += k

        try:
            with kernels.one_blas_thread():
                self._link_new(s0, total, levels, report)
        finally:
            self.__dict__.pop("_bvisit", None)  # B x cap stamps: not worth holding between adds
            self.__dict__.pop("_bscratch", None)

    def _link_new(self, s0: int, total: int, levels: list[int], report: Callable[[int], None]) -> None:
        """Connect slots s0 .. s0 + total - 1 (stored, not linked) into the graph."""
        linked = s0  # every slot below s0 was connected by an earlier add()
        pending: list[int] = []
        for i in range(total):
            s = s0 + i
            b = min(self.insert_batch, linked // 64)
            if self._entry < 0 or b <= 1:
                self._insert_slot(s, levels[i])
                linked += 1
                report(1)
                continue
            pending.append(i)
            if len(pending) >= b:
                self._insert_batch0(np.array(pending, dtype=np.int64) + s0, [levels[j] for j in pending])
                linked += len(pending)
                report(len(pending))
                pending = []
        if pending:
            self._insert_batch0(np.array(pending, dtype=np.int64) + s0, [levels[j] for j in pending])
            report(len(pending))

    def _tombstone(self, s: int) -> None:
        self._dead[s] = True
        self._n_dead += 1
        del self._slot[self._ids[s]]

    def delete(self, ids: Iterable[str]) -> int:
        """Tombstone records (they stay in the graph for routing until :meth:`vacuum`)."""
        if isinstance(ids, str):
            ids = [ids]
        ids = list(dict.fromkeys(ids))
        missing = [i for i in ids if not isinstance(i, str) or i not in self._slot]
        if missing:
            raise UnknownIdError(f"unknown id {missing[0]!r}")
        for i in ids:
            self._tombstone(self._slot[i])
        return len(ids)

    # ------------------------------------------------------------------ graph construction

    def _heuristic(self, ds: np.ndarray, cands: np.ndarray, m: int, keep_pruned: bool = False) -> np.ndarray:
        """Algorithm 4: ``cands`` sorted by distance ``ds`` to the base; keep a candidate only if
        it is closer to the base than to every neighbour already kept."""
        n = cands.shape[0]
        if n <= m:
            return cands
        sub = self._vecs.take(cands.astype(np.intp, copy=False), axis=0)
        sq = self._sq[cands]
        metric = self.metric
        # Candidates still eligible are the set bits of ``ok`` (bit j = j-th nearest to the base).
        # Selecting i discards every later j that is closer to i than to the base.  One distance
        # row per *selected* candidate (not a full pairwise matrix: a small sgemm is slower than
        # a few gemv calls once OpenBLAS decides to thread it).
        ok = (1 << n) - 1
        sel: list[int] = []
        if n <= _PAIRWISE_MAX:
            # few candidates (a full neighbour list plus one, when a link overflows): one sgemm
            # for every pair, one packbits for every row, then the selection is integer bit ops
            bad = kernels.pairwise(sub, metric, sq) < ds[None, :]
            rows = np.packbits(bad, axis=1, bitorder="little")
            masks = [int.from_bytes(r.tobytes(), "little") for r in rows]
            while ok and len(sel) < m:
                i = (ok & -ok).bit_length() - 1
                sel.append(i)
                ok &= ~(masks[i] & ~((2 << i) - 1)) & ~(1 << i)
        while ok and len(sel) < m:
            i = (ok & -ok).bit_length() - 1
            sel.append(i)
            j = i + 1
            if j >= n:
                break
            bad = kernels.distances(sub[i], sub[j:], metric, sq[j:]) < ds[j:]
            ok &= ~((int.from_bytes(np.packbits(bad, bitorder="little").tobytes(), "little") << j) | (1 << i))
        if keep_pruned and len(sel) < m:
            chosen = set(sel)
            sel.extend([j for j in range(n) if j not in chosen][: m - len(sel)])
            sel.sort()
        return cands[sel]

    def _greedy(self, q: np.ndarray, ep: int, dep: float, level: int) -> tuple[int, float]:
        """ef=1 descent on an upper layer."""
        for _ in range(self._n + 1):  # each step strictly decreases the distance
            nb = self._up[level - 1][ep]
            if nb.shape[0] == 0:
                break
            d = self._dist(q, nb)
            j = int(d.argmin())
            dj = float(d[j])
            if dj >= dep:
                break
            ep, dep = int(nb[j]), dj
        return ep, dep

    def _search_layer(
        self,
        q: np.ndarray,
        eps: list[tuple[float, int]],
        ef: int,
        level: int,
        accept: Callable[[np.ndarray], list[bool]] | None = None,
    ) -> list[tuple[float, int]]:
        """Beam search on one layer; returns up to ``ef`` accepted (distance, slot), best first.

        ``accept(slots) -> list[bool]`` decides which nodes may be *returned*; all are traversed.
        """
        stamp = self._new_stamp()
        visit = self._visit
        vecs = self._vecs
        sq = self._sq
        metric = self.metric
        dist = kernels.distances
        push, pop, pushpop = heapq.heappush, heapq.heappop, heapq.heappushpop
        if level == 0:
            nb0 = self._nb0
        else:
            upl = self._up[level - 1]
        cand = list(eps)
        heapq.heapify(cand)
        res: list[tuple[float, int]] = []  # max-heap by -distance
        ep_slots = np.fromiter((s for _, s in eps), dtype=np.int64, count=len(eps))
        visit[ep_slots] = stamp
        oks = accept(ep_slots) if accept is not None else None
        for j, (d, s) in enumerate(eps):
            if oks is None or oks[j]:
                if len(res) < ef:
                    push(res, (-d, s))
                elif d < -res[0][0]:
                    pushpop(res, (-d, s))
        bound = -res[0][0] if len(res) >= ef else _INF
        need_sq = metric == "l2"
        batch = self.expand_batch
        scratch = self._scratch
        arange = np.arange(batch * self.M0, dtype=np.int32)
        for _ in range(self._n + 1):  # every slot enters the candidate heap at most once
            if not cand:
                break
            d, c = pop(cand)
            if d > bound:
                break
            # Expand up to ``batch`` candidates that are all within the bound in one go: one
            # gather, one visited test, one distance call for all of their neighbours.
            if batch > 1 and cand and cand[0][0] <= bound:
                cs = [c]
                while cand and len(cs) < batch and cand[0][0] <= bound:
                    cs.append(pop(cand)[1])
                if level == 0:
                    nb = nb0[cs].ravel()
                else:
                    nb = np.concatenate([upl[x] for x in cs])
                nb = nb[visit[nb] != stamp]  # padding -1 hits the sentinel, always "visited"
                if nb.shape[0] == 0:
                    continue
                # drop duplicates (shared neighbours): last write wins in the scratch array
                ar = arange[: nb.shape[0]]
                scratch[nb] = ar
                nb = nb[scratch[nb] == ar]
            else:
                nb = nb0[c] if level == 0 else upl[c]
                nb = nb[visit[nb] != stamp]
                if nb.shape[0] == 0:
                    continue
            visit[nb] = stamp
            ds = dist(q, vecs[nb], metric, sq[nb] if need_sq else None)
            if bound != _INF:
                keep = ds < bound
                nb = nb[keep]
                if nb.shape[0] == 0:
                    continue
                ds = ds[keep]
            oks = accept(nb) if accept is not None else None
            for j, (dd, s) in enumerate(zip(ds.tolist(), nb.tolist())):
                if dd < bound:
                    push(cand, (dd, s))
                    if oks is None or oks[j]:
                        if len(res) < ef:
                            push(res, (-dd, s))
                            if len(res) >= ef:
                                bound = -res[0][0]
                        else:
                            pushpop(res, (-dd, s))
                            bound = -res[0][0]
        out = [(-nd, s) for nd, s in res]
        out.sort()
        return out

    def _search_build(self, q: np.ndarray, pd: np.ndarray, ps: np.ndarray, ef: int, level: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Beam search for construction, on arrays instead of heaps: returns (distances, slots)
        of the ``ef`` nearest found, best first.

        The pool holds the ``ef`` best scored so far, sorted; each step expands the
        ``build_batch`` nearest unexpanded members at once (one gather, one visited test, one
        distance call for all their neighbours) and merges the survivors with one argsort.
        Expanding only pool members is what the heap version does too (a candidate farther than
        the ef-th best is never expanded); batching expands a few more nodes than strictly
        necessary, so the graph is at least as well connected, with 5-10x fewer Python steps.
        """
        stamp = self._new_stamp()
        visit = self._visit
        visit[ps] = stamp
        order = np.argsort(pd, kind="stable")[:ef]
        ps, pd = ps[order], pd[order]
        pe = np.zeros(ps.shape[0], dtype=bool)
        vecs, sq, metric = self._vecs, self._sq, self.metric
        need_sq = metric == "l2"
        scratch = self._scratch
        batch = self.build_batch
        nb0 = self._nb0
        upl = self._up[level - 1] if level > 0 else None
        dist = kernels.distances
        while True:
            todo = np.flatnonzero(~pe)[:batch]
            if todo.shape[0] == 0:
                break
            pe[todo] = True
            if upl is None:
                nb = nb0[ps[todo]].ravel()
            else:
                nb = np.concatenate([upl[x] for x in ps[todo].tolist()])
            nb = nb[visit[nb] != stamp]  # padding -1 hits the sentinel, always "visited"
            if nb.shape[0] == 0:
                continue
            ar = np.arange(nb.shape[0], dtype=np.int32)
            scratch[nb] = ar  # drop shared neighbours: last write wins
            nb = nb[scratch[nb] == ar]
            visit[nb] = stamp
            ds = dist(q, vecs.take(nb.astype(np.intp, copy=False), axis=0), metric, sq[nb] if need_sq else None)
            if ps.shape[0] >= ef:
                keep = ds < pd[-1]
                if not keep.any():
                    continue
                nb, ds = nb[keep], ds[keep]
            ps = np.concatenate((ps, nb))
            pd = np.concatenate((pd, ds))
            pe = np.concatenate((pe, np.zeros(nb.shape[0], dtype=bool)))
            order = np.argsort(pd, kind="stable")[:ef]
            ps, pd, pe = ps[order], pd[order], pe[order]
        return pd, ps

    def _insert_slot(self, s: int, level: int) -> None:
        """Connect slot ``s`` (vector already stored) into the graph on layers 0..level."""
        if self._entry < 0:
            self._entry, self._max_level = s, level
            while len(self._up) < level:
                self._up.append({})
            for l in range(1, level + 1):
                self._up[l - 1].setdefault(s, np.empty(0, dtype=np.int32))
            return
        q = self._vecs[s]
        ep = self._entry
        dep = float(self._dist(q, np.array([ep]))[0])
        for l in range(self._max_level, level, -1):
            ep, dep = self._greedy(q, ep, dep, l)
        eds = np.array([dep], dtype=np.float32)
        eps = np.array([ep], dtype=np.int64)
        while len(self._up) < level:
            self._up.append({})
        for l in range(min(level, self._max_level), -1, -1):
            ds, cs = self._search_build(q, eds, eps, self.ef_construction, l)
            found = cs.shape[0] > 0
            if found:
                sel = self._heuristic(ds, cs.astype(np.int32), self.M)
            else:
                sel = np.empty(0, dtype=np.int32)
            if l == 0:
                self._nb0[s, : sel.shape[0]] = sel
                self._nb0[s, sel.shape[0] :] = -1
                self._cnt0[s] = sel.shape[0]
            else:
                self._up[l - 1][s] = sel.astype(np.int32)
            for e in sel.tolist():
                self._add_link(e, s, l)
            if found:
                eds, eps = ds, cs
        for l in range(self._max_level + 1, level + 1):
            self._up[l - 1][s] = np.empty(0, dtype=np.int32)
        if level > self._max_level:
            self._entry, self._max_level = s, level

    # ------------------------------------------------------------------ batched construction

    def _insert_batch0(self, slots: np.ndarray, levels: list[int]) -> None:
        """Connect nodes ``slots`` (vectors stored, no links yet; top layers ``levels``) together,
        as parallel HNSW builders do: every node searches the graph as it was before the batch
        (on layer 0 all in lockstep, :meth:`_search_build_many`), its batch peers join its
        layer-0 candidates with distances from one pairwise product, the heuristic picks the
        neighbours of all of them at once (:meth:`_select_many`), and the back links are added at
        the end (:meth:`_add_links0`). Upper layers (one node in M has them) are searched before
        and linked after layer 0: the descent through the layers above a node's own is one
        lockstep greedy walk for the whole batch (:meth:`_greedy_many`), the ef search on a node's
        own upper layers is node by node (one node in M has them), and their back links are
        added per layer at the end (:meth:`_add_links_up`)."""
        vecs, metric, efc = self._vecs, self.metric, self.ef_construction
        q = vecs.take(slots.astype(np.intp, copy=False), axis=0)
        qsq = self._sq[slots]
        top = self._max_level
        d0 = kernels.distances(vecs[self._entry], q, metric, qsq)  # symmetric: entry -> each new node
        eps = np.full(slots.shape[0], self._entry, dtype=np.int64)
        epd = d0.astype(np.float32)
        lv = np.asarray(levels)
        uppers: list[tuple[int, int, np.ndarray]] = []  # (slot, layer, links)
        chain: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # node -> its last upper-layer search
        for l in range(top, 0, -1):
            walk = np.flatnonzero(lv < l)
            if walk.shape[0]:
                eps[walk], epd[walk] = self._greedy_many(q, qsq, walk, eps[walk], epd[walk], l)
            for b in np.flatnonzero(lv >= l).tolist():
                eds, ecs = chain.get(b) or (epd[b : b + 1], eps[b : b + 1])
                ds, cs = self._search_build(q[b], eds, ecs, efc, l)
                uppers.append((int(slots[b]), l, self._heuristic(ds, cs.astype(np.int32), self.M)))
                chain[b] = (ds, cs)
        for b, (ds, cs) in chain.items():
            eps[b], epd[b] = cs[0], ds[0]
        pd, ps = self._search_build_many(q, qsq, eps, epd, self.ef_construction)
        peer = kernels.pairwise(q, metric, qsq)
        np.fill_diagonal(peer, _INF)
        cd = np.concatenate((pd, peer), axis=1)
        cs = np.concatenate((ps, np.broadcast_to(slots, peer.shape)), axis=1)
        order = np.argsort(cd, axis=1, kind="stable")[:, : self.ef_construction]
        cd = np.take_along_axis(cd, order, axis=1)
        cs = np.take_along_axis(cs, order, axis=1).astype(np.int32)
        nb0, cnt0, M = self._nb0, self._cnt0, self.M
        sel, nsel = self._select_many(cd, cs, M, self.select_width)
        nb0[slots, : M] = sel
        nb0[slots, M:] = -1
        cnt0[slots] = nsel
        ok = sel >= 0
        es = [sel[ok]]
        counts = nsel
        self._add_links0(np.concatenate(es).astype(np.int64), np.repeat(slots, counts.astype(np.intp, copy=False)))
        if not uppers:
            return
        for s, l, sel in uppers:  # every row first, so a back link never meets a missing one
            self._up[l - 1][s] = sel.astype(np.int32)
        for l in range(1, top + 1):
            mine = [(s, sel) for s, ll, sel in uppers if ll == l and sel.shape[0]]
            if mine:
                self._add_links_up(l, np.concatenate([sel for _, sel in mine]).astype(np.int64),
                                   np.concatenate([np.full(sel.shape[0], s, np.int64) for s, sel in mine]))
        for b in np.flatnonzero(np.asarray(levels) > 0).tolist():
            s, L = int(slots[b]), levels[b]
            while len(self._up) < L:
                self._up.append({})
            for l in range(1, L + 1):
                self._up[l - 1].setdefault(s, np.empty(0, dtype=np.int32))
            if L > self._max_level:
                self._entry, self._max_level = s, L

    def _greedy_many(self, q: np.ndarray, qsq: np.ndarray, which: np.ndarray, e: np.ndarray, dep: np.ndarray,
                     level: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_greedy` (ef=1 descent on upper layer ``level``) for queries ``q[which]`` from
        entries ``e`` at distances ``dep``, in lockstep: each step scores the current node's
        links of every query still moving with one gather, and moves those that improved."""
        upl, vecs, metric = self._up[level - 1], self._vecs, self.metric
        e, dep = e.copy(), dep.copy()
        act = np.arange(which.shape[0])
        for _ in range(self._n + 1):  # each step strictly decreases every moving distance
            rows = [upl[x] for x in e[act].tolist()]
            lens = np.fromiter((r.shape[0] for r in rows), dtype=np.intp, count=len(rows))
            if not lens.any():
                break
            nb = np.concatenate(rows).astype(np.intp, copy=False)
            own = np.repeat(np.arange(act.shape[0]), lens)
            qs = which[act][own]
            dots = np.einsum("ij,ij->i", vecs.take(nb, axis=0), q.take(qs, axis=0))
            if metric == "cosine":
                d = 1.0 - dots
            elif metric == "ip":
                d = -dots
            else:
                d = np.maximum(self._sq[nb] - 2.0 * dots + qsq[qs], 0.0)
            pos = np.arange(nb.shape[0]) - np.repeat(np.cumsum(lens) - lens, lens)
            D = np.full((act.shape[0], int(lens.max())), _INF, dtype=np.float32)
            D[own, pos] = d
            NB = np.zeros(D.shape, dtype=np.intp)
            NB[own, pos] = nb
            j = D.argmin(axis=1)
            best = D[np.arange(act.shape[0]), j]
            moved = best < dep[act]
            if not moved.any():
                break
            act = act[moved]
            e[act] = NB[moved, j[moved]]
            dep[act] = best[moved]
        return e, dep

    def _add_links_up(self, level: int, es: np.ndarray, ss: np.ndarray) -> None:
        """Upper-layer back links e -> s for many pairs: a row with room gets its new links
        appended; the rows that would overflow M are re-picked together (:meth:`_repick`)."""
        upl, M = self._up[level - 1], self.M
        order = np.argsort(es, kind="stable")
        es, ss = es[order], ss[order].astype(np.int32)
        uniq, start, counts = np.unique(es, return_index=True, return_counts=True)
        over: list[int] = []
        cands: list[np.ndarray] = []
        for e, a, c in zip(uniq.tolist(), start.tolist(), counts.tolist()):
            row, new = upl[e], ss[a : a + c]
            new = new[~(new[:, None] == row[None, :]).any(axis=1)]
            if new.shape[0] == 0:
                continue
            if row.shape[0] + new.shape[0] <= M:
                upl[e] = np.concatenate((row, new))
            else:
                over.append(e)
                cands.append(np.concatenate((row, new)))
        if not over:
            return
        K = max(c.shape[0] for c in cands)
        cand = np.full((len(over), K), -1, dtype=np.int64)
        for r, c in enumerate(cands):
            cand[r, : c.shape[0]] = c
        sel, nsel = self._repick(np.asarray(over, dtype=np.int64), cand, M)
        for r, e in enumerate(over):
            upl[e] = sel[r, : nsel[r]].copy()

    def _select_many(self, cd: np.ndarray, cs: np.ndarray, m: int, width: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_heuristic` for R candidate lists at once: ``cd``/``cs`` ``[R, K]`` are each
        row's candidates sorted by distance to its base (padding: inf / -1). Returns the kept
        slots ``[R, m]`` (left-packed, -1 padded) and how many each row kept.

        Candidates are taken in blocks of ``width`` columns (all K when 0), only for the rows
        still short of m: a batched product scores the block against itself and against what
        the row kept so far, then the greedy pass walks the block's columns once for all rows
        (candidate j is dropped when it is closer to a kept one than to the base)."""
        R, K = cs.shape
        width = width or K
        out = np.full((R, m), -1, dtype=np.int32)
        nsel = np.zeros(R, dtype=np.int64)
        for lo in range(0, K, width):
            act = np.flatnonzero((nsel < m) & (cs[:, lo] >= 0))
            if act.shape[0] == 0:
                break
            bs, bd = cs[act, lo : lo + width], cd[act, lo : lo + width]
            g, gsq = self._rows_of(bs)
            bad = self._pair(g, gsq, g, gsq) < bd[:, None, :]
            alive = bs >= 0
            if lo:
                ks = out[act]
                kg, ksq = self._rows_of(ks)
                near = (self._pair(kg, ksq, g, gsq) < bd[:, None, :]) & (ks >= 0)[:, :, None]
                alive &= ~near.any(axis=1)
            W = bs.shape[1]
            kept = np.zeros((act.shape[0], W), dtype=bool)
            ns = nsel[act]
            for j in range(W):
                take = alive[:, j] & (ns < m)
                if j:
                    take &= ~(bad[:, :j, j] & kept[:, :j]).any(axis=1)
                kept[:, j] = take
                ns += take
                if not (ns < m).any():
                    break
            r, c = np.nonzero(kept)
            rank = np.cumsum(kept, axis=1) - 1 + nsel[act][:, None]
            out[act[r], rank[r, c]] = bs[r, c]
            nsel[act] = ns
        return out, nsel

    def _rows_of(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Vectors (and, for l2, squared norms) of a slot array; padding -1 reads slot 0."""
        s = np.maximum(slots, 0)
        return self._vecs.take(s.astype(np.intp, copy=False), axis=0), (self._sq[s] if self.metric == "l2" else None)

    def _pair(self, a: np.ndarray, asq: np.ndarray | None, b: np.ndarray, bsq: np.ndarray | None) -> np.ndarray:
        """Distances ``[R, i, j]`` between rows a[r, i] and b[r, j] (one batched product)."""
        d = np.matmul(a, b.transpose(0, 2, 1))
        if self.metric == "cosine":
            return np.subtract(1.0, d, out=d)
        if self.metric == "ip":
            return np.negative(d, out=d)
        d *= -2.0
        d += asq[:, :, None]
        d += bsq[:, None, :]
        return np.maximum(d, 0.0, out=d)

    def _search_build_many(self, q: np.ndarray, qsq: np.ndarray, eps: np.ndarray, epd: np.ndarray, ef: int
                           ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_search_build` on layer 0 for B queries at once: returns (distances, slots),
        each ``[B, ef]``, best first, padded with inf / -1.

        The B pools are the rows of one matrix; a step takes the ``build_batch`` nearest
        unexpanded members of every row, gathers all their neighbours at once, drops the ones that
        row visited (one uint8 stamp array per row, generation counted: small enough to stay in
        cache at 100k nodes x 64 rows), scores each query's new
        neighbours with one gemv, and merges every row with one argsort, so the Python and NumPy
        call overhead of a step is shared by B insertions."""
        B, cap1 = q.shape[0], self._cap + 1
        vis, scr = self._batch_visit(B * cap1)
        stamp = self._bstamp
        # keys (row b, slot s) -> b * cap1 + 1 + s, int32 while they fit (half the bytes to move)
        kt = np.int32 if B * cap1 < 2**31 else np.int64
        off = np.arange(B, dtype=kt) * kt(cap1) + kt(1)
        vis[off - 1] = stamp  # offset 0 of each row stands for the padding -1: always "visited"
        vis[off + eps] = stamp
        pd = np.full((B, ef), _INF, dtype=np.float32)
        ps = np.full((B, ef), -1, dtype=np.int32)
        pe = np.ones((B, ef), dtype=bool)  # expanded (or empty)
        pd[:, 0], ps[:, 0], pe[:, 0] = epd, eps, False
        vecs, sq, nb0, metric = self._vecs, self._sq, self._nb0, self.metric
        step = self.build_batch
        dot, take = np.dot, vecs.take  # the bound method: np.take's Python wrapper costs ~1 us a call
        qrows = list(q)
        while True:
            todo = ~pe
            if step < ef:
                todo &= np.cumsum(todo, axis=1) <= step
            rows, cols = np.nonzero(todo)
            if rows.shape[0] == 0:
                break
            pe[rows, cols] = True
            # row-major: grouped by query; ndarray.take is the fast row gather
            key = (nb0.take(ps[rows, cols].astype(np.intp, copy=False), axis=0) + off[rows][:, None]).ravel()
            key = key[vis[key] != stamp]
            if key.shape[0] == 0:
                continue
            vis[key] = stamp  # a key twice (shared neighbour) is scored twice, dropped below
            own = key // kt(cap1)
            nb = (key - own * kt(cap1) - kt(1)).astype(np.intp, copy=False)  # take wants intp
            ends = np.cumsum(np.bincount(own.astype(np.intp, copy=False), minlength=B)).tolist()
            dots = np.empty(nb.shape[0], dtype=np.float32)
            lo = 0
            for b, hi in enumerate(ends):  # gather per query: its rows stay in cache for the gemv
                if hi > lo:
                    dot(take(nb[lo:hi], 0), qrows[b], out=dots[lo:hi])
                lo = hi
            if metric == "cosine":
                d = np.subtract(1.0, dots, out=dots)
            elif metric == "ip":
                d = np.negative(dots, out=dots)
            else:
                d = sq[nb] - 2.0 * dots + qsq[own]
                np.maximum(d, 0.0, out=d)
            keep = d < pd[own, -1]
            if not keep.all():
                d, nb, own, key = d[keep], nb[keep], own[keep], key[keep]
                if d.shape[0] == 0:
                    continue
            # shared neighbours of one row (~4% of the keys; only the ~1/4 that survived the
            # bound are checked): last write wins in the scratch array
            tag = np.arange(key.shape[0], dtype=np.int32)
            scr[key] = tag
            first = scr[key] == tag
            if not first.all():
                d, nb, own = d[first], nb[first], own[first]
            counts = np.bincount(own.astype(np.intp, copy=False), minlength=B)
            pos = np.arange(own.shape[0]) - (np.cumsum(counts) - counts)[own] + ef
            W = ef + int(counts.max())
            ad = np.full((B, W), _INF, dtype=np.float32)
            ad[:, :ef] = pd
            ad[own, pos] = d
            order = np.argsort(ad, axis=1, kind="stable")[:, :ef]
            pd = np.take_along_axis(ad, order, axis=1)
            ns = np.full((B, W), -1, dtype=np.int32)
            ns[:, :ef] = ps
            ns[own, pos] = nb
            ps = np.take_along_axis(ns, order, axis=1)
            ne = np.ones((B, W), dtype=bool)
            ne[:, :ef] = pe
            ne[own, pos] = False
            pe = np.take_along_axis(ne, order, axis=1)
        return pd, ps

    def _batch_visit(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The per-row visited stamps (uint8, generations 1..255) of :meth:`_search_build_many`
        and its int32 scratch for dropping repeats (grown on demand, reused within an add)."""
        vis = self.__dict__.get("_bvisit")
        if vis is None or vis.shape[0] < size:
            vis = self._bvisit = np.zeros(size, dtype=np.uint8)
            self._bscratch = np.zeros(size, dtype=np.int32)
            self._bstamp = 0
        self._bstamp += 1
        if self._bstamp > 255:
            vis[:] = 0
            self._bstamp = 1
        return vis, self._bscratch

    def _add_links0(self, es: np.ndarray, ss: np.ndarray) -> None:
        """Layer-0 back links e -> s for many pairs: rows with room get theirs appended in one
        scatter; rows that would overflow are re-picked by the heuristic, one by one."""
        nb0, cnt0, M0 = self._nb0, self._cnt0, self.M0
        new = ~(nb0[es] == ss[:, None]).any(axis=1)
        es, ss = es[new], ss[new]
        if es.shape[0] == 0:
            return
        order = np.argsort(es, kind="stable")
        es, ss = es[order], ss[order]
        uniq, start, counts = np.unique(es, return_index=True, return_counts=True)
        have = cnt0[uniq]
        fits = have + counts <= M0
        rank = np.arange(es.shape[0]) - np.repeat(start, counts)
        ok = np.repeat(fits, counts)
        nb0[es[ok], (cnt0[es] + rank)[ok]] = ss[ok]
        cnt0[uniq[fits]] = (have + counts)[fits]
        over = np.flatnonzero(~fits)
        for lo in range(0, over.shape[0], 128):  # blocks bound the [R, W, dim] gather
            part = over[lo : lo + 128]
            self._prune_rows0(uniq[part], start[part], counts[part], ss)

    def _prune_rows0(self, rows: np.ndarray, start: np.ndarray, counts: np.ndarray, ss: np.ndarray) -> None:
        """Rows ``rows`` of layer 0 plus their new links ``ss[start:start+counts]`` overflow M0:
        each keeps what the heuristic picks among old and new (all rows at once)."""
        nb0, M0 = self._nb0, self.M0
        R = rows.shape[0]
        cand = np.full((R, M0 + int(counts.max())), -1, dtype=np.int64)
        cand[:, :M0] = nb0[rows]
        own = np.repeat(np.arange(R), counts)
        col = M0 + np.arange(own.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
        cand[own, col] = ss[np.repeat(start, counts) + (col - M0)]
        sel, nsel = self._repick(rows, cand, M0)
        nb0[rows] = sel
        self._cnt0[rows] = nsel

    def _repick(self, rows: np.ndarray, cand: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The heuristic's picks (at most ``m``, left-packed, -1 padded, and their counts) for
        each of ``rows`` among its candidates ``cand`` ([R, K] slots, -1 padded), all at once."""
        g = self._vecs.take(np.maximum(cand, 0).astype(np.intp, copy=False), axis=0)
        d = np.matmul(g, self._vecs.take(rows.astype(np.intp, copy=False), axis=0)[:, :, None])[:, :, 0]
        if self.metric == "cosine":
            np.subtract(1.0, d, out=d)
        elif self.metric == "ip":
            np.negative(d, out=d)
        else:
            d = self._sq[np.maximum(cand, 0)] - 2.0 * d + self._sq[rows][:, None]
            np.maximum(d, 0.0, out=d)
        d[cand < 0] = _INF
        order = np.argsort(d, axis=1, kind="stable")
        return self._select_many(np.take_along_axis(d, order, axis=1), np.take_along_axis(cand, order, axis=1), m)

    def _add_link(self, e: int, s: int, level: int) -> None:
        """Add the edge e -> s; if e's list overflows, shrink it with the heuristic."""
        if level == 0:
            c = int(self._cnt0[e])
            row = self._nb0[e, :c]
            if c < self.M0:
                if not (row == s).any():
                    self._nb0[e, c] = s
                    self._cnt0[e] = c + 1
                return
            mmax = self.M0
        else:
            row = self._up[level - 1][e]
            if row.shape[0] < self.M:
                if not (row == s).any():
                    self._up[level - 1][e] = np.append(row, np.int32(s))
                return
            mmax = self.M
        if (row == s).any():
            return
        cands = np.append(row, np.int32(s))
        d = self._dist(self._vecs[e], cands)
        order = np.argsort(d, kind="stable")
        sel = self._heuristic(d[order], cands[order], mmax)
        self._set_row(e, level, sel)

    def _set_row(self, e: int, level: int, sel: np.ndarray) -> None:
        if level == 0:
            k = sel.shape[0]
            self._nb0[e, :k] = sel
            self._nb0[e, k:] = -1
            self._cnt0[e] = k
        else:
            self._up[level - 1][e] = sel.astype(np.int32)

    # ------------------------------------------------------------------ search

    def plan(self, query: Query) -> list[str]:
        return self._lazy.plan(query) if self._lazy is not None else []  # else loaded whole

    @property
    def max_rounds(self) -> int | None:
        """Rounds one query may take (the request layer's cap): a lazy base layer walks in rounds."""
        return hnsw_lazy.MAX_ROUNDS if self._lazy is not None else None

    def plan_all(self) -> list[str]:
        """The chunks ``load_all`` needs to make a lazily opened index eager (writable)."""
        return self._lazy.plan_all() if self._lazy is not None else []

    def load_all(self, chunks: Chunks) -> None:
        if self._lazy is not None:
            self._lazy.load_all(chunks)

    def plan_get(self, id: str) -> list[str]:
        return []

    def get(self, id: str, chunks: Chunks = NO_CHUNKS) -> Record | None:
        s = self._slot.get(id)
        return None if s is None else Record(id, dict(self._meta[s]), float(self._ts[s]))

    def search(self, query: Query, chunks: Chunks = NO_CHUNKS) -> Outcome:
        """Best ``k`` for one prepared query. ``params.ef`` widens the beam (default
        ``ef_search``, never below ``k``)."""
        if not self._slot:
            return Outcome()
        if self._lazy is not None:
            return self._lazy.search(query, chunks)
        q, k, flt = query.vector, query.k, query.filter
        ef = max(query.params.ef or self.ef_search, k)
        if flt is not None:
            mask = self._filter_mask(flt)
            matching = np.flatnonzero(mask)
            if matching.shape[0] <= max(_BRUTE_MIN, _BRUTE_FRACTION * len(self)):
                # selective filter: exact search over the few matches beats walking the graph
                # through thousands of non-matching nodes
                d = self._dist(q, matching)
                return Outcome([self._hit(int(matching[i]), float(d[i])) for i in kernels.top_k(d, k)])
            accept = lambda slots: mask[slots].tolist()  # noqa: E731
        else:
            accept = self._live_acceptor()
            if accept is None:  # the lockstep walk, as a batch of one (what search_many runs)
                res = hnsw_walk.search_one(self, q, k, ef)
                return Outcome([self._hit(s, d) for d, s in res])
        ep = self._entry
        dep = float(self._dist(q, np.array([ep]))[0])
        for l in range(self._max_level, 0, -1):
            ep, dep = self._greedy(q, ep, dep, l)
        res = self._search_layer(q, [(dep, ep)], ef, 0, accept)
        if len(res) < k:
            res = self._scan_rest(q, res, k, accept)
        return Outcome([self._hit(s, d) for d, s in res[:k]])

    def search_many(self, queries: Sequence[Query], chunks: Chunks = NO_CHUNKS) -> list[Outcome]:
        """``search`` of every query (the same hits); unfiltered queries of an index without
        tombstones walk the graph together (:mod:`s5vec.index.hnsw_walk`), in groups of equal
        ``k`` and ``ef``."""
        out: list[Outcome | None] = [None] * len(queries)
        if self._slot and self._live_acceptor() is None and self._lazy is None:
            groups: dict[tuple[int, int], list[int]] = {}
            for i, query in enumerate(queries):
                if query.filter is None:
                    ef = max(query.params.ef or self.ef_search, query.k)
                    groups.setdefault((query.k, ef), []).append(i)
            for (k, ef), members in groups.items():
                Q = np.stack([queries[i].vector for i in members])
                for i, res in zip(members, hnsw_walk.search_many(self, Q, k, ef)):
                    out[i] = Outcome([self._hit(s, d) for d, s in res])
        return [o if o is not None else self.search(q, chunks) for o, q in zip(out, queries)]

    def _hit(self, s: int, d: float) -> Hit:
        return Hit(self._ids[s], d, self._meta[s])

    def _filter_mask(self, flt: Filter) -> np.ndarray:
        """Live slots matching ``flt``, as a bool array; cached per filter until the index changes."""
        cache = self.__dict__.setdefault("_masks", OrderedDict())
        key = (flt.key(), self._n, self._inserted, self._n_dead)
        mask = cache.get(key)
        if mask is not None:
            cache.move_to_end(key)
            return mask
        n = self._n
        meta, ts, dead = self._meta, self._ts[:n].tolist(), self._dead[:n].tolist()
        mask = np.fromiter(
            (not dead[s] and flt.matches(fields_of(meta[s], ts[s])) for s in range(n)), dtype=bool, count=n)
        cache[key] = mask
        while len(cache) > _MASK_CACHE:
            cache.popitem(last=False)
        return mask

    def _live_acceptor(self) -> Callable[[np.ndarray], list[bool]] | None:
        """Unfiltered search: accept every live node (None when there are no tombstones).
        Filtered searches accept through the cached match mask (:meth:`_filter_mask`)."""
        if self._n_dead == 0:
            return None
        dead = self._dead
        return lambda slots: (~dead[slots]).tolist()

    def _scan_rest(
        self, q: np.ndarray, res: list[tuple[float, int]], k: int, accept: Callable[[np.ndarray], list[bool]] | None
    ) -> list[tuple[float, int]]:
        """The traversal ran dry before finding k accepted nodes, so it visited every node
        reachable from the entry point; scan the others (live, unvisited) in distance order."""
        n = self._n
        rest = np.flatnonzero((self._visit[:n] != self._stamp) & ~self._dead[:n])
        if rest.shape[0] == 0:
            return res
        d = self._dist(q, rest)
        order = np.argsort(d, kind="stable")
        out = list(res)
        step = max(64, 4 * k)
        for lo in range(0, order.shape[0], step):
            part = order[lo : lo + step]
            slots = rest[part]
            oks = accept(slots) if accept is not None else [True] * slots.shape[0]
            for dd, s, ok in zip(d[part].tolist(), slots.tolist(), oks):
                if ok:
                    out.append((dd, s))
            if len(out) >= k:
                break
        out.sort()
        return out

    # ------------------------------------------------------------------ vacuum

    def vacuum(self) -> int:
        """Remove tombstoned nodes for real, repair the links that pointed at them, compact slots.

        Each live node that lost neighbours re-picks them (heuristic) among its surviving
        neighbours and the surviving neighbours of the removed ones.  Returns the number removed.
        """
        hnsw_lazy.require_resident(self, "vacuum")
        n = self._n
        dead = self._dead[:n].copy()
        removed = int(dead.sum())
        if removed == 0:
            return 0
        self.__dict__.pop("_base_packed", None)  # slots are renumbered: a lazy layout cannot be kept
        if removed == n:
            inserted = self._inserted
            self._reset(16)
            self._inserted = inserted
            return removed
        self._repair_links(dead)
        self._compact(dead)
        # nodes left without any layer-0 neighbour are re-linked by a fresh search
        if self._n > 1:
            for s in np.flatnonzero(self._cnt0[: self._n] == 0).tolist():
                self._relink0(s)
        return removed

    def _repair_links(self, dead: np.ndarray) -> None:
        """Every live node that links to a dead one re-picks its neighbours (all layers)."""
        n = self._n
        dead_x = np.append(dead, False)  # index -1 (padding) -> not dead
        nb0, cnt0 = self._nb0, self._cnt0
        hit = dead_x[nb0[:n]].any(axis=1) & ~dead
        for s in np.flatnonzero(hit).tolist():
            row = nb0[s, : cnt0[s]]
            pool = [row]
            pool.extend(nb0[x, : cnt0[x]] for x in row[dead[row]].tolist())
            self._repair(s, 0, np.concatenate(pool), dead, self.M0)
        for l in range(1, len(self._up) + 1):
            layer = self._up[l - 1]
            for s, row in list(layer.items()):
                if dead[s] or row.shape[0] == 0 or not dead[row].any():
                    continue
                pool = [row]
                pool.extend(layer[x] for x in row[dead[row]].tolist())
                self._repair(s, l, np.concatenate(pool), dead, self.M)

    def _compact(self, dead: np.ndarray) -> None:
        """Drop the dead slots and renumber the live ones (links remapped, order kept)."""
        n = self._n
        live = np.flatnonzero(~dead)
        m = live.shape[0]
        remap = np.full(n + 1, -1, dtype=np.int32)  # last entry maps padding -1 -> -1
        remap[live] = np.arange(m, dtype=np.int32)
        rows = remap[self._nb0[live]]
        order = np.argsort(rows < 0, axis=1, kind="stable")
        rows = np.take_along_axis(rows, order, axis=1)
        ups: list[dict[int, np.ndarray]] = []
        for layer in self._up:
            new: dict[int, np.ndarray] = {}
            for s in sorted(layer):
                if not dead[s]:
                    r = remap[layer[s]]
                    new[int(remap[s])] = r[r >= 0].astype(np.int32)
            ups.append(new)
        vecs, sq, ts, levels = self._vecs[live], self._sq[live], self._ts[live], self._levels[live]
        ids = [self._ids[s] for s in live.tolist()]
        meta = [self._meta[s] for s in live.tolist()]
        inserted = self._inserted
        cap = 16
        while cap < m:
            cap *= 2
        self._reset(cap)
        self._inserted = inserted
        self._n = m
        self._vecs[:m], self._sq[:m], self._ts[:m], self._levels[:m] = vecs, sq, ts, levels
        self._nb0[:m] = rows
        self._cnt0[:m] = (rows >= 0).sum(axis=1)
        self._ids, self._meta = ids, meta
        self._slot = {i: s for s, i in enumerate(ids)}
        top = int(levels.max())
        self._up = ups[:top]
        self._max_level = top
        self._entry = int(np.flatnonzero(levels == top)[0])

    def _relink0(self, s: int) -> None:
        """Give an isolated node layer-0 neighbours by a search from the entry point."""
        q = self._vecs[s]
        if s == self._entry:
            others = np.flatnonzero(self._cnt0[: self._n] > 0)
            if others.shape[0] == 0:
                others = np.array([1 if s == 0 else 0])
            ep = int(others[0])
            dep = float(self._dist(q, np.array([ep]))[0])
        else:
            ep = self._entry
            dep = float(self._dist(q, np.array([ep]))[0])
            for l in range(self._max_level, 0, -1):
                ep, dep = self._greedy(q, ep, dep, l)
        found = [p for p in self._search_layer(q, [(dep, ep)], self.ef_construction, 0) if p[1] != s]
        if not found:
            return
        ds = np.fromiter((p[0] for p in found), dtype=np.float32, count=len(found))
        cs = np.fromiter((p[1] for p in found), dtype=np.int32, count=len(found))
        sel = self._heuristic(ds, cs, self.M)
        self._set_row(s, 0, sel)
        for e in sel.tolist():
            self._add_link(e, s, 0)

    def _repair(self, s: int, level: int, pool: np.ndarray, dead: np.ndarray, mmax: int) -> None:
        pool = np.unique(pool[pool >= 0])
        pool = pool[~dead[pool] & (pool != s)]
        if pool.shape[0] < self.M:  # too few: widen to two hops through the survivors
            extra = [self._neighbours(x, level) for x in pool.tolist()]
            if extra:
                pool = np.unique(np.concatenate([pool, *extra]))
                pool = pool[~dead[pool] & (pool != s)]
        if pool.shape[0] == 0:
            self._set_row(s, level, pool.astype(np.int32))
            return
        d = self._dist(self._vecs[s], pool)
        order = np.argsort(d, kind="stable")[: max(2 * mmax, self.ef_construction)]
        sel = self._heuristic(d[order], pool[order].astype(np.int32), mmax)
        self._set_row(s, level, sel)

    # ------------------------------------------------------------------ persistence

    def save(self, writer: ChunkWriter, chunk_rows: int = 1024) -> dict[str, Any]:
        """Write "hnsw_nodes" chunks (ids, vectors, metadata, timestamps, levels per slot range),
        "hnsw_links" chunks (tombstones and layer-0 rows for the same ranges) and one
        "hnsw_upper" chunk (upper layers as CSR, entry point, params).  Ranges start at multiples
        of ``chunk_rows``, so an unchanged range yields byte-identical chunks."""
        chunk_rows = _check_int("chunk_rows", chunk_rows, 1, 1 << 24)
        hnsw_lazy.require_resident(self, "save")
        if hnsw_lazy.wants_lazy(self):
            return hnsw_lazy.save(self, writer, chunk_rows)
        n = self._n
        nodes: list[str] = []
        links: list[str] = []
        for lo in range(0, n, chunk_rows):
            hi = min(n, lo + chunk_rows)
            nodes.append(writer.put("hnsw_nodes", self._nodes_body(lo, hi)))
            links.append(writer.put("hnsw_links", {
                "start": lo,
                "deleted": self._dead[lo:hi].astype(np.uint8),
                "layer0": np.ascontiguousarray(self._nb0[lo:hi]),
            }))
        upper = writer.put("hnsw_upper", self._upper_body())
        desc = {
            "kind": self.kind, "dim": self.dim, "metric": self.metric, "M": self.M,
            "ef_construction": self.ef_construction, "ef_search": self.ef_search, "seed": self.seed,
            "count": n, "live": len(self), "chunk_rows": chunk_rows,
            "nodes": nodes, "links": links, "upper": upper, "vectors_dtype": self.vectors_dtype,
        }
        if self.lazy_base is not None:
            desc["lazy_base"] = self.lazy_base
        return desc

    def _nodes_body(self, lo: int, hi: int) -> dict[str, Any]:
        return {
            "start": lo,
            "ids": self._ids[lo:hi],
            "vectors": np.ascontiguousarray(self._vecs[lo:hi], dtype=np.dtype(self.vectors_dtype)),
            "metadata": self._meta[lo:hi],
            "timestamps": np.ascontiguousarray(self._ts[lo:hi]),
            "levels": np.ascontiguousarray(self._levels[lo:hi]),
        }

    def _upper_body(self) -> dict[str, Any]:
        """Upper layers as CSR (node ``nodes[i]``'s links are ``links[offsets[i]:offsets[i+1]]``)."""
        layers = []
        for layer in self._up:
            keys = sorted(layer)
            rows = [layer[s] for s in keys]
            offsets = np.zeros(len(keys) + 1, dtype=np.int32)
            if rows:
                offsets[1:] = np.cumsum([r.shape[0] for r in rows])
            flat = np.concatenate(rows).astype(np.int32) if rows else np.empty(0, np.int32)
            layers.append({"nodes": np.asarray(keys, dtype=np.int32), "offsets": offsets, "links": flat})
        return {"count": self._n, "entry": self._entry, "max_level": self._max_level,
                "inserted": self._inserted, "layers": layers}

    @classmethod
    def load(cls, desc: Mapping[str, Any], reader: ChunkReader) -> "HNSWIndex":
        """Rebuild from a descriptor (the format version is the manifest's, checked by layout)."""
        try:
            if desc.get("kind") != cls.kind:
                raise FormatError("not an hnsw descriptor")
            idx = cls(desc["dim"], desc["metric"], M=desc["M"], ef_construction=desc["ef_construction"],
                      ef_search=desc["ef_search"], seed=desc["seed"],
                      vectors_dtype=desc.get("vectors_dtype", "float32"))
            if desc.get("lazy_base") not in (None, True, False):
                raise FormatError("hnsw lazy_base must be a boolean")
            idx.lazy_base = desc.get("lazy_base")
            if "base" in desc:  # the lazily fetched layout (hnsw_lazy): resident parts only
                hnsw_lazy.load(idx, desc, reader)
                return idx
            n = int(desc["count"])
            cap = 16
            while cap < n:
                cap *= 2
            idx._reset(cap)
            idx._load_nodes(desc, reader, n)
            idx._load_upper(reader.get(desc["upper"], "hnsw_upper"), n)
            return idx
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise FormatError(f"malformed hnsw index: {exc!r}") from None

    def _load_nodes(self, desc: Mapping[str, Any], reader: ChunkReader, n: int) -> None:
        """Fill slots 0..n from the "hnsw_nodes"/"hnsw_links" chunk pairs, then check layer 0."""
        rows = int(desc["chunk_rows"])
        nodes, links = list(desc["nodes"]), list(desc["links"])
        want = -(-n // rows) if n else 0
        if len(nodes) != want or len(links) != want:
            raise FormatError("hnsw descriptor chunk lists do not match its count")
        ids: list[str] = []
        meta: list[dict[str, Any]] = []
        for c, (ncid, lcid) in enumerate(zip(nodes, links)):
            lo, hi = c * rows, min(n, (c + 1) * rows)
            nb, lb = reader.get(ncid, "hnsw_nodes"), reader.get(lcid, "hnsw_links")
            if int(nb["start"]) != lo or int(lb["start"]) != lo:
                raise FormatError("hnsw chunk out of order")
            r = hi - lo
            cids, cmeta = chunk_records(nb, r, "hnsw_nodes")
            ids.extend(cids)
            meta.extend(cmeta)
            self._vecs[lo:hi] = _arr(nb["vectors"], np.float32, (r, self.dim))
            self._ts[lo:hi] = _arr(nb["timestamps"], np.float64, (r,))
            self._levels[lo:hi] = _arr(nb["levels"], np.int32, (r,))
            self._dead[lo:hi] = _arr(lb["deleted"], np.uint8, (r,)) != 0
            self._nb0[lo:hi] = _arr(lb["layer0"], np.int32, (r, self.M0))
        self._n = n
        self._sq[:n] = kernels.sq_norms(self._vecs[:n])
        nb0 = self._nb0[:n]
        valid = nb0 >= 0
        if (nb0 >= n).any() or (nb0 < -1).any() or (valid[:, 1:] & ~valid[:, :-1]).any():
            raise FormatError("hnsw layer-0 links out of range or not packed")
        self._cnt0[:n] = valid.sum(axis=1)
        self._ids, self._meta = ids, meta
        self._index_live(n, "hnsw")

    def _index_live(self, n: int, what: str) -> None:
        """The id -> slot map of the live slots of a loaded index (ids and tombstones set), and
        its dead count; an id live twice is a FormatError."""
        self._slot = {self._ids[s]: s for s in np.flatnonzero(~self._dead[:n]).tolist()}
        if len(self._slot) != n - int(self._dead[:n].sum()):
            raise FormatError(f"{what} chunk holds a live id twice")
        self._n_dead = n - len(self._slot)

    def _load_upper(self, up: Mapping[str, Any], n: int) -> None:
        """Upper layers (CSR per layer), entry point and insert counter from the "hnsw_upper" chunk."""
        if int(up["count"]) != n:
            raise FormatError("hnsw_upper chunk does not match the descriptor")
        for layer in up["layers"]:
            keys = _arr(layer["nodes"], np.int32, None)
            offs = _arr(layer["offsets"], np.int64, (keys.shape[0] + 1,))
            flat = _arr(layer["links"], np.int32, None)
            steps = np.diff(offs)
            if offs[0] != 0 or offs[-1] != flat.shape[0] or (steps < 0).any() or (steps > self.M).any():
                raise FormatError("hnsw upper layer offsets are inconsistent")
            if ((keys < 0) | (keys >= n)).any() or ((flat < 0) | (flat >= n)).any():
                raise FormatError("hnsw upper layer links out of range")
            self._up.append({int(s): flat[offs[j]: offs[j + 1]].copy() for j, s in enumerate(keys.tolist())})
        self._entry, self._max_level = int(up["entry"]), int(up["max_level"])
        self._inserted = int(up["inserted"])
        if n and not (0 <= self._entry < n and self._max_level == len(self._up)):
            raise FormatError("hnsw entry point or level count is inconsistent")


def chunk_records(body: Mapping[str, Any], r: int, kind: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The ids and metadata of a chunk of ``r`` nodes (``hnsw_nodes``, or ``hnsw_records`` of the
    lazy layout), checked: ``r`` string ids and ``r`` maps, else FormatError."""
    ids, meta = list(body["ids"]), list(body["metadata"])
    if len(ids) != r or len(meta) != r or not all(isinstance(i, str) for i in ids):
        raise FormatError(f"{kind} chunk has the wrong number of ids or metadata")
    if not all(type(m) is dict or isinstance(m, Mapping) for m in meta):  # dict first: fast
        raise FormatError(f"{kind} metadata must be maps")
    return ids, [dict(m) for m in meta]


def _arr(value: Any, dtype: Any, shape: tuple[int, ...] | None, what: str = "hnsw") -> np.ndarray:
    a = np.asarray(value, dtype=dtype)
    if shape is None:
        a = a.reshape(-1)
    elif a.shape != shape:
        if a.size == 0 and math.prod(shape) == 0:
            return np.zeros(shape, dtype=dtype)
        raise FormatError(f"{what} array has shape {a.shape}, expected {shape}")
    return a
