"""A lazily fetched HNSW base layer (DiskANN-style layout and beam search).

Why: an HNSW index opens by downloading every node's vector and layer-0 links (100k x 384 at
float16: ~90 MB). Most of that is read by no query: a search expands ~100 nodes. So a big HNSW
is saved with only its small parts resident, and the rest in small chunks fetched when a walk
expands a node (WebANNS, arXiv 2507.00521; DiskANN, NeurIPS 2019):

- resident at open (``hnsw_records`` chunks, ``hnsw_base_dir``, ``hnsw_upper``): ids, metadata,
  timestamps, levels and tombstones of every node (hits and filters need them), a compact
  navigation code of every node (PQ with principal-axes rotation; ``m`` from ~dim/8 bytes up,
  the smallest that ranks held-out neighbours well, :func:`choose_codec`), the upper layers
  (links), and the directory of base chunks;
- lazy (``hnsw_base``, ``rows`` nodes each, named by raw CID in the directory, not in the
  manifest): each node's layer-0 link row and its full vector (float16 or float32). A chunk holds
  a seed node and its nearest neighbours (:func:`block_order`), so one fetch serves several
  expansions.

The walk (:class:`Walk`) is DiskANN's beam search: the pool holds the ``ef`` best candidates by
navigation-code distance; each step expands the ``WIDTH`` best unexpanded ones, which needs their
base chunks (links, and the exact distance, which ranks the node in the pool from then on and in
the final re-rank). When a chunk is not held the
walk suspends: ``search`` returns ``Outcome(widen=...)`` carrying the walk, ``plan`` names the
missing chunks plus those of the next candidates (read-ahead), the request layer fetches them,
and the walk resumes. The steps never depend on what was cached (only the number of rounds
does), so a cold and a warm search, or a batch and one-by-one, return the same hits. Decoded
blocks live in the chunk store like every other chunk (one cache, one byte budget: the reader's
``peek`` finds a block the store holds without fetching it, so a warm repeat runs in one search
call with no fetch); a walk keeps the blocks of its own steps until it ends. Selective filters
(up to 20% of the records) skip the graph: their matches are
ranked by code and the best ``ef`` re-ranked exactly, in one round. Hits are the expanded nodes ranked by exact distance.

An index opened this way is read-only until :meth:`LazyBase.load_all` (the chunks named by
``plan_all``) makes it eager, as the request layer does before an edit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .. import kernels
from .. import quantizers as qz
from ..errors import CIDError, FormatError, InvalidArgumentError
from ..query import Chunks, Hit, Outcome, Query
from ..s5.cid import BlobId
from .base import ChunkReader, ChunkWriter

if TYPE_CHECKING:  # pragma: no cover
    from .hnsw import HNSWIndex

BASE_KIND = "hnsw_base"
RECORDS_KIND = "hnsw_records"
DIR_KIND = "hnsw_base_dir"

#: an HNSW whose base layer (vectors + layer-0 links) exceeds this is saved lazily (unless
#: ``lazy_base=False``); the hybrid's capped recent part (10k) stays far below it
AUTO_BYTES = 32 * 2**20
# Tuned on 100k x 384 (bench/bench_hnsw_lazy.py, cold queries, recall@10 0.983-0.987 throughout):
# rows 16 / width 4 / read-ahead 24 fetched 1,227 KB in 9.1 rounds per query; rows 8 / 4 / 24: 684 KB,
# 9.7 rounds; rows 8 / 16 / 16: 470 KB, 6.5 rounds (a wider beam needs fewer rounds and, expanding
# the pool's best together, no more nodes); speculative read-ahead beyond the step cost bytes and
# saved few rounds.
BASE_ROWS = 8         # nodes per hnsw_base chunk (~7 KB at 384-d float16)
WIDTH = 16            # candidates expanded per step
READ_AHEAD = 16       # base chunks one round may name (the step's own first, then the next candidates')
WALK_ROUNDS = 40      # suspensions before the walk finishes its pool in one last round
MAX_ROUNDS = WALK_ROUNDS + 4  # what the request layer allows one query (api.QueryRun)
_BLOCK = "__hnsw_block__"  # key under which a checked block is memoised on its decoded chunk body
# A filter matching at most this many records (or this share) is answered from the codes of its
# matches (all resident) and an exact re-rank of their best ef: one round. Walking the graph through
# a sparse filter expands many rejected nodes: at 12.5% matching (20k x 64) the walk fetched 190
# chunks in 18 rounds per query, so the share is higher than the eager index's 5%.
_BRUTE_MIN = 2048
_BRUTE_FRACTION = 0.2


def base_bytes(index: "HNSWIndex") -> int:
    """Bytes of the base layer as saved: every node's vector and layer-0 link row."""
    return index._n * (index.dim * np.dtype(index.vectors_dtype).itemsize + index.M0 * 4)


