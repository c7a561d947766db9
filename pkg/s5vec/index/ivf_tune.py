"""Defaults that fit the size: IVF (and hybrid) parameters picked from the data at publish time.

Why: most users never pass a parameter, and the right IVF for 5,000 vectors is not the right one
for a million. :func:`choose` looks at ``N`` and ``dim`` and at a sample of the vectors and
returns the parameters plus a record of what it picked and why (the request layer stores the
record in the manifest under ``extra.auto`` and the CLI prints it).

What it picks
    * ``nlist`` ~ ``4 sqrt(N)`` (a power of two, 16..65536): lists of ~sqrt(N)/4 records, so a
      probe reads a small, fixed share of the collection;
    * ``nprobe``: the smallest whose probed lists hold >= 97% of the true top-10 of held-out
      records, found on a sample clustered into lists of the real size (so the same nprobe; the
      sample is sparser than the collection, which makes this conservative);
    * the codec: below :data:`PQ_MIN` records, ``flat`` (float16 vectors); above, IVF-PQ with
      separate refine data (PQ codes are what a query downloads; refine rows only for its
      candidates), PQ codes of rotated vectors (``pq_rotate``: principal axes dealt evenly to
      the subspaces; on 384-d sentence-like data it lifts held-out recall of 24+128-byte codes
      from 0.76 to 0.96). ``pq_m``, the refine code (second PQ, SQ8 or float16) and ``rerank`` are
      checked on the sample against the exact answer (the flat oracle): every candidate is
      scored. Among those whose held-out recall@10 reaches the target (:func:`target_for`) +
      :data:`MARGIN`, the cold-query budget is :func:`cold_budget` (a little above the cheapest
      one, at least :data:`COLD_FLOOR`, at most :data:`COLD_MAX`), and within it the one that
      publishes the fewest bytes per vector wins (then the fewest cold bytes): IVF-PQ with a PQ
      refine (faiss's IVFPQR: ``pq_m`` + ``refine_m`` bytes + id/timestamp) publishes a fifth of
      what float16 re-rank rows cost at 384-d, at a few more bytes per cold query. If none
      reaches the target, the most accurate one wins, and the record says so. Flat float16 and SQ8 lists are candidates too
      (on small or high-noise data they beat PQ); below :data:`PQ_MIN` records only they are.

The check (``recall_of``) reproduces what the index computes -- residual PQ over the sample's
own k-means lists, its ADC ranking (distances to centroid + decoded residual), re-ranking of the
best ``rerank`` by the refine reconstruction -- with matrix operations on the sample, instead of
building an index per candidate.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import kernels
from .. import quantizers as qz
from .ivf_lists import Refiner

TARGET_RECALL = 0.95
TARGET_LARGE = 0.90      # from LARGE records on (issue 11's 1M tab target): bytes per vector matter more
LARGE = 500_000
MARGIN = 0.02            # the held-out check must reach the target + MARGIN (queries differ from records)
DENSITY_MARGIN = 0.04    # + this from LARGE on: the sample is 50x sparser than 1M records, so its
                         # neighbours are easier to tell apart (20k -> 200k rows cost 0.02-0.035)
PROBE_RECALL = 0.97
SMALL = 5_000            # fewer IVF records than this: flat float16 lists, nothing to tune
PQ_MIN = 20_000          # fewer than this: only flat/SQ8 lists are tried (PQ saves little)
SAMPLE = 20_000          # rows the choice is made on
QUERIES = 100            # held-out rows used as queries
K = 10
RERANKS = (20, 40, 80, 160)
CHUNK_TARGET = 4096      # bytes an ivf_refine chunk aims at
COLD_FLOOR = 192 * 1024  # cold bytes per query any accurate candidate may spend to publish fewer bytes
COLD_SLACK = 1.5         # ... or this much over the cheapest accurate candidate
COLD_MAX = 2 * 2**20     # never more than this per cold query for the sake of published bytes
CID_BYTES = 64           # a refine block's CID as a list chunk names it (CBOR text)
REFINE_PQ = (8, 4, 3)    # refine PQ candidates: dim/8, dim/4, dim/3 bytes (nearest divisors of dim)
ROTATE = True            # PQ codes of a principal-axes rotation (PQCodec rotate): OPQ in the spec


@dataclass
class Choice:
    """What :func:`choose` picked: ``params`` for the index constructor, ``record`` for the manifest."""

    params: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)

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
    """What the held-out recall must exceed the target by: :data:`MARGIN`, + :data:`DENSITY_MARGIN`
    from :data:`LARGE` records on."""
    return MARGIN + (DENSITY_MARGIN if n >= LARGE else 0.0)


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


def choose(vectors: np.ndarray, metric: str = "cosine", *, n_total: int | None = None, seed: int = 0,
           meta_bytes: float = 0.0, id_bytes: float = 8.0) -> Choice:
    """IVF parameters for ``vectors`` (prepared or not; a float32 matrix of the IVF part's records).

    ``n_total`` = the number of records the index will hold (default: the rows given);
    ``meta_bytes``/``id_bytes`` = mean stored size of a record's metadata / id (for the byte model).
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

    rng = np.random.default_rng(seed)
    take = min(x.shape[0], SAMPLE + QUERIES)
    rows = rng.choice(x.shape[0], take, replace=False)
    qs, base = x[rows[:QUERIES]], x[rows[QUERIES:]]
    s = base.shape[0]
    # the sample's own lists, as many records per list as the real index will have
    nlist_s = int(max(16, min(nlist, round(nlist * s / n))))
    cents = qz.kmeans(base, nlist_s, iters=10, seed=seed, metric=metric)
    labels = qz.assign(base, cents, metric)
    exact = _dist_matrix(qs, base, metric)
    truth = np.argsort(exact, axis=1, kind="stable")[:, :K]
    qc = _dist_matrix(qs, cents, metric)
    order = np.argsort(qc, axis=1, kind="stable")
    probe_s = _probe_depth(order, labels, truth, nlist_s)
    # the sample's lists hold as many records as the real ones, so a query's k neighbours (closer
    # together in the full, denser collection) spread over about as many lists: the same nprobe
    nprobe = int(min(nlist, max(1, probe_s)))
    inprobe = np.zeros((qs.shape[0], s), dtype=bool)
    for i in range(qs.shape[0]):
        inprobe[i] = np.isin(labels, order[i, :probe_s])

    per_list = n / nlist
    resid = base - cents[labels]
    tried = []
    over = 16 + id_bytes + meta_bytes  # timestamp, id and metadata (+ their uint32 offsets) of one record
    # lists that carry everything: flat (float16 vectors) and SQ8 codes without re-ranking
    f16 = base.astype(np.float16).astype(np.float32)
    sq = qz.SQ8Codec(dim, "l2")
    sq.train(base)
    for name, approx, bpv in (("flat", f16, 2 * dim), ("sq8", sq.decode(sq.encode(base)), dim)):
        d = np.where(inprobe, _dist_matrix(qs, approx, metric), np.inf)
        top = np.argsort(d, axis=1, kind="stable")[:, :K]
        r = float(np.mean([len(np.intersect1d(top[i], truth[i])) for i in range(qs.shape[0])]) / K)
        tried.append({"codec": name, "pq_m": None, "refine": None, "refine_m": None, "rerank": 0,
                      "recall": round(r, 4), "cold_bytes": int(nprobe * per_list * (bpv + over)),
                      "bytes_per_vector": int(bpv + over), "refine_rows": None})
    for m in (_divisors_near(dim, (dim // 16, dim // 8, dim // 4)) if n >= PQ_MIN else []):
        pq = qz.PQCodec(dim, m, 8, "l2" if metric == "l2" else "ip", seed=seed, train_size=5000, rotate=ROTATE)
        pq.train(resid)
        codes = pq.encode(resid)
        approx = cents[labels] + pq.decode(codes)
        d1 = np.where(inprobe, _dist_matrix(qs, approx, metric), np.inf)
        refiners = [("pq", m2) for m2 in _divisors_near(dim, [max(1, dim // f) for f in REFINE_PQ])]
        for kind, m2 in refiners + [("sq8", None), ("float16", None)]:
            ref = Refiner(kind, dim, metric, m2, seed, pq, True, ROTATE)
            ref.train(base, cents[labels], codes) if kind != "float16" else None
            recon = ref.roundtrip(base, cents[labels], codes)
            rows_per_chunk = refine_rows_for(ref.bytes_per_vector)
            for rr in RERANKS:
                r = recall_of(d1, recon, qs, truth, rr, metric)
                list_b = nprobe * per_list * (m + over + CID_BYTES / rows_per_chunk)
                refine_b = rr * min(rows_per_chunk, per_list) * ref.bytes_per_vector
                row = {"codec": "pq", "pq_m": m, "refine": kind, "refine_m": ref.m if kind == "pq" else None, "rerank": rr,
                       "recall": round(r, 4), "cold_bytes": int(list_b + refine_b),
                       "bytes_per_vector": int(m + ref.bytes_per_vector + over + CID_BYTES / rows_per_chunk),
                       "refine_rows": rows_per_chunk}
                tried.append(row)
                if r >= target + margin:
                    break  # a deeper re-rank only costs more bytes
    best, budget = pick(tried, target + margin)
    params: dict[str, Any] = {"nlist": nlist, "nprobe": nprobe, "codec": best["codec"]}
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
    rec.update(
        picked=dict(params),
        evidence={"sample": s, "queries": int(qs.shape[0]), "recall": best["recall"], "target": target, "margin": margin,
                  "probe_sample": probe_s, "nlist_sample": nlist_s, "cold_bytes": best["cold_bytes"],
                  "bytes_per_vector": best["bytes_per_vector"], "reached": budget is not None,
                  "cold_budget": None if budget is None else int(budget),
                  "seconds": round(time.perf_counter() - t0, 2)},
        tried=[{k: v for k, v in t.items() if k != "refine_rows"} for t in tried],
    )
    return Choice(params, rec)


def _dist_matrix(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    return kernels.distance_matrix(q, x, metric).astype(np.float32, copy=False)


def _probe_depth(order: np.ndarray, labels: np.ndarray, truth: np.ndarray, nlist: int) -> int:
    """Smallest number of probed lists whose lists hold >= PROBE_RECALL of the true top-k."""
    tl = labels[truth]  # (q, k) list of each true neighbour
    rank = np.empty_like(order)
    rank[np.arange(order.shape[0])[:, None], order] = np.arange(order.shape[1])[None, :]
    need = np.take_along_axis(rank, tl, axis=1)  # probe position each neighbour needs
    for p in range(1, nlist + 1):
        if (need < p).mean() >= PROBE_RECALL:
            return p
    return nlist


def recall_of(d1: np.ndarray, recon: np.ndarray, qs: np.ndarray, truth: np.ndarray, rerank: int,
              metric: str) -> float:
    """recall@K of: best ``rerank`` by ``d1`` (ADC distances, inf = not probed), re-ranked by
    the distance to ``recon`` (refine reconstruction)."""
    found = 0
    for i in range(qs.shape[0]):
        row = d1[i]
        c = np.argpartition(row, min(rerank, row.shape[0] - 1))[:rerank]
        c = c[np.isfinite(row[c])]
        if c.size == 0:
            continue
        d2 = kernels.distances(qs[i], recon[c], metric)
        top = c[np.argsort(d2, kind="stable")[:K]]
        found += len(np.intersect1d(top, truth[i]))
    return found / (qs.shape[0] * K)


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
    if sub is not None:
        rec["ivf"] = sub.record
        if "evidence" in sub.record:
            rec["evidence"] = sub.record["evidence"]
    return Choice(params, rec)


def centroid_bytes(nlist: int, dim: int) -> int:
    """Bytes of the centroids array an IVF index of ``nlist`` lists publishes (its ``ivf_centroids``
    chunk, which every open downloads): float16, so 2 x nlist x dim (25 MB -> 12.6 MB at the 10M
    default of 16,384 x 384). The one count of centroid bytes for the byte model."""
    from .ivf_store import centroid_itemsize

    return int(nlist) * int(dim) * centroid_itemsize(True)
