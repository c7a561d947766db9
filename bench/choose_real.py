"""What ``ivf_tune.choose`` picks for a large ``.npy`` collection, as the bulk build would call it
(the default sample, the check's neighbours from a pass over the whole input), with its timings.

    PYTHONPATH=pkg nice -n 10 .venv/bin/python bench/choose_real.py --npy .cache/i11scale/s3m.npy \
        [--template T.pkl] --out .cache/scale3m/choose3m.json

``--portal-dir DIR --manifest CID``: the centroids of an index the default build published from
this input (the same sample and k-means). ``--template``: a pickled trained template (``bench_build.py phases``' IVFIndex on the same default
sample, seed 0, 20 k-means iterations): its centroids are the ones ``choose`` would cluster (and the
build then reuses), so the k-means is not run twice on a shared machine; the record says so.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "pkg"))

from s5vec import build, sources  # noqa: E402
from s5vec.index import ivf_tune  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npy", required=True)
    ap.add_argument("--template", default=None)
    ap.add_argument("--portal-dir", default=None, help="with --manifest: take the centroids of this published index")
    ap.add_argument("--manifest", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    src = sources.open_source(args.npy)
    n = int(src.count)
    out: dict = {"n": n, "load_before": [round(v, 2) for v in os.getloadavg()], "seconds": {}}
    c0, t = time.process_time(), time.perf_counter()
    size = build.default_sample_size(ivf_tune.pick_nlist(n), n)
    sample, where = build.sample_rows(src, size, 0)
    out["seconds"]["sample"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    qpos = ivf_tune.check_queries(sample.shape[0], 0)
    nb, stats = build.neighbours_and_stats(src, sample[qpos], where[qpos], "cosine", ivf_tune.NEIGHBOURS)
    out["seconds"]["neighbours_pass"] = round(time.perf_counter() - t, 1)
    cents = None
    if args.template:
        class _Any:  # classes of another tree's template (only .centroids is read)
            def __init__(self, *a, **k): pass
            def __setstate__(self, state): self.__dict__.update(state if isinstance(state, dict) else {})

        class _Loader(pickle.Unpickler):
            def find_class(self, module, name):
                try:
                    return super().find_class(module, name)
                except AttributeError:
                    return _Any

        with open(args.template, "rb") as fh:
            cents = _Loader(fh).load().centroids
        out["centroids_from"] = args.template
    elif args.manifest:
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        from bench_ivf_recall import open_dir

        cents = open_dir(args.portal_dir, args.manifest).index.centroids
        out["centroids_from"] = args.manifest
    t = time.perf_counter()
    c = ivf_tune.choose(sample, "cosine", n_total=n, seed=0, **stats, neighbours=nb, query_rows=qpos,
                        kmeans_iters=20, centroids=cents)
    out["seconds"]["choose"] = round(time.perf_counter() - t, 1)
    out["seconds"]["choose_kmeans"] = round(c.timing.get("kmeans", 0.0), 1)
    out["cpu_seconds"] = round(time.process_time() - c0, 1)
    out["line"] = c.line()
    out["picked"] = c.params
    out["evidence"] = c.record["evidence"]
    out["tried"] = c.record["tried"]
    out["curves"] = [{k: (v if k != "curve" else {str(q): r for q, r in v.items()}) for k, v in t.items()} for t in c.curves]
    out["stats"] = {"id_bytes": round(stats["id_bytes"], 3), "meta_bytes": stats["meta_bytes"]}
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print(c.line(), file=sys.stderr)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(json.dumps({k: out[k] for k in ("seconds", "picked", "cpu_seconds")}))


if __name__ == "__main__":
    main()
