"""What two-level list assignment (quantizers.assign_grouped, on from nlist 8192) costs in recall, at scale.

    python bench/assign_recall.py --template .cache/open16/t3m.pkl --npy .cache/i11scale/s3m.npy \
        --queries .cache/i11scale/s3m.queries.npy --truth .cache/i11scale/s3m.truth.npy
    python bench/assign_recall.py --manifest CID --portal-dir .cache/i11scale/portal-s1m --npy ... --probe 4,8,16

``--template`` is a trained build template (``bench_build.py phases --template``); ``--manifest`` a
published IVF index (its centroids). ``--probe``: groups scored per row (default: the library's). For every query's
exact top 10 (``--truth``: row numbers) the rows' lists are computed both ways, exactly and through the
groups; printed: the share of those rows whose list is the same, and the *probe recall* at the index's
nprobe (and a few others) both ways: the share of the true top 10 that sits in one of the query's
probed lists, the ceiling on recall@10 the list assignment sets (everything after the probe, PQ
and re-rank, scores a row the same way whichever list holds it). Also the same-list share and CPU
seconds on ``--rows`` random rows of the base.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "pkg"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--template")
    ap.add_argument("--manifest")
    ap.add_argument("--portal-dir")
    ap.add_argument("--probe", default=None, help="comma-separated groups scored per row")
    ap.add_argument("--npy", required=True)
    ap.add_argument("--queries", help="with --truth: probe recall on the true top 10 (else: random rows only)")
    ap.add_argument("--truth")
    ap.add_argument("--nq", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=65_536)
    args = ap.parse_args()
    from s5vec import kernels
    from s5vec import quantizers as qz
    from s5vec.build import ivf_of

    if args.template:
        with open(args.template, "rb") as f:
            ivf = ivf_of(pickle.load(f))
    else:
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        import bench_build as bb
        from s5vec import api

        proc, url = bb.start_portal(args.portal_dir)
        try:
            db = api.Database.open(args.manifest, [url])
            ivf = ivf_of(db.index)
        finally:
            proc.terminate()
    base = np.load(args.npy, mmap_mode="r")
    probes = [int(p) for p in args.probe.split(",")] if args.probe else [None]
    out = {"n": int(base.shape[0]), "nlist": ivf.nlist, "nprobe": ivf.nprobe,
           "load_before": [round(v, 2) for v in os.getloadavg()]}
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(base.shape[0], args.rows, replace=False))
    xr = kernels.prepare(np.asarray(base[pick], np.float32), ivf.metric)
    c = time.process_time()
    exact_r = qz.assign(xr, ivf.centroids, ivf.metric)
    out["random_rows"] = args.rows
    out["exact_assign_cpu_s"] = round(time.process_time() - c, 2)
    nprobes = sorted({ivf.nprobe, 4, 8, 16, 32})
    if args.truth:
        qs = kernels.prepare(np.load(args.queries)[: args.nq], ivf.metric)
        truth = np.load(args.truth)[: args.nq, :10]
        rows = np.sort(np.unique(truth.ravel()))
        xt = kernels.prepare(np.asarray(base[rows], np.float32), ivf.metric)
        order = np.argsort(kernels.distance_matrix(qs, ivf.centroids, ivf.metric), axis=1, kind="stable")
        where = {r: i for i, r in enumerate(rows.tolist())}
        pos = np.vectorize(where.get)(truth)
        exact_t = qz.assign(xt, ivf.centroids, ivf.metric)
        out["truth_rows"] = int(rows.shape[0])
        out["probe_recall_exact"] = {}
        for nprobe in nprobes:
            probed = order[:, :nprobe]
            out["probe_recall_exact"][nprobe] = round(float((exact_t[pos][:, :, None] == probed[:, None, :]).any(axis=2).mean()), 4)
    out["grouped"] = []
    for p in probes:
        c = time.process_time()
        groups = qz.group_centroids(ivf.centroids, ivf.metric, seed=ivf.seed, probe=p)
        t_groups = time.process_time() - c
        c = time.process_time()
        grouped_r = qz.assign(xr, ivf.centroids, ivf.metric, groups=groups)
        t = time.process_time() - c
        g = {"groups": groups.count, "probe": groups.probe, "group_cpu_s": round(t_groups, 2),
             "assign_cpu_s": round(t, 2), "random_rows_same_list": round(float((exact_r == grouped_r).mean()), 5)}
        if args.truth:
            grouped_t = qz.assign(xt, ivf.centroids, ivf.metric, groups=groups)
            g["truth_rows_same_list"] = round(float((exact_t == grouped_t).mean()), 5)
            g["probe_recall"] = {}
            for nprobe in nprobes:
                probed = order[:, :nprobe]
                g["probe_recall"][nprobe] = round(float((grouped_t[pos][:, :, None] == probed[:, None, :]).any(axis=2).mean()), 4)
        out["grouped"].append(g)
        print(json.dumps(g), file=sys.stderr, flush=True)
    out["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
