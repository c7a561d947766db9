"""Shared helpers of the bench_*.py scripts (data, ground truth, recall, sizes, tables).

Not a test module (pytest collects only tests/ and e2e/). Importing it pins BLAS/OpenMP to one
thread (before NumPy loads): every bench measures single-threaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "pkg") not in sys.path:
    sys.path.insert(0, str(ROOT / "pkg"))


def single_thread_env() -> None:
    """Pin BLAS/OpenMP to one thread. Must run before numpy is imported to take effect, so this
    module calls it itself before importing NumPy (it used to be left to the importing script,
    which could only call it after this import had loaded NumPy: the pin never took effect)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                "NUMEXPR_NUM_THREADS"):
        os.environ[var] = "1"


single_thread_env()
import numpy as np  # noqa: E402

T_START = 1_640_995_200.0  # 2022-01-01 UTC
T_END = 1_793_491_200.0    # 2026-11-01 UTC (same span as s5vec.demo)


# ---------------------------------------------------------------- data

def synthetic(n: int, dim: int, n_queries: int, *, latent: int = 32, clusters: int = 256, noise: float = 0.15,
              seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sentence-embedding-like data: a mixture of anisotropic clusters in a ``latent``-d space,
    mapped to ``dim`` by a random linear map, plus small isotropic noise, unit-normalised.

    Returns (base [n, dim] float32, queries [n_queries, dim] float32, timestamps [n] float64).
    Queries are fresh draws from the same distribution (not copies of base vectors).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, latent)).astype(np.float32) * 1.0
    scales = rng.uniform(0.6, 1.2, (clusters, latent)).astype(np.float32)  # anisotropic clusters
    weights = rng.dirichlet(np.full(clusters, 2.0))                          # uneven cluster sizes
    W = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for s in range(0, m, 50_000):
            e = min(m, s + 50_000)
            lab = rng.choice(clusters, e - s, p=weights)
            z = centres[lab] + scales[lab] * rng.standard_normal((e - s, latent)).astype(np.float32)
            x = z @ W + noise * rng.standard_normal((e - s, dim)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[s:e] = x
        return out

    base = draw(n)
    queries = draw(n_queries)
    ts = np.sort(rng.uniform(T_START, T_END, n))  # older first: the newest share is the tail
    return base, queries, ts


def demo(n: int, dim: int, n_queries: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """``s5vec.demo.demo_records``: the first n are the base, the next n_queries are queries."""
    from s5vec.demo import demo_records

    recs = list(demo_records(n + n_queries, dim=dim, seed=seed))
    mat = np.asarray([r["vector"] for r in recs], dtype=np.float32)
    ts = np.asarray([r["timestamp"] for r in recs[:n]], dtype=np.float64)
    return mat[:n], mat[n:], ts, recs[:n]


def ground_truth(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows by cosine (inputs unit length) -> int64 [nq, k]."""
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 256):
        sims = queries[s:s + 256] @ base.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, 1).argsort(axis=1)[:, ::-1]
        out[s:s + 256] = np.take_along_axis(part, order, 1)
    return out


def recall(found: Sequence[Iterable[int]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(map(int, f)) & set(t.tolist())) / k for f, t in zip(found, truth)]))


# ---------------------------------------------------------------- sizes / stats

def numpy_nbytes(obj: Any) -> int:
    """Sum of ``nbytes`` of every distinct NumPy array reachable from ``obj`` through
    attributes, lists, tuples and dict values (Python strings/dicts such as ids and metadata
    are not counted)."""
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            base = o if o.base is None else o.base
            if isinstance(base, np.ndarray) and base is not o:
                if id(base) in seen:
                    continue
                seen.add(id(base))
                total += base.nbytes
            else:
                total += o.nbytes
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            if o and isinstance(o[0], (str, int, float)):
                continue
            stack.extend(o)
        elif hasattr(o, "__dict__") and not isinstance(o, type) and type(o).__module__.startswith("s5vec"):
            stack.extend(vars(o).values())
        elif hasattr(o, "__slots__") and type(o).__module__.startswith("s5vec"):
            stack.extend(getattr(o, s) for s in o.__slots__ if hasattr(o, s))
    return total


def pct(values: Sequence[float], p: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), p)) if len(values) else float("nan")


def fmt_bytes(b: float) -> str:
    if b != b:  # nan
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(b) < 1024 or unit == "GB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return str(b)


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    """Plain text table (markdown-compatible pipes)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "-"
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"
        return "-" if v is None else str(v)

    data = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(d[i]) for d in data)) if data else len(c) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(d) for d in data]
    return "\n".join(out)


class Timer:
    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.s = time.perf_counter() - self.t0


class PublishCache:
    """Indexes a bench published before, kept under ``cache_dir`` (portal blobs in ``portal/``, CIDs
    in ``cids.json``) by a key of what defines them, so a rerun measures without rebuilding.

    Why one class: bench_scale writes the entries bench_batch reads, so both must key them alike
    (they once drifted apart: bench_batch kept looking for keys of defaults bench_scale no longer
    published)."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)
        self.portal = self.dir / "portal"
        self.portal.mkdir(parents=True, exist_ok=True)
        self.file = self.dir / "cids.json"
        self.entries: dict[str, dict[str, Any]] = json.loads(self.file.read_text()) if self.file.exists() else {}

    @staticmethod
    def key(parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def get(self, parts: Any) -> dict[str, Any] | None:
        return self.entries.get(self.key(parts))

    def put(self, parts: Any, entry: dict[str, Any]) -> None:
        self.entries[self.key(parts)] = entry
        self.file.write_text(json.dumps(self.entries, indent=1))


def scale_key(n: int, dim: int, recent_share: float, kind: str) -> list[Any]:
    """PublishCache key of bench_scale's default-params index (read by bench_batch). The tag names
    the defaults: "v2" rotated PQ within a cold budget; "v3" the check at the collection's density
    and the index trained on the check's rows and centroids. An index cached under older defaults
    is not what publish picks now."""
    return [n, dim, recent_share, kind, "v3"]
