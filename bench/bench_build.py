"""Bulk build benchmark: time and peak memory of building (and publishing) a large IVF index.

    # 1M x 384 clustered vectors, written to .npy block by block (never whole in memory)
    python bench/bench_build.py gen --n 1000000 --dim 384 --out .cache/bench/x1m.npy
    # build + publish to a local portal directory; prints times, peak RSS, bytes/vector, recall@10
    nice python bench/bench_build.py ivf --npy .cache/bench/x1m.npy --portal-dir .cache/portal-1m \
        --param codec=pq --param pq_m=48
    # the same build on Dask (a LocalCluster of 2 workers, or --dask tcp://host:8786)
    python bench/bench_build.py ivf --npy ... --portal-dir ... --dask local

    # HNSW insert path: s5vec (this tree) next to hnswlib, same data, one thread each
    python bench/bench_build.py hnsw --n 20000 --impl base --impl s5vec --impl hnswlib  # CPU s, 1 BLAS thread

The data are kit.clustered's shape (two levels: ``top`` centres, ``sub`` sub-centres each, points
around the sub-centres), generated per block from one seed so any N streams to disk. Recall is
measured against exact brute force (blocked over the memory-mapped file) on ``--queries`` queries.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time

if sys.argv[1:2] == ["hnsw"]:  # one BLAS thread, set before NumPy loads it (CPU seconds comparable with hnswlib's)
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "pkg"))


def gen(n: int, dim: int, out: str, *, top: int = 50, sub: int = 20, spread_sub: float = 0.5, spread: float = 0.35,
        seed: int = 0, block: int = 65_536) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((top, dim)).astype(np.float32)
    subs = centres[np.arange(top * sub) // sub] + spread_sub * rng.standard_normal((top * sub, dim)).astype(np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    mm = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, dim))
    for b, s in enumerate(range(0, n, block)):
        r = np.random.default_rng([seed, b + 1])
        m = min(block, n - s)
        which = r.integers(0, top * sub, m)
        mm[s : s + m] = subs[which] + spread * r.standard_normal((m, dim), dtype=np.float32)
    mm.flush()
    del mm
    print(json.dumps({"wrote": out, "n": n, "dim": dim, "bytes": os.path.getsize(out)}))


def synthetic_model(dim: int, seed: int, latent: int = 32, clusters: int = 256):
    """bench/common.py ``synthetic``'s distribution (sentence-embedding-like: anisotropic clusters
    in a ``latent``-d space mapped to ``dim``, small isotropic noise, unit length), drawable in blocks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, latent)).astype(np.float32)
    scales = rng.uniform(0.6, 1.2, (clusters, latent)).astype(np.float32)
    weights = rng.dirichlet(np.full(clusters, 2.0))
    W = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)

    def draw(m: int, r: np.random.Generator, noise: float = 0.15) -> np.ndarray:
        lab = r.choice(clusters, m, p=weights)
        z = centres[lab] + scales[lab] * r.standard_normal((m, latent)).astype(np.float32)
        x = z @ W + noise * r.standard_normal((m, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw


def gen_synthetic(n: int, dim: int, out: str, *, seed: int = 1, block: int = 65_536, queries: int = 1000) -> None:
    """``n`` rows of :func:`synthetic_model` to ``out`` block by block, and ``queries`` fresh draws
    (not copies of rows) to ``out`` with ``.queries.npy``."""
    draw = synthetic_model(dim, seed)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    mm = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, dim))
    for b, s in enumerate(range(0, n, block)):
        mm[s : s + min(block, n - s)] = draw(min(block, n - s), np.random.default_rng([seed, b + 1]))
    mm.flush()
    del mm
    qpath = out[:-4] + ".queries.npy"
    np.save(qpath, draw(queries, np.random.default_rng([seed, 1 << 30])))
    print(json.dumps({"wrote": out, "queries": qpath, "n": n, "dim": dim, "bytes": os.path.getsize(out)}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_portal(directory: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "pkg"))
    proc = subprocess.Popen([sys.executable, "-m", "s5vec", "portal", "--dir", directory, "--port", str(port),
                             "--max-body", str(1 << 30)], stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if "listening" not in line:
        raise SystemExit(f"portal did not start: {line}")
    return proc, f"http://127.0.0.1:{port}"


def exact_topk(mm: np.ndarray, queries: np.ndarray, k: int, block: int = 32_768,
               checkpoint: str | None = None) -> np.ndarray:
    """Exact cosine top-k ids over a memory-mapped matrix, block by block (one pass over ``mm``;
    each block's own top k is merged into the running best, so memory is queries x block).

    ``checkpoint``: a file the running best is saved to every ~64 blocks and resumed from (a pass
    over 10M rows takes hours on a busy machine and must survive the process ending)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best_s = np.full((q.shape[0], k), -np.inf, np.float32)
    best_i = np.zeros((q.shape[0], k), np.int64)
    start = 0
    tag = np.array([mm.shape[0], q.shape[0], k, block, int(np.float64(q[:, :4].sum()) * 1e6)], np.int64)
    if checkpoint and os.path.exists(checkpoint):
        with np.load(checkpoint) as ck:
            if np.array_equal(ck["tag"], tag):
                best_s, best_i, start = ck["best_s"], ck["best_i"], int(ck["next"])
                print(f"# resuming at row {start:,} of {mm.shape[0]:,}", file=sys.stderr, flush=True)
    for b, s in enumerate(range(start, mm.shape[0], block)):
        if checkpoint and b and b % 64 == 0:
            np.savez(checkpoint + ".tmp.npz", best_s=best_s, best_i=best_i, next=s, tag=tag)
            os.replace(checkpoint + ".tmp.npz", checkpoint)
            print(f"# row {s:,} of {mm.shape[0]:,}", file=sys.stderr, flush=True)
        x = np.asarray(mm[s : s + block], dtype=np.float32)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sc = q @ x.T
        kk = min(k, sc.shape[1])
        top = np.argpartition(-sc, kk - 1, axis=1)[:, :kk]
        cat_s = np.concatenate([best_s, np.take_along_axis(sc, top, 1)], axis=1)
        cat_i = np.concatenate([best_i, top + s], axis=1)
        keep = np.argpartition(-cat_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cat_s, keep, 1)
        best_i = np.take_along_axis(cat_i, keep, 1)
    return best_i


def cmd_truth(args: argparse.Namespace) -> None:
    """Exact cosine top-k of the queries over the memory-mapped base, in blocks (CPython): one pass
    over the base per ``--query-block`` queries (2,000: ~0.3 GB of scores per 32k-row block)."""
    mm = np.load(args.npy, mmap_mode="r")
    qs = np.load(args.queries)
    t = time.perf_counter()
    qb = max(1, args.query_block)
    parts = []
    for s in range(0, qs.shape[0], qb):
        parts.append(exact_topk(mm, qs[s : s + qb], args.k, checkpoint=f"{args.out}.part{s}.npz"))
        print(f"# {s + parts[-1].shape[0]}/{qs.shape[0]} queries, {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    out = np.concatenate(parts)
    # exact_topk leaves each row's k unordered: order by similarity
    qn = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    for i in range(out.shape[0]):
        x = np.asarray(mm[np.sort(out[i])], dtype=np.float32)
        sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ qn[i]
        out[i] = np.sort(out[i])[np.argsort(-sims, kind="stable")]
    np.save(args.out, out)
    print(json.dumps({"wrote": args.out, "queries": int(qs.shape[0]), "k": args.k, "query_block": qb,
                      "seconds": round(time.perf_counter() - t, 1)}))


def cmd_ivf(args: argparse.Namespace) -> None:
    from s5vec import api, build, sources

    params = {}
    for item in args.param or []:
        key, _, raw = item.partition("=")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    os.makedirs(args.portal_dir, exist_ok=True)
    proc, url = start_portal(args.portal_dir)
    try:
        store = api.make_store([url], timeout=120)
        src = sources.open_source(args.npy)
        load0 = os.getloadavg()
        rss = RssSampler()
        rep = build.build(src, store, kind=args.kind, metric="cosine", params=params, seed=0, progress=args.progress,
                          dask=args.dask, portals=[url], sample_size=args.sample,
                          explain=lambda c: print("# " + c.line(), file=sys.stderr, flush=True))
        rss.stop()
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        man = api.read_manifest(store, rep.cid)
        unlisted = (man.get("extra") or {}).get("unlisted") or {}
        published = sum(c["size"] for c in man["chunks"]) + sum(u["bytes"] for u in unlisted.values())
        out = {"n": rep.count, "dim": src.dim, "spec": rep.spec, "cid": rep.cid, "seconds": {k: round(v, 1) for k, v in rep.seconds.items()},
               "peak_rss_mib": round(peak_mib), "peak_rss_mib_by_phase": rss.by_phase(rep.seconds),
               "spilled_bytes": rep.spilled, "list_bytes": rep.bytes, "list_bytes_per_vector": round(rep.bytes / rep.count, 1),
               "published_bytes_per_vector": round(published / rep.count, 1), "unlisted": unlisted,
               "picked": (rep.choice.params if rep.choice is not None else None),
               "load_before": [round(v, 2) for v in load0], "load_after": [round(v, 2) for v in os.getloadavg()],
               "portal_dir": args.portal_dir, "dask": args.dask}
        if args.queries:
            mm = np.load(args.npy, mmap_mode="r")
            rng = np.random.default_rng(5)
            pick = rng.choice(mm.shape[0], args.queries, replace=False)
            qs = np.asarray(mm[np.sort(pick)]) + 0.1 * rng.standard_normal((args.queries, mm.shape[1])).astype(np.float32)
            truth = exact_topk(mm, qs, 10)
            db = api.Database.open(rep.cid, [url], cache_bytes=512 * 2**20, timeout=120)
            found = 0
            t = time.perf_counter()
            for q, want in zip(qs, truth):
                got = {h["id"] for h in db.search(q, 10)}
                found += len(got & {str(i) for i in want})
            out["recall@10"] = round(found / (10 * len(qs)), 4)
            out["cpython_ms_per_query"] = round(1000 * (time.perf_counter() - t) / len(qs), 1)
        print(json.dumps(out))
    finally:
        proc.terminate()
        proc.wait(10)


class RssSampler:
    """This process's resident set (VmRSS) every ``every`` seconds on a thread, so a build's peak
    can be told per phase (``getrusage`` only knows the peak of the whole run)."""

    def __init__(self, every: float = 0.25) -> None:
        import threading

        self.t0, self.samples, self._stop = time.perf_counter(), [], threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            with open("/proc/self/status") as fh:
                kb = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS:"))
            self.samples.append((time.perf_counter() - self.t0, kb / 1024))
            self._stop.wait(every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def by_phase(self, seconds: dict) -> dict:
        """Peak MiB in each phase of a build report's ``seconds`` (train, encode, upload, assemble: in that order)."""
        out, start = {}, 0.0
        for name in ("train", "encode", "upload", "assemble"):
            if name not in seconds:
                continue
            end = start + seconds[name]
            inside = [m for t, m in self.samples if start <= t <= end]
            out[name] = round(max(inside)) if inside else None
            start = end
        return out


def cmd_phases(args: argparse.Namespace) -> None:
    """The default build's phases, timed one by one, without publishing: sampling (one pass over the
    input), the choice (``ivf_tune.choose``), training (k-means + codecs) and ``--blocks`` blocks of
    assignment + encoding. For a size this machine cannot build in the time at hand (10M), this
    measures the parts that do not scale linearly (training at its nlist) and the per-row encode
    cost at its nlist; the rest (encode of every block, upload) is projected per row."""
    from s5vec import build, kernels, sources
    from s5vec.index import ivf_tune

    src = sources.open_source(args.npy)
    n = int(src.count)
    out: dict = {"n": n, "dim": src.dim, "load_before": [round(v, 2) for v in os.getloadavg()]}
    if args.template and os.path.exists(args.template):  # a template trained by an earlier run
        import pickle

        t = time.perf_counter()
        sample = build.sample_vectors(src, build.default_sample_size(ivf_tune.pick_nlist(n), n), 0)
        out["seconds"] = {"sample": round(time.perf_counter() - t, 1)}
        with open(args.template, "rb") as f:
            index = pickle.load(f)
        out["template"] = args.template
        out["picked"] = build.ivf_of(index).params()
        build.ivf_of(index)._grouped = build.ivf_of(index)._groups = None  # assignment groups: made by this code
    else:
        # sample, the check's neighbour pass and the choice (whose k-means the training reuses)
        timings: dict = {}
        choice, sample = build.choose_for_source(src, kind="ivf", metric="cosine", sample_size=None, seed=0,
                                                 timings=timings)
        out["seconds"] = {k: round(v, 1) for k, v in timings.items()}
        out["seconds"]["choose_kmeans"] = round(choice.timing.get("kmeans", 0.0), 1)
        out["picked"] = choice.params
        out["evidence"] = dict(choice.record.get("evidence", {}))
        print("# " + choice.line(), file=sys.stderr, flush=True)
        index = build.make_template("ivf", src.dim, "cosine", choice.params, n)
        t, c = time.perf_counter(), time.process_time()
        build.train(index, sample, build.reusable_centroids(index, choice, 0))
        out["seconds"]["train"] = round(time.perf_counter() - t, 1)
        out["cpu_seconds"] = {"train": round(time.process_time() - c, 1)}
        if args.template:
            import pickle

            with open(args.template, "wb") as f:
                pickle.dump(index, f)
    out["sample_rows"] = int(sample.shape[0])
    ivf = build.ivf_of(index)
    from s5vec import quantizers as qz

    lab = qz.assign(sample, ivf.centroids, "cosine")
    cnt = np.bincount(lab, minlength=ivf.nlist)
    out["sample_list_sizes"] = {"empty": int((cnt == 0).sum()), "min": int(cnt.min()), "max": int(cnt.max()),
                                "mean": round(float(cnt.mean()), 1)}
    units = build.unit_lists(ivf)
    groups = ivf.centroid_groups()
    out["assign"] = "exact" if groups is None else f"grouped: {groups.count} groups, {groups.probe} probed"
    per_block, exact_blocks, same = [], [], 0
    for b, block in enumerate(src.blocks()):
        if b >= args.blocks:
            break
        block = build.stamp_block(block, time.time())
        t, c = time.perf_counter(), time.process_time()
        build.encode_block(ivf, block, units)
        per_block.append((len(block), time.perf_counter() - t, time.process_time() - c))
        if args.exact_too and groups is not None:  # the same block the exact way (the before), same window
            ivf._grouped, ivf._groups, saved = False, None, groups
            try:
                t, c = time.perf_counter(), time.process_time()
                build.encode_block(ivf, block, units)
                exact_blocks.append((len(block), time.perf_counter() - t, time.process_time() - c))
                x = kernels.prepare(block.vectors, ivf.metric)
                same += int((qz.assign(x, ivf.centroids, ivf.metric)
                             == qz.assign(x, ivf.centroids, ivf.metric, groups=saved)).sum())
            finally:
                ivf._grouped, ivf._groups = True, saved

    def summary(blocks: list) -> dict:
        rows = sum(r for r, _, _ in blocks)
        secs = sum(s for _, s, _ in blocks)
        cpu = sum(c for _, _, c in blocks)
        return {"blocks": len(blocks), "rows": rows, "seconds": round(secs, 1), "cpu_seconds": round(cpu, 1),
                "projected_all_rows_s": round(secs / max(rows, 1) * n, 0),
                "projected_all_rows_cpu_s": round(cpu / max(rows, 1) * n, 0)}

    out["encode"] = summary(per_block)
    if exact_blocks:
        out["encode_exact"] = summary(exact_blocks)
        out["same_list_share"] = round(same / max(out["encode_exact"]["rows"], 1), 5)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


def _base_tree(commit: str) -> str:
    """``pkg/`` of ``commit`` (the before of a speed-up), extracted once into a temp dir."""
    import tempfile

    out = os.path.join(tempfile.gettempdir(), f"s5vec-bench-base-{commit}")
    if not os.path.isdir(os.path.join(out, "pkg")):
        os.makedirs(out, exist_ok=True)
        arch = subprocess.run(["git", "-C", ROOT, "archive", commit, "pkg"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", out], input=arch, check=True)
    return os.path.join(out, "pkg")


def _hnsw_data(kind: str, n: int, dim: int, seed: int, nq: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``clustered``: kit.clustered (1,000 clusters, spread 1.0; easy, recall ~1 at ef=64);
    ``hard``: bench/common.synthetic (anisotropic clusters in a 32-d latent space, fresh queries)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    if kind == "hard":
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        import common

        x, qs, _ = common.synthetic(n, dim, nq, seed=seed)
        return x, qs
    import kit

    x = kit.clustered(n, dim, 1000, seed=seed, spread=1.0)
    return x, kit.queries_near(x, nq)


def cmd_hnsw(args: argparse.Namespace) -> None:
    """Build CPU seconds (process_time, BLAS pinned to 1 thread) and recall@10 (ef=64, 200 queries,
    exact truth) of HNSW M=16, ef_construction=200: s5vec now, s5vec at ``--base`` commit, hnswlib."""
    from threadpoolctl import threadpool_info

    threads = sorted({i["num_threads"] for i in threadpool_info()})
    x, qs = _hnsw_data(args.data, args.n, args.dim, args.seed)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    truth = np.argsort(-(qn @ xn.T), axis=1)[:, :10]
    load = os.getloadavg()[0]
    for impl in args.impl or ["s5vec", "hnswlib"]:
        c0, t0 = time.process_time(), time.perf_counter()
        if impl == "hnswlib":
            import hnswlib

            idx = hnswlib.Index(space="cosine", dim=args.dim)
            idx.init_index(max_elements=args.n, M=16, ef_construction=200, random_seed=0)
            idx.set_num_threads(1)
            idx.add_items(x, np.arange(args.n))
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            idx.set_ef(64)
            labels, _ = idx.knn_query(qs, 10)
            found = [set(a.tolist()) for a in labels]
        elif impl == "base":  # the whole package at that commit, in a fresh process
            cmd = [sys.executable, os.path.abspath(__file__), "hnsw", "--impl", "s5vec", "--pkg", _base_tree(args.base),
                   "--n", str(args.n), "--dim", str(args.dim), "--data", args.data, "--seed", str(args.seed)]
            line = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            line["impl"] = f"s5vec@{args.base}"
            print(json.dumps(line), flush=True)
            continue
        else:
            from s5vec import api
            from s5vec.index.hnsw import HNSWIndex

            idx = HNSWIndex(args.dim, "cosine", seed=args.seed)
            idx.add([str(i) for i in range(args.n)], x)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            if hasattr(api, "prepare_query"):
                found = [{int(h.id) for h in idx.search(api.prepare_query(idx, q, 10, None, {"ef": 64})).hits} for q in qs]
            else:  # the older search(vector, k, ef=) of a --base tree
                found = [{int(i) for i, _ in idx.search(q, 10, ef=64)} for q in qs]
        recall = float(np.mean([len(f & set(t.tolist())) / 10 for f, t in zip(found, truth)]))
        print(json.dumps({"impl": impl, "data": args.data, "n": args.n,
                          "dim": args.dim, "seed": args.seed, "build_cpu_s": round(cpu, 1), "build_wall_s": round(wall, 1),
                          "recall@10_ef64": round(recall, 4), "load1": round(load, 1),
                          "blas_threads": threads}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--n", type=int, default=1_000_000)
    g.add_argument("--dim", type=int, default=384)
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--shape", choices=["two-level", "synthetic"], default="two-level",
                   help="two-level: isotropic clusters (hard for PQ); synthetic: bench/common.py's "
                        "sentence-embedding-like data (+ a .queries.npy of fresh draws)")
    g.add_argument("--queries", type=int, default=1000)
    b = sub.add_parser("ivf")
    b.add_argument("--npy", required=True)
    b.add_argument("--portal-dir", required=True)
    b.add_argument("--kind", default="ivf")
    b.add_argument("--param", action="append")
    b.add_argument("--sample", type=int, default=None)
    b.add_argument("--dask", default=None)
    b.add_argument("--queries", type=int, default=100)
    b.add_argument("--progress", action="store_true")
    ph = sub.add_parser("phases", help="the default build's phases timed, no upload (train + --blocks of encoding)")
    ph.add_argument("--npy", required=True)
    ph.add_argument("--blocks", type=int, default=3)
    ph.add_argument("--exact-too", action="store_true",
                    help="also encode every timed block with exact assignment (the before) and count equal lists")
    ph.add_argument("--template", default=None,
                    help="pickle of the trained template: reused if it exists (skips choose/train), else written")
    tr = sub.add_parser("truth", help="exact top-k ground truth of --queries over --npy (blocked)")
    tr.add_argument("--npy", required=True)
    tr.add_argument("--queries", required=True)
    tr.add_argument("--out", required=True)
    tr.add_argument("--k", type=int, default=10)
    tr.add_argument("--query-block", type=int, default=2000, help="queries per pass over --npy")
    h = sub.add_parser("hnsw")
    h.add_argument("--n", type=int, default=20_000)
    h.add_argument("--dim", type=int, default=384)
    h.add_argument("--impl", action="append", choices=["s5vec", "base", "hnswlib"])
    h.add_argument("--base", default="a101884", help="commit whose hnsw.py is --impl base")
    h.add_argument("--data", choices=["clustered", "hard"], default="clustered")
    h.add_argument("--seed", type=int, default=1)
    h.add_argument("--pkg", default=None, help=argparse.SUPPRESS)  # import s5vec from here (--impl base)
    args = p.parse_args()
    if args.cmd == "hnsw":
        if args.pkg:
            sys.path.insert(0, args.pkg)
        cmd_hnsw(args)
    elif args.cmd == "truth":
        cmd_truth(args)
    elif args.cmd == "phases":
        cmd_phases(args)
    elif args.cmd == "gen" and args.shape == "synthetic":
        gen_synthetic(args.n, args.dim, args.out, seed=args.seed or 1, queries=args.queries)
    elif args.cmd == "gen":
        gen(args.n, args.dim, args.out, seed=args.seed)
    else:
        cmd_ivf(args)


if __name__ == "__main__":
    main()