def wants_lazy(index: "HNSWIndex") -> bool:
    policy = getattr(index, "lazy_base", None)
    if policy is not None:
        return bool(policy) and index._n > 0
    return base_bytes(index) > AUTO_BYTES


def nav_sizes(dim: int) -> list[int]:
    """Candidate navigation code sizes (PQ ``m``, bytes per node), smallest first: ~dim/8 (at
    least min(32, dim/2)), then doubling, up to one byte per dimension."""
    out: list[int] = []
    target = max(dim // 8, min(32, dim // 2), 1)
    while True:
        m = next(c for c in range(min(target, dim), 0, -1) if dim % c == 0)
        if not out or m > out[-1]:
            out.append(m)
        if m >= dim:
            return out
        target = 2 * m


#: a navigation code must rank a held-out query's true top 10 within its own top 10 this well
#: (on a sample of up to 20,000 nodes): at 0.74 the walk's recall@10 trailed the eager walk's by
#: 0.04 (20k x 64 clustered), from 0.95 it matched it (20k x 64 at 64 bytes, 100k x 384 at 48)
NAV_RECALL = 0.85
_NAV_SAMPLE = 20_000
_NAV_QUERIES = 100


def choose_codec(vecs: np.ndarray, metric: str, seed: int) -> tuple[qz.PQCodec, dict[str, Any]]:
    """The smallest navigation PQ whose held-out ranking reaches :data:`NAV_RECALL` (else the
    best one tried): trained on a sample, scored by recall@10 of its own top 10 against exact
    distances for held-out nodes. Returns the codec and what was measured."""
    n, dim = vecs.shape
    rng = np.random.default_rng(seed)
    pick = rng.permutation(n)
    nq = min(_NAV_QUERIES, n // 10)
    qs, sample = vecs[pick[:nq]], vecs[np.sort(pick[nq: nq + _NAV_SAMPLE])]
    truth = None
    if nq and sample.shape[0] > 10:
        sq = kernels.sq_norms(sample) if metric == "l2" else None
        truth = [set(kernels.top_k(kernels.distances(q, sample, metric, sq), 10).tolist()) for q in qs]
    tried: list[tuple[float, int, qz.PQCodec]] = []
    for m in nav_sizes(dim):
        codec = qz.PQCodec(dim, m, 8, metric, seed=seed, rotate=True)
        codec.train(sample)
        if truth is None:
            return codec, {"m": m}
        codes = codec.encode(sample)
        r = float(np.mean([len(t & set(kernels.top_k(codec.distances(q, codes), 10).tolist())) / 10
                           for q, t in zip(qs, truth)]))
        tried.append((r, m, codec))
        if r >= NAV_RECALL:
            break
    r, m, codec = max(tried, key=lambda t: (t[0], -t[1])) if tried[-1][0] < NAV_RECALL else tried[-1]
    return codec, {"m": m, "recall": round(r, 4), "tried": {str(t[1]): round(t[0], 4) for t in tried}}


# ------------------------------------------------------------------ save

def block_order(nb0: np.ndarray, n: int, rows: int, prefix: np.ndarray | None = None) -> np.ndarray:
    """Slots in base-chunk order: each block is a seed (the lowest slot not yet placed) and its
    nearest unplaced layer-0 neighbours, then theirs (two hops), up to ``rows``. A walk expands a
    node and then, mostly, its near neighbours: packed this way, one fetched block serves several
    expansions (the block layout of Starling, SIGMOD 2024, in its simplest form).

    ``prefix``: the order an edited index was loaded with, kept as it was (new slots are packed
    after it), so a block whose nodes' links did not change is byte for byte the chunk it was."""
    placed = np.zeros(n + 1, dtype=bool)
    placed[n] = True  # the padding sentinel (-1 -> n)
    nb = np.where(nb0[:n] < 0, n, nb0[:n])
    out = np.empty(n, dtype=np.int64)
    k = 0
    if prefix is not None:
        placed[prefix] = True
        out[: prefix.shape[0]] = prefix
        k = int(prefix.shape[0])
    for seed in range(n):
        if placed[seed]:
            continue
        block = [seed]
        placed[seed] = True
        frontier = [seed]
        while len(block) < rows and frontier:
            cand = nb[frontier].ravel()
            cand = cand[~placed[cand]]
            if cand.shape[0] == 0:
                break
            _, first = np.unique(cand, return_index=True)
            cand = cand[np.sort(first)][: rows - len(block)]
            placed[cand] = True
            block.extend(cand.tolist())
            frontier = cand.tolist()
        out[k: k + len(block)] = block
        k += len(block)
    return out


@dataclass(frozen=True)
class Packed:
    """The base layout a lazily opened index was made resident from (``load_all``): its slot
    order and block size. Slots keep their vectors for life (a replaced id gets a new slot), so
    until a vacuum renumbers them, ``save`` can keep this packing."""

    order: np.ndarray
    rows: int


def save(index: "HNSWIndex", writer: ChunkWriter, chunk_rows: int, rows: int = BASE_ROWS) -> dict[str, Any]:
    """Write the lazy layout of an eager ``index``; returns its descriptor (see docs/FORMAT.md)."""
    n, dim = index._n, index.dim
    vecs = index._vecs[:n]
    kept = index.__dict__.get("_nav_codec")  # from a lazy open made eager: same codes, no training
    codec, picked = kept if kept is not None and kept[0].dim == dim else choose_codec(vecs, index.metric, index.seed)
    index.__dict__["_nav_codec"] = (codec, picked)
    codes = codec.encode(vecs)
    dtype = np.dtype(index.vectors_dtype)
    packed: Packed | None = index.__dict__.get("_base_packed")
    if packed is not None and packed.rows == rows and packed.order.shape[0] <= n:
        # an edit of a lazily opened index: keep its packing, so only the blocks whose links
        # changed (and the new nodes') get new CIDs; the store fetched the others, knows they are
        # on the portal and does not upload them again
        order = block_order(index._nb0, n, rows, packed.order)
    else:
        order = block_order(index._nb0, n, rows)
    base: list[bytes] = []
    for lo in range(0, n, rows):
        slots = order[lo: lo + rows]
        cid = writer.put(BASE_KIND, {"slots": slots.astype(np.int32), "layer0": np.ascontiguousarray(index._nb0[slots]),
                                     "vectors": np.ascontiguousarray(vecs[slots], dtype=dtype)})
        base.append(BlobId.parse(cid).to_bytes())
    records: list[str] = []
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        records.append(writer.put(RECORDS_KIND, {
            "start": lo, "ids": index._ids[lo:hi], "metadata": index._meta[lo:hi],
            "timestamps": np.ascontiguousarray(index._ts[lo:hi]),
            "levels": np.ascontiguousarray(index._levels[lo:hi]),
            "deleted": index._dead[lo:hi].astype(np.uint8),
            "codes": np.ascontiguousarray(codes[lo:hi]),
        }))
    directory = writer.put(DIR_KIND, {"rows": rows, "count": n, "chunks": base, "codec": codec.state(),
                                      "order": order.astype(np.int32)})
    upper = writer.put("hnsw_upper", index._upper_body())
    desc = {
        "kind": index.kind, "dim": dim, "metric": index.metric, "M": index.M,
        "ef_construction": index.ef_construction, "ef_search": index.ef_search, "seed": index.seed,
        "count": n, "live": len(index), "chunk_rows": chunk_rows,
        "nodes": [], "links": [], "upper": upper, "vectors_dtype": index.vectors_dtype,
        "base": {"dir": directory, "records": records, "rows": rows, "nav": picked},
    }
    if getattr(index, "lazy_base", None) is not None:
        desc["lazy_base"] = bool(index.lazy_base)
    return desc


# ------------------------------------------------------------------ load

def _arr(value: Any, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """hnsw's checked chunk array (imported here, not at the top: hnsw imports this module)."""
    from .hnsw import _arr as checked
    return checked(value, dtype, shape, "lazy hnsw")


def load(index: "HNSWIndex", desc: Mapping[str, Any], reader: ChunkReader) -> None:
    """Fill ``index`` (fresh, from the descriptor's parameters) with the resident parts of a
    lazy layout; raises FormatError on anything malformed (KeyError etc. are mapped by the caller)."""
    from .hnsw import chunk_records  # here, not at the top: hnsw imports this module

    base = desc["base"]
    if not isinstance(base, Mapping):
        raise FormatError("hnsw base entry is not a map")
    n, dim = int(desc["count"]), index.dim
    rows, chunk_rows = int(base["rows"]), int(desc["chunk_rows"])
    if n < 1 or rows < 1 or chunk_rows < 1:
        raise FormatError("lazy hnsw descriptor has a bad count or row size")
    d = reader.get(base["dir"], DIR_KIND)
    raw = list(d["chunks"])
    if int(d["rows"]) != rows or int(d["count"]) != n or len(raw) != -(-n // rows):
        raise FormatError("hnsw_base_dir does not match the descriptor")
    if not all(isinstance(c, bytes) for c in raw):
        raise FormatError("hnsw_base_dir chunk CIDs must be byte strings")
    order = _arr(d["order"], np.int64, (n,))
    pos = np.full(n, -1, dtype=np.int64)
    if ((order < 0) | (order >= n)).any():
        raise FormatError("hnsw_base_dir order is not a permutation of the slots")
    pos[order] = np.arange(n)
    if (pos < 0).any():
        raise FormatError("hnsw_base_dir order is not a permutation of the slots")
    try:
        codec = qz.codec_from_state(d["codec"])
    except InvalidArgumentError as exc:
        raise FormatError(f"bad navigation codec in hnsw_base_dir: {exc}") from None
    if not isinstance(codec, qz.PQCodec) or codec.dim != dim:
        raise FormatError("hnsw navigation codec must be PQ of the index dimension")
    recs = list(base["records"])
    if len(recs) != -(-n // chunk_rows):
        raise FormatError("lazy hnsw descriptor record chunks do not match its count")
    index._reset(16)
    ids: list[str] = []
    meta: list[dict[str, Any]] = []
    ts = np.zeros(n, np.float64)
    levels = np.zeros(n, np.int32)
    dead = np.zeros(n, bool)
    codes = np.zeros((n, codec.m), np.uint8)
    for c, cid in enumerate(recs):
        lo, hi = c * chunk_rows, min(n, (c + 1) * chunk_rows)
        body = reader.get(cid, RECORDS_KIND)
        if int(body["start"]) != lo:
            raise FormatError("hnsw_records chunk out of order")
        r = hi - lo
        cids_, cmeta = chunk_records(body, r, RECORDS_KIND)
        ids.extend(cids_)
        meta.extend(cmeta)
        ts[lo:hi] = _arr(body["timestamps"], np.float64, (r,))
        levels[lo:hi] = _arr(body["levels"], np.int32, (r,))
        dead[lo:hi] = _arr(body["deleted"], np.uint8, (r,)) != 0
        codes[lo:hi] = _arr(body["codes"], np.uint8, (r, codec.m))
    index._n, index._cap = n, n
    index._ts, index._levels, index._dead = ts, levels, dead
    index._ids, index._meta = ids, meta
    index._index_live(n, RECORDS_KIND)
    index._load_upper(reader.get(desc["upper"], "hnsw_upper"), n)
    if index._max_level != int(levels.max()):
        raise FormatError("hnsw levels do not match the upper layers")
    index._lazy = LazyBase(index, codec, codes, raw, rows, order, pos, reader)
    nav = base.get("nav")
    index.__dict__["_nav_codec"] = (codec, dict(nav) if isinstance(nav, Mapping) else {"m": codec.m})


# ------------------------------------------------------------------ the walk

class Walk:
    """One query's beam search over the lazy base layer, carried between rounds in ``Query.state``.

    Pool: ``pd`` (navigation distances, ascending), ``ps`` slots, ``px`` expanded, ``pa``
    accepted (passes the filter / not a tombstone). The pool keeps every candidate closer than
    the ``ef``-th accepted one (the hnswlib rule for filters: traverse everything, return only
    accepted nodes). ``brute``: the pool is fixed (a selective filter's best matches by code, or
    a walk out of rounds) and expanding only scores exactly."""

    def __init__(self, lazy: "LazyBase", q: np.ndarray, k: int, ef: int, accept: np.ndarray | None) -> None:
        self.q, self.k, self.ef, self.accept = q, k, ef, accept
        self.table = lazy.codec.distance_table(q)
        self.n = lazy.index._n
        self.visited = np.zeros(self.n, dtype=bool)
        self.ex_s: list[np.ndarray] = []
        self.ex_d: list[np.ndarray] = []
        self.need: list[int] = []
        #: every block this walk was handed (kept until it ends)
        self.hand: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.rounds = 0
        self.brute = False
        self.exhausted = False
        self.pd = np.empty(0, np.float32)
        self.ps = np.empty(0, np.int64)
        self.px = np.empty(0, bool)
        self.pa = np.empty(0, bool)

    def _acc(self, slots: np.ndarray) -> np.ndarray:
        return np.ones(slots.shape[0], bool) if self.accept is None else self.accept[slots]

    def seed(self, slots: np.ndarray, d: np.ndarray) -> None:
        self.visited[slots] = True
        self._merge(slots, d)

    def _merge(self, slots: np.ndarray, d: np.ndarray) -> None:
        D = np.concatenate([self.pd, d.astype(np.float32)])
        S = np.concatenate([self.ps, slots.astype(np.int64)])
        X = np.concatenate([self.px, np.zeros(slots.shape[0], bool)])
        A = np.concatenate([self.pa, self._acc(slots)])
        order = np.lexsort((S, D))
        D, S, X, A = D[order], S[order], X[order], A[order]
        if not self.brute:
            cum = np.cumsum(A)
            if cum.shape[0] and cum[-1] > self.ef:
                cut = int(np.searchsorted(cum, self.ef)) + 1  # keep through the ef-th accepted
                D, S, X, A = D[:cut], S[:cut], X[:cut], A[:cut]
        self.pd, self.ps, self.px, self.pa = D, S, X, A

    def accepted_done(self) -> int:
        return int(sum(int(self._acc(s).sum()) for s in self.ex_s))

    def advance(self, lazy: "LazyBase") -> bool:
        """Run steps until done (True) or a base chunk is missing (False; ``need`` names blocks)."""
        rows = lazy.rows
        while True:
            open_ = np.flatnonzero(~self.px)
            if open_.shape[0] == 0:
                if self.exhausted or self.accepted_done() >= self.k:
                    return True
                # fewer than k accepted: the graph ran dry (or the walk ran out of rounds, or a
                # filter has fewer matches than k): add the best unvisited matches by code
                self._widen(lazy)
                continue
            sel = open_ if self.brute else open_[:WIDTH]
            slots = self.ps[sel]
            where = lazy.pos[slots]
            got: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            missing = []
            for b in np.unique(where // rows).tolist():
                blk = self._get(lazy, b)
                if blk is None:
                    missing.append(b)
                else:
                    got[b] = blk
            if missing:
                self.hand.update(got)  # held until the walk ends, whatever the store evicts meanwhile
                ahead = (lazy.pos[self.ps[open_]] // rows).tolist()
                want = dict.fromkeys(missing)
                for b in ahead:
                    if len(want) >= READ_AHEAD:
                        break
                    if b not in want and b not in self.hand and not lazy.holds(b):
                        want[b] = None
                self.need = list(want)
                return False
            self.px[sel] = True
            l0 = np.empty((slots.shape[0], lazy.index.M0), np.int32)
            vecs = np.empty((slots.shape[0], lazy.index.dim), np.float32)
            for j, p in enumerate(where.tolist()):
                links, v = got[p // rows]
                l0[j], vecs[j] = links[p % rows], v[p % rows]
            sq = kernels.sq_norms(vecs) if lazy.index.metric == "l2" else None
            exact = kernels.distances(self.q, vecs, lazy.index.metric, sq)
            self.ex_s.append(slots)
            self.ex_d.append(exact)
            if self.brute:
                continue
            self.pd[sel] = exact  # expanded nodes rank by their exact distance from now on
            nb = l0[l0 >= 0]
            nb = np.unique(nb)
            nb = nb[~self.visited[nb]]
            self.visited[nb] = True
            self._merge(nb, lazy.codec.distances(self.q, lazy.codes[nb], self.table))

    def _get(self, lazy: "LazyBase", b: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Block ``b`` if this walk was handed it or the store holds it (then marked recent)."""
        got = self.hand.get(b)
        if got is None:
            got = lazy.peek(b)
        return got

    def _widen(self, lazy: "LazyBase") -> None:
        """Every reachable node was visited and fewer than k accepted: score the unvisited
        accepted nodes by code and put the best ``ef`` in the pool (expanded like the rest)."""
        rest = np.flatnonzero(~self.visited & (self.accept if self.accept is not None else True))
        if rest.shape[0] == 0:
            self.exhausted = True
            return
        d = lazy.codec.distances(self.q, lazy.codes[rest], self.table)
        top = rest[np.lexsort((rest, d))[: max(self.ef, self.k)]]
        self.seed(top, d[np.searchsorted(rest, top)])

    def finish_in_one_round(self) -> None:
        """Out of rounds: the pool as it is, scored exactly in one more round (no expansion; a
        pool with fewer than k accepted is topped up by code first, one round more)."""
        self.brute = True

    def hits(self, lazy: "LazyBase") -> list[Hit]:
        if not self.ex_s:
            return []
        s = np.concatenate(self.ex_s)
        d = np.concatenate(self.ex_d)
        ok = self._acc(s)
        s, d = s[ok], d[ok]
        order = np.lexsort((s, d))[: self.k]
        idx = lazy.index
        return [Hit(idx._ids[int(s[i])], float(d[i]), idx._meta[int(s[i])]) for i in order.tolist()]


class LazyBase:
    """The lazily fetched base layer of an opened HNSW index (see the module docstring)."""

    def __init__(self, index: "HNSWIndex", codec: qz.PQCodec, codes: np.ndarray, raw: list[bytes],
                 rows: int, order: np.ndarray, pos: np.ndarray, reader: ChunkReader | None = None) -> None:
        self.index, self.codec, self.codes, self.rows = index, codec, codes, rows
        #: raw CID bytes of the base chunks, turned into strings when first needed (12,600 at
        #: 100k: converting them all at open cost a third of the open's CPU)
        self.raw = raw
        self._cid: dict[int, str] = {}
        #: ``order``: slots in base-chunk order (block b holds order[b*rows:(b+1)*rows]);
        #: ``pos``: its inverse, a slot's place in that order
        self.order, self.pos = order, pos
        #: the reader's ``peek(cid, kind)`` (decoded body if the store holds the chunk, never a
        #: fetch); a reader without one leaves every block to the round that fetches it
        self._peek = getattr(reader, "peek", None)

    # -- the hand-over
    def plan(self, query: Query) -> list[str]:
        st = query.state
        if not isinstance(st, Walk):
            return []
        return [self.cid(b) for b in st.need]

    def cid(self, b: int) -> str:
        """CID of base chunk ``b``; a malformed one is a FormatError."""
        got = self._cid.get(b)
        if got is None:
            try:
                got = self._cid[b] = BlobId.from_bytes(self.raw[b]).to_string()
            except (CIDError, TypeError, ValueError) as exc:
                raise FormatError(f"bad base chunk CID {b} in hnsw_base_dir: {exc}") from None
        return got

    def search(self, query: Query, chunks: Chunks) -> Outcome:
        st = query.state
        if not isinstance(st, Walk):
            st = self._start(query)
        else:
            # a walk keeps every block it was handed until it ends (a few hundred KB): blocks of a
            # step must not be lost to the LRU between rounds, or a small cache would never settle
            st.hand.update({b: self._decode(b, chunks[self.cid(b)]) for b in st.need if self.cid(b) in chunks})
            st.rounds += 1
            if st.rounds >= WALK_ROUNDS and not st.brute:
                st.finish_in_one_round()
        if not st.advance(self):
            return Outcome(widen=query.with_state(st))
        st.hand = {}
        return Outcome(st.hits(self))

    def _start(self, query: Query) -> Walk:
        idx = self.index
        q, k = query.vector, query.k
        ef = max(query.params.ef or idx.ef_search, k)
        accept: np.ndarray | None = None
        if query.filter is not None:
            accept = idx._filter_mask(query.filter)
            matching = np.flatnonzero(accept)
            if matching.shape[0] <= max(_BRUTE_MIN, _BRUTE_FRACTION * len(idx)):
                st = Walk(self, q, k, ef, accept)
                st.brute = True
                if matching.shape[0]:
                    d = self.codec.distances(q, self.codes[matching], st.table)
                    top = np.lexsort((matching, d))[: max(ef, 2 * k)]
                    st.seed(matching[top], d[top])
                return st
        elif idx._n_dead:
            accept = ~idx._dead[: idx._n]
        st = Walk(self, q, k, ef, accept)
        # greedy descent through the upper layers on navigation codes
        ep = idx._entry
        dep = float(self.codec.distances(q, self.codes[[ep]], st.table)[0])
        for level in range(idx._max_level, 0, -1):
            layer = idx._up[level - 1]
            while True:
                nb = layer.get(ep)
                if nb is None or nb.shape[0] == 0:
                    break
                d = self.codec.distances(q, self.codes[nb], st.table)
                j = int(d.argmin())
                if not d[j] < dep:
                    break
                ep, dep = int(nb[j]), float(d[j])
        st.seed(np.array([ep], np.int64), np.array([dep], np.float32))
        return st

    # -- decoded blocks
    def peek(self, b: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Block ``b`` if the store holds its chunk (no fetch), else None."""
        if self._peek is None:
            return None
        body = self._peek(self.cid(b), None)  # None: the kind the request layer reads it under
        return None if body is None else self._decode(b, body)

    def holds(self, b: int) -> bool:
        return self._peek is not None and self.peek(b) is not None

    def _decode(self, b: int, body: Any) -> tuple[np.ndarray, np.ndarray]:
        """Block ``b``'s (links, vectors), checked once and memoised on its decoded chunk body
        (views on it: the store's footprint of the body already counts them)."""
        got = body.get(_BLOCK) if isinstance(body, dict) else None
        if got is not None:
            return got
        n, rows = self.index._n, self.rows
        lo, hi = b * rows, min(n, (b + 1) * rows)
        try:
            if not np.array_equal(_arr(body["slots"], np.int64, (hi - lo,)), self.order[lo:hi]):
                raise FormatError(f"hnsw_base chunk {b} holds other slots than its directory says")
            links = _arr(body["layer0"], np.int32, (hi - lo, self.index.M0))
            vecs = _arr(body["vectors"], np.asarray(body["vectors"]).dtype, (hi - lo, self.index.dim))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed hnsw_base chunk: {exc!r}") from None
        if vecs.dtype not in (np.float16, np.float32):
            raise FormatError(f"hnsw_base vectors must be float16 or float32, got {vecs.dtype}")
        valid = links >= 0
        if (links >= n).any() or (links < -1).any() or (valid[:, 1:] & ~valid[:, :-1]).any():
            raise FormatError("hnsw_base layer-0 links out of range or not packed")
        if isinstance(body, dict):
            body[_BLOCK] = (links, vecs)
        return links, vecs

    # -- becoming eager
    def plan_all(self) -> list[str]:
        return list(dict.fromkeys(self.cid(b) for b in range(len(self.raw))))

    def load_all(self, chunks: Chunks) -> None:
        """Make the index eager (every vector and layer-0 row resident) from the chunks
        ``plan_all`` named; afterwards it is an ordinary HNSW index (writable)."""
        idx = self.index
        n = idx._n
        blocks = [self._decode(b, chunks[self.cid(b)]) for b in range(len(self.raw))]
        vecs = np.empty((n, idx.dim), np.float32)
        nb0 = np.empty((n, idx.M0), np.int32)
        vecs[self.order] = np.concatenate([v for _, v in blocks])
        nb0[self.order] = np.concatenate([l for l, _ in blocks])
        ts, levels, dead = idx._ts, idx._levels, idx._dead
        ids, meta, slot, up = idx._ids, idx._meta, idx._slot, idx._up
        entry, top, inserted, n_dead = idx._entry, idx._max_level, idx._inserted, idx._n_dead
        cap = 16
        while cap < n:
            cap *= 2
        idx._reset(cap)
        idx._n = n
        idx._vecs[:n], idx._nb0[:n] = vecs, nb0
        idx._sq[:n] = kernels.sq_norms(idx._vecs[:n])
        idx._cnt0[:n] = (nb0 >= 0).sum(axis=1)
        idx._ts[:n], idx._levels[:n], idx._dead[:n] = ts, levels, dead
        idx._ids, idx._meta, idx._slot, idx._up = ids, meta, slot, up
        idx._entry, idx._max_level, idx._inserted, idx._n_dead = entry, top, inserted, n_dead
        idx.__dict__["_base_packed"] = Packed(self.order, self.rows)
        idx._lazy = None


def require_resident(index: "HNSWIndex", what: str) -> None:
    if getattr(index, "_lazy", None) is not None:
        raise InvalidArgumentError(
            f"cannot {what} a lazily loaded HNSW index: make it resident with load_all() first "
            "(Database does this before an edit)")
