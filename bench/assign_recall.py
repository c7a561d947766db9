"""What two-level list assignment (quantizers.assign_grouped, on from nlist 8192) costs in recall, at scale.

    python bench/assign_recall.py --template .cache/open16/t3m.pkl --npy .cache/i11scale/s3m.npy \
        --queries .cache/i11scale/s3m.queries.npy --truth .cache/i11scale/s3m.truth.npy

``--template`` is a trained build template (``bench_build.py phases --template``). For every query's
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
    ap.add_argument("--template", required=True)
    ap.add_argument("--npy", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--nq", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=65_536)
    args = ap.parse_args()
    from s5vec import kernels
    from s5vec import quantizers as qz
    from s5vec.build import ivf_of

    with open(args.template, "rb") as f:
        ivf = ivf_of(pickle.load(f))
    base = np.load(args.npy, mmap_mode="r")
    qs = kernels.prepare(np.load(args.queries)[: args.nq], ivf.metric)
    truth = np.load(args.truth)[: args.nq, :10]
    groups = ivf.centroid_groups()
    assert groups is not None, "this template assigns exactly (nlist below quantizers.GROUPED_MIN_K)"
    out = {"n": int(base.shape[0]), "nlist": ivf.nlist, "groups": groups.count, "probe": groups.probe,
           "load_before": [round(v, 2) for v in os.getloadavg()]}

    rows = np.unique(truth.ravel())
    x = kernels.prepare(np.asarray(base[np.sort(rows)], np.float32), ivf.metric)
    exact = qz.assign(x, ivf.centroids, ivf.metric)
    grouped = qz.assign(x, ivf.centroids, ivf.metric, groups=groups)
    out["truth_rows"] = int(rows.shape[0])
    out["truth_rows_same_list"] = round(float((exact == grouped).mean()), 5)
    lut_e = dict(zip(np.sort(rows).tolist(), exact.tolist()))
    lut_g = dict(zip(np.sort(rows).tolist(), grouped.tolist()))
    le = np.vectorize(lut_e.get)(truth)
    lg = np.vectorize(lut_g.get)(truth)
    d = kernels.distance_matrix(qs, ivf.centroids, ivf.metric)
    order = np.argsort(d, axis=1, kind="stable")
    out["probe_recall"] = {}
    for nprobe in sorted({ivf.nprobe, 4, 8, 16, 32}):
        probed = order[:, :nprobe]
        hit_e = (le[:, :, None] == probed[:, None, :]).any(axis=2).mean()
        hit_g = (lg[:, :, None] == probed[:, None, :]).any(axis=2).mean()
        out["probe_recall"][nprobe] = {"exact": round(float(hit_e), 4), "grouped": round(float(hit_g), 4)}

    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(base.shape[0], args.rows, replace=False))
    x = kernels.prepare(np.asarray(base[pick], np.float32), ivf.metric)
    c = time.process_time()
    exact = qz.assign(x, ivf.centroids, ivf.metric)
    t_exact = time.process_time() - c
    c = time.process_time()
    grouped = qz.assign(x, ivf.centroids, ivf.metric, groups=groups)
    t_grouped = time.process_time() - c
    out["random_rows"] = args.rows
    out["random_rows_same_list"] = round(float((exact == grouped).mean()), 5)
    out["assign_cpu_s"] = {"exact": round(t_exact, 2), "grouped": round(t_grouped, 2)}
    out["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
