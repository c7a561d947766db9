"""Incremental commit: bytes uploaded by a commit of new records vs the index's total bytes (target <= 5%).

    .venv/bin/python bench/bench_commit.py                      # 58,000 x 384 hybrid + 1,000 new records
    .venv/bin/python bench/bench_commit.py --n 20000 --new 500  # quick
    .venv/bin/python bench/bench_commit.py --films              # the 58,788 films with their keyword index

Publishes ``--n`` synthetic sentence-embedding-like records (bench/common.py) as a hybrid index
(the newest ``--recent-share`` in HNSW, the rest in IVF, float16 vectors as the demo) into an
in-memory S5 store (real chunks, real CBOR, real blake3: the bytes are the bytes a portal would get),
opens it, upserts ``--new`` fresh records (recent: they land in the HNSW part) and commits, the
same ``Database.commit`` the tab runs. Prints the bytes and chunks uploaded next to the index's
total (every chunk of the new manifest + the manifest), and the same for a delete-only commit.

``--films``: the demo's index instead (``s5vec.demo.movie_records``, embedded by the local text model,
published with the size-aware defaults and a keyword index over ``text``, as ``demo.sh`` does); the
new records are 1,000 sequels of evenly spaced films (``"<title> II (2006), <genres>"``). Prints the
keyword part's share of each commit, the warm keyword-query latency (CPython, ``search_text(mode=
"keyword")`` over title and free-text queries) before and after the commits, and ``--rounds`` more
commits of ``--new`` records (what repeated commits cost as the keyword index's segments grow and merge).
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
    parent = set(c["cid"] for c in db.manifest["chunks"])
    t = time.perf_counter()
    cid, writer = db.commit()
    ms = (time.perf_counter() - t) * 1000
    d = store.diff(before)
    total, nchunks = index_bytes(store, cid)
    print(f"{what:<32} uploaded {d['bytes_uploaded']:>11,} B in {d['chunks_uploaded']:>4} of {nchunks} chunks "
          f"({writer.skipped} unchanged, skipped) = {100 * d['bytes_uploaded'] / total:5.2f}% of {total:,} B "
          f"({100 * d['chunks_uploaded'] / nchunks:.1f}% of chunks); commit {ms:,.0f} ms")
    m = api.read_manifest(store, cid)
    kw = [c for c in m["chunks"] if c["kind"].startswith("kw_")]
    if kw:
        new = [c for c in kw if c["cid"] not in parent]
        kw_total = sum(c["size"] for c in kw)
        print(f"{'  of which keyword index':<32} uploaded {sum(c['size'] for c in new):>11,} B in {len(new):>4} of "
              f"{len(kw)} chunks = {100 * sum(c['size'] for c in new) / total:5.2f}% of the index "
              f"({100 * sum(c['size'] for c in new) / kw_total:.2f}% of the keyword index's {kw_total:,} B)")


def keyword_latency(db: api.Database, queries: list[str], what: str, repeat: int = 5) -> None:
    """Warm keyword-only text queries (every chunk fetched once before timing): p50/p99 ms, wall clock
    and CPU time of this thread (less sensitive to other processes on a shared machine)."""
    for q in queries:
        db.search_text(q, 10, mode="keyword")
    wall, cpu = [], []
    for _ in range(repeat):
        for q in queries:
            t, c = time.perf_counter(), time.thread_time()
            db.search_text(q, 10, mode="keyword")
            cpu.append((time.thread_time() - c) * 1000)
            wall.append((time.perf_counter() - t) * 1000)
    for name, times in (("wall", wall), ("cpu", cpu)):
        times.sort()
        p = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
        print(f"keyword query (warm, CPython, {name}) {what}: p50 {p(0.5):.3f} ms, p90 {p(0.9):.3f} ms, "
              f"p99 {p(0.99):.3f} ms, mean {sum(times) / len(times):.3f} ms over {len(times)} queries")


def films(a: argparse.Namespace) -> None:
    """The films demo index (vectors + keyword index), 1,000 new films, 10 deletes."""
    import random

    from s5vec import embed
    from s5vec.demo import movie_records, movie_text

    records = list(movie_records())
    model = embed.load_local()
    t = time.perf_counter()
    embed.embed_records(records, model, "text")
    print(f"embedded {len(records):,} films in {time.perf_counter() - t:.1f} s")
    store = ChunkStore(MemoryClient())
    t = time.perf_counter()
    cid = api.publish(records, store, kind="hybrid", params=None, text_field="text",
                      explain=lambda choice: print(choice.line()))
    total, nchunks = index_bytes(store, cid)
    m = api.read_manifest(store, cid)
    kw_bytes = sum(c["size"] for c in m["chunks"] if c["kind"].startswith("kw_"))
    print(f"published {len(records):,} films in {time.perf_counter() - t:.1f} s: {total:,} B in {nchunks} chunks "
          f"(keyword index {kw_bytes:,} B)")
    rng = random.Random(3)
    queries = [r["metadata"]["title"] for r in rng.sample(records, 150)] + [
        "space documentary", "romantic comedy in paris", "war movie", "the godfather", "star wars",
        "animated short for children", "love story", "drama 1999", "comedy", "the"]
    db = api.Database.open(cid, store=store)
    keyword_latency(db, queries, "after publish", a.repeat)
    now = time.time()

    def sequels(start: int, count: int) -> list[dict]:
        step = max(1, len(records) // count)
        out = []
        for j, r in enumerate(records[start::step][:count]):
            meta = dict(r["metadata"], title=r["metadata"]["title"] + " II", year=2006)
            out.append({"id": f"x{start}-{r['id']}", "text": movie_text(meta["title"], 2006, meta["genres"]),
                        "metadata": meta, "timestamp": now - j})
        embed.embed_records(out, model, "text")
        return out

    db.upsert(sequels(0, a.new))
    commit(db, store, f"+{a.new:,} new films", total)
    db.delete([r["id"] for r in records[:: len(records) // 10]][:10])
    commit(db, store, "-10 deleted films", total)
    edited = [dict(r, text=r["text"] + ", Remastered", vector=None) for r in records[5::len(records) // 10][:10]]
    for r in edited:
        r.pop("vector")
    embed.embed_records(edited, model, "text")
    db.upsert(edited)
    commit(db, store, "10 films' text edited", total)
    for k in range(a.rounds):
        db.upsert(sequels(k + 1, a.new))
        commit(db, store, f"+{a.new:,} new films (round {k + 2})", total)
    keyword_latency(api.Database.open(db.cid, store=store), queries, "after the commits (fresh open)", a.repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=58000)
    ap.add_argument("--new", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--recent-share", type=float, default=0.10)
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--defaults", action="store_true", help="publish with the size-aware defaults (no params)")
    ap.add_argument("--films", action="store_true", help="the films demo index with its keyword index (defaults)")
    ap.add_argument("--rounds", type=int, default=4, help="--films: further commits of --new films")
    ap.add_argument("--repeat", type=int, default=5, help="--films: timed passes over the keyword queries")
    a = ap.parse_args()
    if a.films:
        films(a)
        return

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
