"""Incremental commit: bytes uploaded by a commit of new records vs the index's total bytes (target <= 5%).

    .venv/bin/python bench/bench_commit.py                      # 58,000 x 384 hybrid + 1,000 new records
    .venv/bin/python bench/bench_commit.py --n 20000 --new 500  # quick

Publishes ``--n`` synthetic sentence-embedding-like records (bench/common.py) as a hybrid index
(the newest ``--recent-share`` in HNSW, the rest in IVF, float16 vectors as the demo) into an
in-memory S5 store (real chunks, real CBOR, real blake3: the bytes are the bytes a portal would get),
opens it, upserts ``--new`` fresh records (recent: they land in the HNSW part) and commits, the
same ``Database.commit`` the tab runs. Prints the bytes and chunks uploaded next to the index's
total (every chunk of the new manifest + the manifest), and the same for a delete-only commit.
Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import single_thread_env  # noqa: E402

single_thread_env()
import common as C  # noqa: E402

sys.path.insert(0, str(C.ROOT / "pkg"))
from s5vec import api  # noqa: E402
from s5vec.s5.client import MemoryClient  # noqa: E402
from s5vec.store import ChunkStore  # noqa: E402


def index_bytes(store: ChunkStore, cid: str) -> tuple[int, int]:
    m = api.read_manifest(store, cid)
    unlisted = (m.get("extra") or {}).get("unlisted", {})  # e.g. ivf_refine chunks, named by list chunks
    return (sum(c["size"] for c in m["chunks"]) + sum(u["bytes"] for u in unlisted.values()) + len(store.get(cid)),
            len(m["chunks"]) + sum(u["count"] for u in unlisted.values()) + 1)


def commit(db: api.Database, store: ChunkStore, what: str, total_before: int) -> None:
    before = store.snapshot()
    t = time.perf_counter()
    cid, writer = db.commit()
    ms = (time.perf_counter() - t) * 1000
    d = store.diff(before)
    total, nchunks = index_bytes(store, cid)
    print(f"{what:<32} uploaded {d['bytes_uploaded']:>11,} B in {d['chunks_uploaded']:>4} of {nchunks} chunks "
          f"({writer.skipped} unchanged, skipped) = {100 * d['bytes_uploaded'] / total:5.2f}% of {total:,} B; "
          f"commit {ms:,.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=58000)
    ap.add_argument("--new", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--recent-share", type=float, default=0.10)
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--defaults", action="store_true", help="publish with the size-aware defaults (no params)")
    a = ap.parse_args()

    base, extra, _ = C.synthetic(a.n, a.dim, a.new)
    now = time.time()
    day = 86400.0
    n_recent = int(a.n * a.recent_share)
    # oldest first; the newest n_recent are within 30 days, the rest 31 days .. 3 years old
    ts = [now - 31 * day - (a.n - n_recent - i) * (3 * 365 * day / a.n) for i in range(a.n - n_recent)]
    ts += [now - 30 * day + i * (29 * day / max(1, n_recent)) for i in range(n_recent)]
    records = [{"id": f"v{i:06d}", "vector": base[i], "metadata": {"channel": f"c{i % 50}"}, "timestamp": ts[i]}
               for i in range(a.n)]
    store = ChunkStore(MemoryClient())
    t = time.perf_counter()
    params = None if a.defaults else {"recent_threshold": "30d", "nlist": a.nlist, "vectors_dtype": "float16"}
    cid = api.publish(records, store, kind="hybrid", params=params,
                      explain=lambda choice: print(choice.line()))
    total, nchunks = index_bytes(store, cid)
    print(f"published {a.n:,} x {a.dim} hybrid ({n_recent:,} in HNSW) in {time.perf_counter() - t:.1f} s: "
          f"{total:,} B in {nchunks} chunks")

    db = api.Database.open(cid, store=store)
    new = [{"id": f"n{i:06d}", "vector": extra[i], "metadata": {"channel": "new"}, "timestamp": now - i}
           for i in range(a.new)]
    db.upsert(new)
    commit(db, store, f"+{a.new:,} new records", total)
    db.delete([f"v{i:06d}" for i in range(0, a.n, a.n // 10)][:10])
    commit(db, store, "-10 deleted records", total)


if __name__ == "__main__":
    main()
