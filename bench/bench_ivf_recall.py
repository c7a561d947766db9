"""Where a published IVF-PQ index loses recall: probe coverage, the PQ (ADC) pass, the refine re-rank.

    PYTHONPATH=pkg nice -n 10 .venv/bin/python bench/bench_ivf_recall.py \
        --portal-dir .cache/i11scale/portal-s3m --manifest CID --npy .cache/i11scale/s3m.npy \
        --queries-npy .cache/i11scale/s3m.queries.npy --truth .cache/i11scale/s3m.truth.npy \
        --queries 1000 --nprobe 4,8,14,24 --rerank 10,20,40,80 --out .cache/scale3m/diag3m.json

The index is opened on CPython from the portal's directory (``DIR/blobs/<blake3 hex>``, every blob
verified against its CID, no HTTP), and searched through ``Database.search_batch`` with per-query
``params`` (the same answers as the tab). Ids are the ``.npy`` row numbers (``bench_build.py ivf``).
For each ``nprobe``:

- ``cover``: the share of the true top-10 whose list (``qz.assign`` of the row, as the build
  assigns it) is among the ``nprobe`` nearest centroids: what any codec can find at most;
- ``adc@R``: the share of the true top-10 among the PQ pass's best ``R`` (``rerank=0``, ``k=R``):
  what survives the codes; ``exact@R``: those ``R`` re-ranked by the exact vectors (refine code
  loss = ``exact@R - recall@R``);
- ``recall@R``: the real search with ``rerank=R`` (refine chunks fetched and decoded).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "pkg"))

from s5vec import api, kernels  # noqa: E402
from s5vec import quantizers as qz  # noqa: E402
from s5vec.errors import NotFoundError  # noqa: E402
from s5vec.s5.cid import BlobId, hash_hex, verify  # noqa: E402
from s5vec.s5.client import MemoryClient  # noqa: E402
from s5vec.store import ChunkStore  # noqa: E402


class DirClient(MemoryClient):
    """Blobs read from a local portal's directory (``DIR/blobs/<hex blake3>``), verified."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.dir = os.path.join(directory, "blobs")

    def download(self, cid):  # type: ignore[override]
        bid = BlobId.parse(cid)
        try:
            with open(os.path.join(self.dir, hash_hex(bid)), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise NotFoundError(f"blob {cid} not in {self.dir}") from None
        verify(bid, data)
        return data


def open_dir(directory: str, cid: str, cache_bytes: int = 1 << 30) -> api.Database:
    return api.Database.open(cid, store=ChunkStore(DirClient(directory), cache_bytes=cache_bytes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--portal-dir", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--npy", required=True)
    ap.add_argument("--queries-npy", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--first", type=int, default=0, help="first query row used")
    ap.add_argument("--nprobe", default="4,8,14,24")
    ap.add_argument("--rerank", default="10,20,40,80")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    db = open_dir(args.portal_dir, args.manifest)
    ivf = db.index
    mm = np.load(args.npy, mmap_mode="r")
    qs = np.load(args.queries_npy)[args.first: args.first + args.queries].astype(np.float32)
    truth = np.load(args.truth)[args.first: args.first + args.queries]
    nq = qs.shape[0]
    rows = np.unique(truth)
    lab_of = dict(zip(rows.tolist(), qz.assign(kernels.prepare(np.asarray(mm[rows], np.float32), ivf.metric),
                                                ivf.centroids, ivf.metric).tolist()))
    tl = np.vectorize(lab_of.get)(truth)  # list of each true neighbour
    qp = kernels.prepare(qs, ivf.metric)
    cd = kernels.distance_matrix(qp, ivf.centroids, ivf.metric)
    order = np.argsort(cd, axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(nq)[:, None], order] = np.arange(order.shape[1])[None, :]
    need = np.take_along_axis(rank, tl, axis=1)
    tsets = [set(t.tolist()) for t in truth]
    nprobes = [int(v) for v in args.nprobe.split(",")]
    reranks = [int(v) for v in args.rerank.split(",")]
    out = {"manifest": args.manifest, "spec": db.manifest.get("spec"), "n": int(db.manifest["count"]),
           "queries": nq, "first": args.first, "load_before": [round(v, 2) for v in os.getloadavg()],
           "picked": (db.manifest.get("extra") or {}).get("auto", {}).get("picked"), "rows": []}
    t0 = time.perf_counter()

    def batched(params, k):
        got = []
        for s in range(0, nq, args.batch):
            got += db.search_batch(qs[s: s + args.batch], k, params=params)
        return [[int(h["id"]) for h in hs] for hs in got]

    for p in nprobes:
        row = {"nprobe": p, "cover": round(float((need < p).mean()), 4)}
        adc = batched({"nprobe": p, "rerank": 0}, max(reranks))
        for r in reranks:
            cand = [a[:r] for a in adc]
            row[f"adc@{r}"] = round(sum(len(tsets[i] & set(c)) for i, c in enumerate(cand)) / (10 * nq), 4)
            ex = 0
            for i, c in enumerate(cand):
                if not c:
                    continue
                v = kernels.prepare(np.asarray(mm[np.sort(c)], np.float32), ivf.metric)
                d = kernels.distances(qp[i], v, ivf.metric)
                ex += len(tsets[i] & set(np.sort(c)[np.argsort(d, kind="stable")[:10]].tolist()))
            row[f"exact@{r}"] = round(ex / (10 * nq), 4)
            got = batched({"nprobe": p, "rerank": r}, 10)
            row[f"recall@{r}"] = round(sum(len(tsets[i] & set(g)) for i, g in enumerate(got)) / (10 * nq), 4)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    out["load_after"] = [round(v, 2) for v in os.getloadavg()]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
