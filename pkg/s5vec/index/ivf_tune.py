"""Defaults that fit the size: IVF (and hybrid) parameters picked from the data at publish time.

Why: most users never pass a parameter, and the right IVF for 5,000 vectors is not the right one
for a million. :func:`choose` looks at ``N`` and ``dim`` and at a sample of the vectors and
returns the parameters plus a record of what it picked and why (the request layer stores the
record in the manifest under ``extra.auto`` and the CLI prints it).

The check runs on the real index's geometry at the collection's density
    Held-out records are the queries. The sample is clustered into the index's own ``nlist``
    lists (the centroids :func:`choose` returns are the ones the index trains: a bulk build
    reuses them), and each query's true neighbours are its nearest records *in the whole
    collection* (``neighbours``: the build streams the input once for them; ``api.publish``
    holds every vector), not in the sample. Why (measured on 3M x 384, bench/bench_ivf_recall.py):
    the index loses recall almost only in the probe -- at nprobe 14 the probed lists held 90% of
    the true top-10 and the PQ + refine passes kept nearly all of those -- and how many lists a
    query's neighbours spread over depends on the real list geometry and the real density. The
    old check clustered a 20k sample into lists "of the real size" (55 lists for 3M), where
    neighbours sit in a few huge lists: it promised 97% at nprobe 14. Without ``neighbours``
    and with ``n_total`` above the rows given, the sample's own neighbours stand in (sparser, so
    more lists are needed: conservative for the probe) and the record says so.

What it picks
    * ``nlist`` ~ ``4 sqrt(N)`` (a power of two, 16..65536): lists of ~sqrt(N)/4 records;
    * the codec and ``nprobe`` together: below :data:`PQ_MIN` records, flat (float16) or SQ8
      lists; above, also IVF-PQ codes of a principal-axes rotation (``pq_rotate``, spec ``OPQm``)
      with separate refine data (a second PQ, SQ8 or float16: codes are what a query downloads,
      refine rows only for its candidates) and ``rerank``. Every candidate is scored on the
      queries' true neighbours, encoded as the index would encode them (residuals of the real
      centroids): the PQ pass ranks the records of the probed lists, the best ``rerank`` are
      re-ranked by the refine reconstruction, recall@10 against the exact answer -- for a ladder
      of ``nprobe``; each candidate takes the smallest ``nprobe`` reaching the target
      (:func:`target_for` + :data:`MARGIN`). Among those, the cold-query budget is
      :func:`cold_budget` (a little above the cheapest, at least :data:`COLD_FLOOR`, at most
      :data:`COLD_MAX`), and within it the one that publishes the fewest bytes per vector wins
      (then the fewest cold bytes). If none reaches the target, the most accurate one wins, and
      the record says so.
    * Bytes: :func:`bytes_model` encodes one representative list chunk and one refine chunk with
      the real writer (ids of the collection's mean length, its metadata size, its timestamps),
      and adds the centroids (:func:`centroid_bytes`), codec states and summaries: within ~1-2%
      of what the bench measures as published (chunks + unlisted refine chunks).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .. import kernels
from .. import quantizers as qz
from .ivf_lists import Refiner

TARGET_RECALL = 0.95
TARGET_LARGE = 0.90      # from LARGE records on (issue 11's 1M tab target): bytes per vector matter more
LARGE = 500_000
MARGIN = 0.02            # the held-out check must reach the target + MARGIN (queries differ from records,
                         # 200 queries leave ~0.01 of noise)
SMALL = 5_000            # fewer IVF records than this: flat float16 lists, nothing to tune
PQ_MIN = 20_000          # fewer than this: only flat/SQ8 lists are tried (PQ saves little)
SAMPLE = 20_000          # rows the codecs are trained on for the check
TRAIN_MAX = 256_000      # rows the centroids are trained on (the bulk build's default sample)
QUERIES = 200            # held-out rows used as queries
NEIGHBOURS = 256         # each query's nearest records the check encodes and ranks (> max RERANKS)
K = 10
RERANKS = (20, 40, 80)
PROBES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192,
          256, 320, 384, 512)   # the nprobe ladder the check walks
CHUNK_TARGET = 4096      # bytes an ivf_refine chunk aims at
COLD_FLOOR = 192 * 1024  # cold bytes per query any accurate candidate may spend to publish fewer bytes
COLD_SLACK = 1.5         # ... or this much over the cheapest accurate candidate
COLD_MAX = 2 * 2**20     # never more than this per cold query for the sake of published bytes
REFINE_PQ = (8, 4, 3)    # refine PQ candidates: dim/8, dim/4, dim/3 bytes (nearest divisors of dim)
ROTATE = True            # PQ codes of a principal-axes rotation (PQCodec rotate): OPQ in the spec
PQ_TRAIN = 10_000        # rows a PQ codebook trains on (PQCodec's default: what the index uses)


@dataclass
class Choice:
    """What :func:`choose` picked: ``params`` for the index constructor, ``record`` for the manifest."""

    params: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)
    #: the trained centroids the check used (``nlist`` of them), or None; a bulk build trained on
    #: the same rows with the same seed and iterations reuses them instead of clustering again
    centroids: np.ndarray | None = field(default=None, repr=False)
    #: positions (sorted) of the rows given to :func:`choose` that ``centroids`` were trained on:
    #: ``api.publish`` trains the index on those rows with those centroids (one k-means, and the
    #: index the check measured); None when unknown (centroids passed in)
    train_pos: np.ndarray | None = field(default=None, repr=False)
    #: seconds the choice took (``total``) and its k-means of them (``kmeans``); not in the record
    timing: dict[str, float] = field(default_factory=dict, repr=False)
    #: every candidate with its recall per nprobe (near neighbours only); not in the record (benches)
    curves: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def line(self) -> str:
        """One human line: what was picked and the evidence."""
        r = self.record
        bits = [f"{k}={v}" for k, v in r.get("picked", {}).items()]
        ev = r.get("evidence") or {}
        if ev:
            bits.append(f"(held-out recall@10 {ev.get('recall', 0):.3f} on {ev.get('sample')} rows; "
                        f"~{ev.get('cold_bytes', 0) / 1024:.0f} KiB per cold query, "
                        f"~{ev.get('bytes_per_vector', 0)} B/vector published)")
        return f"s5vec: {r.get('kind', 'ivf')} defaults for N={r.get('n')} dim={r.get('dim')}: " + " ".join(bits)


def pick_nlist(n: int) -> int:
    """A power of two near ``4 sqrt(n)`` (16..65536)."""
    target = 4 * math.sqrt(max(n, 1))
    return int(min(65536, max(16, 2 ** round(math.log2(max(target, 1))))))


def refine_rows_for(bytes_per_vector: int) -> int:
    """Rows per ``ivf_refine`` chunk: ~4 KiB chunks, 4..64 rows."""
    r = 2 ** int(math.log2(max(1, CHUNK_TARGET // max(1, bytes_per_vector))))
    return int(min(64, max(4, r)))


def target_for(n: int) -> float:
    """Recall@10 the defaults aim at for ``n`` records: :data:`TARGET_RECALL`, or
    :data:`TARGET_LARGE` from :data:`LARGE` records on, where published bytes per vector
    (GBs at 10M) and bytes per cold query count more than the last few hundredths of recall."""
    return TARGET_LARGE if n >= LARGE else TARGET_RECALL


def margin_for(n: int) -> float:
    """What the held-out recall must exceed the target by: :data:`MARGIN` (the check runs at the
    collection's density, so no density margin any more)."""
    return MARGIN


def cold_budget(cheapest: float) -> float:
    """Cold bytes per query a candidate may spend to publish fewer bytes per vector: 1.5x the
    cheapest accurate candidate, at least :data:`COLD_FLOOR` (a 100k index's query stays well
    under 300 KiB), at most :data:`COLD_MAX` (the 1M tab target is 2 MB per cold query)."""
    return float(min(COLD_MAX, max(COLD_FLOOR, COLD_SLACK * cheapest)))


def pick(tried: Sequence[dict[str, Any]], target: float) -> tuple[dict[str, Any], float | None]:
    """The winner among scored candidates, and the cold budget it was picked within (None when no
    candidate reached ``target``: then the most accurate one)."""
    ok = [t for t in tried if t["recall"] >= target]
    if not ok:
        return max(tried, key=lambda t: (t["recall"], -t["cold_bytes"])), None
    budget = cold_budget(min(t["cold_bytes"] for t in ok))
    within = [t for t in ok if t["cold_bytes"] <= budget]
    return min(within, key=lambda t: (t["bytes_per_vector"], t["cold_bytes"], -t["recall"])), budget


def _divisors_near(dim: int, targets: Sequence[int]) -> list[int]:
    out: list[int] = []
    for t in targets:
        best = min((m for m in range(1, dim + 1) if dim % m == 0), key=lambda m: (abs(m - t), m))
        if best not in out:
            out.append(best)
    return out


def codec_state_bytes(kind: str, dim: int, m: int | None, rotate: bool) -> int:
    """Bytes of a codec's state in the centroids chunk: PQ codebooks (256 x dim float32) plus a
    rotation (dim x dim float32); SQ8 two float32 vectors."""
    if kind == "pq":
        return 256 * dim * 4 + (dim * dim * 4 if rotate else 0) + 64
    if kind == "sq8":
        return 2 * dim * 4 + 32
    return 16


def _representative_ids(n: int, mean_len: float) -> list[str]:
    """``n`` distinct-looking ids whose mean length is ``mean_len`` (what a list chunk holds)."""
    lo = max(1, int(math.floor(mean_len)))
    frac = max(0.0, mean_len - lo)
    longer = int(round(frac * n))
    return ["7" * (lo + (1 if i < longer else 0)) for i in range(n)]


def bytes_model(n: int, nlist: int, dim: int, *, code_bytes: int, refine_bytes: int | None = None,
                refine_rows: int | None = None, codec: str = "pq", refine: str | None = None,
                pq_m: int | None = None, refine_m: int | None = None, rotate: bool = ROTATE,
                id_bytes: float = 8.0, meta_bytes: float = 1.0, timestamps: np.ndarray | None = None,
                vectors_dtype: str | None = None) -> dict[str, float]:
    """Published bytes of an IVF index of ``n`` records, per vector, from one representative list
    chunk and one refine chunk encoded by the real writer (:mod:`s5vec.layout`).

    ``id_bytes`` = mean UTF-8 length of an id, ``meta_bytes`` = mean CBOR size of a metadata map
    (``{}`` = 1), ``timestamps`` = a sample of the records' timestamps (None: all equal, as a bulk
    build stamps records that have none). Returns ``{"list": bytes per record in list chunks
    (what a probe downloads, per record), "refine_chunk": bytes of one full refine chunk,
    "per_vector": everything published (chunks + unlisted refine chunks) / n}``."""
    from .. import layout
    from .ivf_lists import IVFList

    per = max(1, int(round(n / max(nlist, 1))))
    rows = refine_rows or 1
    ids = _representative_ids(per, id_bytes)
    if timestamps is None or len(timestamps) == 0:
        ts = np.full(per, 1.7e9)
    else:
        t = np.asarray(timestamps, dtype=np.float64)
        t = np.where(np.isnan(t), 1.7e9, t)
        ts = t[np.random.default_rng(0).integers(0, t.shape[0], per)]
    metas = [{} for _ in range(per)]
    cid = "b" * 59  # a blob CID as text (S5 v1, base32)
    nblocks = -(-per // rows) if refine else 0
    shared = codec == "flat"
    if shared:
        vecs = np.zeros((per, dim), np.float32)
        lst = IVFList(ids, vecs, vecs, metas, ts)
    else:
        lst = IVFList(ids, np.zeros((per, code_bytes), np.uint8), None, metas, ts)
    body = {"lists": [lst.body(0, shared, vectors_dtype or "float32", [cid] * nblocks if refine else None)]}
    chunk = len(layout.encode_chunk("ivf_list", body))
    chunk += max(0.0, meta_bytes - 1.0) * per  # metadata CBOR is concatenated: additive
    list_pv = chunk / per
    refine_chunk = 0
    refine_pv = 0.0
    if refine:
        full = {"list": 0, "start": 0, "data": np.zeros((rows, refine_bytes), np.uint8 if refine != "float16" else np.uint8)}
        refine_chunk = len(layout.encode_chunk("ivf_refine", full))
        refine_pv = (refine_chunk - rows * refine_bytes) / rows + refine_bytes
        # the last block of a list is partial: its framing is shared by fewer rows
        refine_pv += (refine_chunk - rows * refine_bytes) * max(0, nblocks - per / rows) / per
    state = codec_state_bytes(codec, dim, pq_m, rotate and codec == "pq")
    if refine in ("pq", "sq8"):
        state += codec_state_bytes(refine, dim, refine_m, rotate and refine == "pq")
    fixed = centroid_bytes(nlist, dim) + state + 2048 + 60 * nlist  # + params; summaries (~60 B a list)
    per_vector = list_pv + refine_pv + fixed / max(n, 1)
    return {"list": list_pv, "refine_chunk": float(refine_chunk), "per_vector": per_vector}


def train_rows(nlist: int) -> int:
    """Rows the centroids are trained on: 64 per list, at least :data:`SAMPLE`, at most
    :data:`TRAIN_MAX` (the bulk build's default sample, so its centroids are these)."""
    return int(min(TRAIN_MAX, max(SAMPLE, 64 * nlist)))


def check_queries(rows: int, seed: int) -> np.ndarray:
    """Which of ``rows`` sample rows are the check's held-out queries (sorted positions)."""
    rng = np.random.default_rng([seed, 0xC4E])
    return np.sort(rng.choice(rows, min(QUERIES, max(1, rows // 10)), replace=False))


def nearest_records(queries: np.ndarray, blocks: Iterable[tuple[int, np.ndarray]], m: int, metric: str,
                    exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ``m`` nearest records of every (prepared) query over a stream of ``(first row, raw
    vectors)`` blocks: ``(distances, rows, prepared vectors)``, nearest first. ``exclude[i]`` = a
    row never returned for query ``i`` (the query's own record). Memory: queries x (m + block)."""
    nq, dim = queries.shape
    best_d = np.full((nq, m), np.inf, np.float32)
    best_r = np.full((nq, m), -1, np.int64)
    best_v = np.zeros((nq, m, dim), np.float32)
    for start, raw in blocks:
        x = kernels.prepare(np.ascontiguousarray(raw, dtype=np.float32), metric)
        d = _dist_matrix(queries, x, metric)
        if exclude is not None:
            hit = (exclude >= start) & (exclude < start + x.shape[0])
            d[np.flatnonzero(hit), exclude[hit] - start] = np.inf
        kk = min(m, d.shape[1])
        top = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        cand_d = np.concatenate([best_d, np.take_along_axis(d, top, 1)], axis=1)
        keep = np.argpartition(cand_d, m - 1, axis=1)[:, :m]
        new_d = np.take_along_axis(cand_d, keep, 1)
        from_old = keep < m
        new_r = np.where(from_old, np.take_along_axis(best_r, np.minimum(keep, m - 1), 1),
                         start + np.take_along_axis(top, np.maximum(keep - m, 0), 1))
        new_v = np.where(from_old[:, :, None], np.take_along_axis(best_v, np.minimum(keep, m - 1)[:, :, None], 1),
                         x[np.take_along_axis(top, np.maximum(keep - m, 0), 1)])
        best_d, best_r, best_v = new_d, new_r, new_v
    order = np.argsort(best_d, axis=1, kind="stable")
    return (np.take_along_axis(best_d, order, 1), np.take_along_axis(best_r, order, 1),
            np.take_along_axis(best_v, order[:, :, None], 1))


def choose(vectors: np.ndarray, metric: str = "cosine", *, n_total: int | None = None, seed: int = 0,
           meta_bytes: float = 1.0, id_bytes: float = 8.0, ts_sample: np.ndarray | None = None,
           neighbours: tuple[np.ndarray, np.ndarray] | None = None, query_rows: np.ndarray | None = None,
           kmeans_iters: int = 10, centroids: np.ndarray | None = None) -> Choice:
    """IVF parameters for ``vectors`` (prepared or not; a float32 matrix of the IVF part's records,
    or a uniform sample of them).

    ``n_total`` = the number of records the index will hold (default: the rows given);
    ``id_bytes``/``meta_bytes`` = mean UTF-8 length of an id / CBOR size of a metadata map, and
    ``ts_sample`` a sample of the timestamps (for :func:`bytes_model`); ``neighbours`` =
    ``(distances, prepared vectors)`` of the :data:`NEIGHBOURS` nearest records in the whole
    collection of the rows ``query_rows`` (default :func:`check_queries`), their own record left
    out (:func:`nearest_records`); without it they are found among the rows given. The returned
    :class:`Choice` carries the centroids (``kmeans(rows, nlist, iters=kmeans_iters, seed)`` on
    :func:`train_rows` of the rows given, all of them or a seeded uniform draw: ``train_pos``): an
    index trained on the same rows may reuse them.
    ``centroids``: the index's trained centroids (``nlist`` of them), when the caller has them
    already: no k-means then.
    """
    t0 = time.perf_counter()
    x = kernels.prepare(np.ascontiguousarray(vectors, dtype=np.float32), metric)
    n = int(n_total if n_total is not None else x.shape[0])
    dim = int(x.shape[1])
    nlist = pick_nlist(n)
    target, margin = target_for(n), margin_for(n)
    rec: dict[str, Any] = {"kind": "ivf", "n": n, "dim": dim, "metric": metric}
    if n < SMALL:
        nlist = 16
        params = {"nlist": nlist, "nprobe": 4, "codec": "flat", "vectors_dtype": "float16"}
        rec.update(picked=dict(params), why=f"N < {SMALL}: flat float16 lists, nothing to tune")
        return Choice(params, rec)

    rows = x.shape[0]
    qpos = check_queries(rows, seed) if query_rows is None else np.asarray(query_rows, dtype=np.int64)
    qs = x[qpos]
    ntrain = min(rows, train_rows(nlist))
    nlist_c = int(min(nlist, max(1, ntrain)))
    # more rows than the centroids need (all of a collection, in memory): a uniform draw of them, not
    # the first ones (records often come in time or topic order)
    tpos = (np.arange(rows, dtype=np.int64) if ntrain == rows
            else np.sort(np.random.default_rng([seed, 0x7A1]).choice(rows, ntrain, replace=False)))
    if centroids is not None:
        cents = np.ascontiguousarray(centroids, dtype=np.float32)
        if cents.shape != (nlist, dim):
            raise ValueError(f"centroids must be ({nlist}, {dim}), got {cents.shape}")
        nlist_c = nlist
    else:
        cents = qz.kmeans(x[tpos], nlist_c, iters=kmeans_iters, seed=seed, metric=metric,
                          grouped=qz.grouped_pays(nlist_c, metric))  # as IVFIndex._fit: the same centroids
    t_kmeans = time.perf_counter() - t0
    whole = neighbours is not None or n <= rows
    if neighbours is None:
        blocks = ((s, x[s: s + 65_536]) for s in range(0, rows, 65_536))
        _, _, nvec = nearest_records(qs, blocks, min(NEIGHBOURS, rows - 1), metric, exclude=qpos)
    else:
        nvec = np.asarray(neighbours[1], dtype=np.float32)
    train = x[tpos]
    if train.shape[0] > SAMPLE:
        train = train[np.sort(np.random.default_rng(seed + 1).choice(train.shape[0], SAMPLE, replace=False))]
    chk = _Check(qs, nvec, cents, train, metric, bar=target + margin, per_list=n / nlist,
                 weight=(n if whole else rows) / train.shape[0], nlist=nlist_c)
    sizes = {"id_bytes": id_bytes, "meta_bytes": meta_bytes, "timestamps": ts_sample}
    _try_full_lists(chk, n, nlist, sizes)
    if n >= PQ_MIN:
        _try_pq(chk, n, nlist, sizes, seed)
    best, budget = pick(chk.tried, target + margin)
    params = _params_of(nlist, best)
    rec.update(
        picked=dict(params),
        evidence={"sample": rows, "queries": int(chk.nq), "neighbours": int(chk.m),
                  "density": "collection" if whole else "sample", "recall": best["recall"], "target": target,
                  "margin": margin, "cover": round(chk.cover.get(params["nprobe"], 0.0), 4),
                  "cold_bytes": best["cold_bytes"], "bytes_per_vector": best["bytes_per_vector"],
                  "curve": {str(q): r for q, r in best["curve"].items()},
                  "cover_curve": {str(q): round(c, 4) for q, c in chk.cover.items()},
                  "reached": budget is not None, "cold_budget": None if budget is None else int(budget),
                  "seconds": round(time.perf_counter() - t0, 2)},
        tried=[{k: v for k, v in t.items() if k not in ("refine_rows", "curve")} for t in chk.tried],
    )
    known = nlist_c == nlist
    return Choice(params, rec, centroids=cents if known else None,
                  train_pos=tpos if known and centroids is None else None,
                  timing={"total": time.perf_counter() - t0, "kmeans": t_kmeans}, curves=chk.tried)


def _params_of(nlist: int, best: Mapping[str, Any]) -> dict[str, Any]:
    """The index constructor's parameters for the winning candidate."""
    params: dict[str, Any] = {"nlist": nlist, "nprobe": int(best["nprobe"]), "codec": best["codec"]}
    if best["codec"] == "flat":
        params["vectors_dtype"] = "float16"
    elif best["codec"] == "sq8":
        params["store_full"] = False
    else:
        params.update(pq_m=best["pq_m"], refine=best["refine"], refine_rows=best["refine_rows"], rerank=best["rerank"])
        if ROTATE:
            params["pq_rotate"] = True
        if best["refine"] == "pq":
            params["refine_m"] = best["refine_m"]
    return params


class _Check:
    """The held-out check of :func:`choose` at the collection's density: held-out queries ``qs``,
    their nearest records ``nvec`` (q, m, dim) in the whole collection, the index's centroids and
    the training rows (standing for the records farther than those). Computes once what every
    candidate shares (the probe depth each neighbour needs, the cover per nprobe, the far rows'
    depths) and scores candidates into ``tried``."""

    def __init__(self, qs: np.ndarray, nvec: np.ndarray, cents: np.ndarray, train: np.ndarray, metric: str, *,
                 bar: float, per_list: float, weight: float, nlist: int) -> None:
        self.qs, self.cents, self.train, self.metric = qs, cents, train, metric
        self.bar, self.per_list, self.weight = bar, per_list, weight
        self.nq, self.m = nvec.shape[0], nvec.shape[1]
        dim = nvec.shape[2]
        self.flat_nb = nvec.reshape(self.nq * self.m, dim)
        self.nlab = qz.assign(self.flat_nb, cents, metric)
        order = np.argsort(_dist_matrix(qs, cents, metric), axis=1, kind="stable")
        rank = np.empty_like(order)
        rank[np.arange(self.nq)[:, None], order] = np.arange(order.shape[1])[None, :]
        self.need = np.take_along_axis(rank, self.nlab.reshape(self.nq, self.m), axis=1)  # probe depth each neighbour needs
        self.kk = min(K, self.m)
        exact_d = _rowwise(qs, nvec, metric)
        self.probes = [p for p in PROBES if p <= nlist] or [nlist]
        self.cover = {p: float((self.need[:, :self.kk] < p).mean()) for p in self.probes}
        self.tlab = qz.assign(train, cents, metric)
        # Records beyond each query's NEIGHBOURS nearest still sit in its probed lists and may beat true
        # neighbours on their PQ distance (weak codes). The training rows stand for them: a row farther
        # than the query's last neighbour counts as ``weight`` records of the collection in its list.
        self.far_need = rank[:, self.tlab]                                  # probe depth each training row needs
        self.far_ok = _dist_matrix(qs, train, metric) > exact_d[:, -1:]  # not one of the near set
        self.tried: list[dict[str, Any]] = []

    def rowwise(self, approx: np.ndarray) -> np.ndarray:
        """Distances of each query to its neighbours' reconstruction ``approx`` (q*m, dim)."""
        return _rowwise(self.qs, approx.reshape(self.nq, self.m, -1), self.metric)

    def corrected(self, approx_d: np.ndarray, recon_d: np.ndarray | None, rerank: int, far_d: np.ndarray,
                  far_r: np.ndarray | None, p: int) -> float:
        """recall@K at nprobe ``p`` as :meth:`score` computes it, with the far records the training
        rows stand for competing for the ``rerank`` (or K) slots of the PQ pass and, once there,
        for the K of the re-rank (``far_r``: their refine distances). Rows that won a PQ slot by
        their code's error carry part of it into the refine reconstruction too (measured at 1M:
        without them the check saw half the refine loss)."""
        kk, weight = self.kk, self.weight
        depth = max(kk, rerank) if recon_d is not None else kk
        found = 0
        for i in range(self.nq):
            sel = np.flatnonzero(self.need[i] < p)
            if sel.size == 0:
                continue
            fsel = np.flatnonzero(self.far_ok[i] & (self.far_need[i] < p))
            ad, fd = approx_d[i, sel], far_d[i, fsel]
            # the PQ pass keeps the best ``depth`` by code distance, far rows weighing ``weight``
            vals = np.concatenate([ad, fd])
            wts = np.concatenate([np.ones(ad.size), np.full(fd.size, weight)])
            o = np.argsort(vals, kind="stable")
            cum = np.cumsum(wts[o])
            cut = int(np.searchsorted(cum, depth, side="left"))
            keep = np.zeros(vals.size, bool)
            keep[o[: cut + 1]] = True
            near_c, far_c = sel[keep[: ad.size]], fsel[keep[ad.size:]]
            if recon_d is None:
                rn, rf = approx_d[i, near_c], far_d[i, far_c]
            else:
                rn = recon_d[i, near_c]
                rf = far_r[i, far_c] if far_r is not None else np.empty(0, np.float32)
            rf = np.sort(rf)
            for j in np.flatnonzero(near_c < kk):
                ahead = int((rn < rn[j]).sum()) + weight * int(np.searchsorted(rf, rn[j], side="left"))
                found += ahead < kk
        return found / (self.nq * K)

    def score(self, approx_d: np.ndarray, recon_d: np.ndarray | None, rerank: int) -> dict[int, float]:
        """recall@K per nprobe: the best ``rerank`` by ``approx_d`` among the probed neighbours,
        re-ranked by ``recon_d`` (None: no re-rank, the best K by ``approx_d``)."""
        kk, m = self.kk, self.m
        out = {}
        for p in self.probes:
            if self.cover[p] * K < 1e-9:
                out[p] = 0.0
                continue
            d = np.where(self.need < p, approx_d, np.inf)
            depth = min(m, max(kk, rerank)) if recon_d is not None else kk
            cand = np.argpartition(d, depth - 1, axis=1)[:, :depth]
            cd = np.take_along_axis(d, cand, 1)
            if recon_d is not None:
                rd = np.take_along_axis(recon_d, cand, 1)
                rd = np.where(np.isfinite(cd), rd, np.inf)
            else:
                rd = cd
            top = np.take_along_axis(cand, np.argsort(rd, axis=1, kind="stable")[:, :kk], 1)
            ok = np.take_along_axis(np.isfinite(rd), np.argsort(rd, axis=1, kind="stable")[:, :kk], 1)
            out[p] = float(((top < kk) & ok).sum() / (self.nq * K))
        return out

    def add(self, row: dict[str, Any], recalls: dict[int, float], list_pv: float, refine_cost: float,
            check: Any = None) -> None:
        """One candidate at the smallest nprobe reaching the bar (else its best). ``check(p)``: its
        recall at ``p`` with the far records competing (:meth:`corrected`; never above ``recalls``),
        walked up the ladder from where ``recalls`` first reaches the bar."""
        probes = self.probes
        reach = [p for p in probes if recalls[p] >= self.bar]
        p = reach[0] if reach else max(probes, key=lambda q: (recalls[q], -q))
        r = recalls[p]
        if check is not None:
            best = None
            for q in [q for q in probes if q >= p][:6]:
                rq = check(q)
                if best is None or rq > best[1]:
                    best = (q, rq)
                if rq >= self.bar:
                    best = (q, rq)
                    break
            p, r = best
        row.update(nprobe=p, recall=round(r, 4), recall_near=round(recalls[p], 4),
                   cold_bytes=int(p * self.per_list * list_pv + refine_cost),
                   curve={q: round(v, 4) for q, v in recalls.items()})
        self.tried.append(row)


def _try_full_lists(chk: _Check, n: int, nlist: int, sizes: Mapping[str, Any]) -> None:
    """Candidates whose lists carry everything: flat (float16 vectors) and SQ8 codes, no re-rank."""
    dim = chk.flat_nb.shape[1]
    sq = qz.SQ8Codec(dim, "l2")
    sq.train(chk.train)
    for name, rt, bpv in (("flat", lambda v: v.astype(np.float16).astype(np.float32), 2 * dim),
                          ("sq8", lambda v: sq.decode(sq.encode(v)), dim)):
        bm = bytes_model(n, nlist, dim, code_bytes=bpv, codec=name, **sizes)
        ad = chk.rowwise(rt(chk.flat_nb))
        fd = _dist_matrix(chk.qs, rt(chk.train), chk.metric)
        chk.add({"codec": name, "pq_m": None, "refine": None, "refine_m": None, "rerank": 0,
                 "bytes_per_vector": round(bm["per_vector"], 1), "refine_rows": None},
                chk.score(ad, None, 0), bm["list"], 0.0,
                lambda p, ad=ad, fd=fd: chk.corrected(ad, None, 0, fd, None, p))


def _try_pq(chk: _Check, n: int, nlist: int, sizes: Mapping[str, Any], seed: int) -> None:
    """IVF-PQ candidates (residual codes of ``pq_m`` = dim/16, dim/8, dim/4 bytes) with separate
    refine data (a second PQ, SQ8 or float16) and each re-rank depth of :data:`RERANKS`."""
    dim, metric, cents = chk.flat_nb.shape[1], chk.metric, chk.cents
    per_list = n / nlist
    tresid = chk.train - cents[chk.tlab]
    ncent = cents[chk.nlab]
    for pm in _divisors_near(dim, (dim // 16, dim // 8, dim // 4)):
        pq = qz.PQCodec(dim, pm, 8, "l2" if metric == "l2" else "ip", seed=seed, train_size=PQ_TRAIN, rotate=ROTATE)
        pq.train(tresid)
        tcodes = pq.encode(tresid)
        codes = pq.encode(chk.flat_nb - ncent)
        d1 = chk.rowwise(ncent + pq.decode(codes))
        f1 = _dist_matrix(chk.qs, cents[chk.tlab] + pq.decode(tcodes), metric)
        refiners = [("pq", m2) for m2 in _divisors_near(dim, [max(1, dim // f) for f in REFINE_PQ])]
        for kind, m2 in refiners + [("sq8", None), ("float16", None)]:
            ref = Refiner(kind, dim, metric, m2, seed, pq, True, ROTATE)
            if kind != "float16":
                ref.train(chk.train, cents[chk.tlab], tcodes)
            d2 = chk.rowwise(ref.roundtrip(chk.flat_nb, ncent, codes))
            f2 = _dist_matrix(chk.qs, ref.roundtrip(chk.train, cents[chk.tlab], tcodes), metric)
            rows_per_chunk = refine_rows_for(ref.bytes_per_vector)
            bm = bytes_model(n, nlist, dim, code_bytes=pm, refine_bytes=ref.bytes_per_vector,
                             refine_rows=rows_per_chunk, codec="pq", refine=kind, pq_m=pm,
                             refine_m=ref.m if kind == "pq" else None, **sizes)
            for rr in RERANKS:
                chk.add({"codec": "pq", "pq_m": pm, "refine": kind, "refine_m": ref.m if kind == "pq" else None,
                         "rerank": rr, "bytes_per_vector": round(bm["per_vector"], 1), "refine_rows": rows_per_chunk},
                        chk.score(d1, d2, rr), bm["list"], rr * bm["refine_chunk"] * min(1.0, per_list / rows_per_chunk),
                        lambda p, d2=d2, f2=f2, rr=rr: chk.corrected(d1, d2, rr, f1, f2, p))


def _dist_matrix(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    return kernels.distance_matrix(q, x, metric).astype(np.float32, copy=False)


def _rowwise(qs: np.ndarray, v: np.ndarray, metric: str) -> np.ndarray:
    """Distance of query ``i`` to each of its own rows ``v[i]`` (queries x m)."""
    dots = np.einsum("qd,qmd->qm", qs, v, dtype=np.float32)
    if metric == "l2":
        d = np.einsum("qmd,qmd->qm", v, v, dtype=np.float32) - 2.0 * dots + np.einsum("qd,qd->q", qs, qs)[:, None]
        return np.maximum(d, 0.0)
    if metric == "cosine":
        return (1.0 - dots).astype(np.float32)
    return -dots


def choose_hybrid(vectors: np.ndarray, timestamps: np.ndarray, metric: str = "cosine", *, now: float | None = None,
                  recent_window: float = 30 * 86400, recent_max: int = 10_000, **kw: Any) -> Choice:
    """Hybrid defaults: the recent window (30 days, shrunk so at most ``recent_max`` records are
    recent: the HNSW part is loaded whole at open), and :func:`choose` for the IVF part."""
    now = time.time() if now is None else now
    ts = np.asarray(timestamps, dtype=np.float64)
    window = float(recent_window)
    recent = ts >= now - window
    why = "30 days"
    if int(recent.sum()) > recent_max:
        newest = np.sort(ts)[::-1]
        # the window that holds the newest recent_max records (ties may add a few)
        window = max(1.0, float(now - newest[recent_max - 1]))
        recent = ts >= now - window
        why = f"shrunk so the HNSW part holds at most ~{recent_max} records"
    hist = ~recent
    sub = choose(vectors[hist] if hist.any() else vectors[:0], metric, **kw) if hist.sum() >= 1 else None
    ivf = sub.params if sub is not None else {}
    # the HNSW part is downloaded whole at open: float16 vectors halve that (rounding moves a
    # cosine distance by ~1e-4, far below the gaps between neighbours at any useful recall)
    params: dict[str, Any] = {"recent_threshold": window, "recent_max": recent_max, "ivf": ivf,
                              "hnsw": {"vectors_dtype": "float16"}}
    rec = {"kind": "hybrid", "n": int(ts.shape[0]), "dim": int(vectors.shape[1]), "metric": metric,
           "picked": {"recent_threshold_s": round(window, 3), "recent_max": recent_max,
                      "recent": int(recent.sum()), "hnsw.vectors_dtype": "float16",
                      **{f"ivf.{k}": v for k, v in ivf.items()}},
           "why": why}
    if sub is None:
        return Choice(params, rec)
    rec["ivf"] = sub.record
    if "evidence" in sub.record:
        rec["evidence"] = sub.record["evidence"]
    hist_pos = np.flatnonzero(hist)
    return Choice(params, rec, centroids=sub.centroids,
                  train_pos=None if sub.train_pos is None else hist_pos[sub.train_pos], timing=sub.timing)


def centroid_bytes(nlist: int, dim: int) -> int:
    """Bytes of the centroids array an IVF index of ``nlist`` lists publishes (its ``ivf_centroids``
    chunk, which every open downloads): float16, so 2 x nlist x dim (25 MB -> 12.6 MB at the 10M
    default of 16,384 x 384). The one count of centroid bytes for the byte model."""
    from .ivf_store import centroid_itemsize

    return int(nlist) * int(dim) * centroid_itemsize(True)
