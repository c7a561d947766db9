"""Build and publish an IVF index of a ``.npy`` with given params, its centroids taken from an index
published from the same input by the default build (same sample, seed 0, 20 k-means iterations: the
centroids ``ivf_tune.choose`` hands to the build), so a shared machine does not run that k-means again.
Everything else is ``build.build``'s path (sample, codec training, encode, upload, assemble).

    PYTHONPATH=pkg nice -n 10 .venv/bin/python bench/build_reuse.py --npy .cache/i11scale/s1m.npy \
        --from-dir .cache/i11scale/portal-s1m --from CID --params '{"nlist": 4096, ...}' \
        --portal-dir .cache/scale3m/portal-s1m --out .cache/scale3m/build1m.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "pkg"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from bench_build import start_portal  # noqa: E402
from bench_ivf_recall import open_dir  # noqa: E402
from s5vec import api, build, sources  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npy", required=True)
    ap.add_argument("--from-dir", required=True)
    ap.add_argument("--from", dest="src_cid", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--portal-dir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    params = json.loads(args.params)
    cents = open_dir(args.from_dir, args.src_cid).index.centroids
    src = sources.open_source(args.npy)
    os.makedirs(args.portal_dir, exist_ok=True)
    proc, url = start_portal(args.portal_dir)
    try:
        store = api.make_store([url], timeout=120)
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        index = build.make_template("ivf", src.dim, "cosine", params, src.count)
        sample = build.sample_vectors(src, build.default_sample_size(index.nlist, src.count), 0)
        build.train(index, sample, cents)
        del sample
        t1 = time.perf_counter()
        results, timings, _ = build._run_local(index, src, store, rows=65_536, now=time.time(), threads=4,
                                               progress=False, on_block=None)
        cid = build.assemble(index, results, store, extra={"params_from": "ivf_tune.choose (scale3m)"})
        man = api.read_manifest(store, cid)
        unlisted = (man.get("extra") or {}).get("unlisted") or {}
        published = sum(c["size"] for c in man["chunks"]) + sum(u["bytes"] for u in unlisted.values())
        out = {"n": len(index), "spec": index.spec(), "cid": cid, "params": params,
               "seconds": {"train_codecs": round(t1 - t0, 1), **{k: round(v, 1) for k, v in timings.items()},
                           "total": round(time.perf_counter() - t0, 1)},
               "published_bytes_per_vector": round(published / len(index), 2), "unlisted": unlisted,
               "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               "load_before": [round(v, 2) for v in load0], "load_after": [round(v, 2) for v in os.getloadavg()],
               "portal_dir": args.portal_dir}
        print(json.dumps(out))
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
