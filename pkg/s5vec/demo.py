"""The demo collection: synthetic video metadata with embeddings that behave like real ones.

Each video belongs to a topic; its 384-d vector is the topic centre plus a channel-style
offset plus noise, so "more like this" finds videos on the same topic, mostly from similar
channels. Titles and tags are built from the topic's vocabulary so a person can judge results.
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np

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
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for rec in demo_records(count, dim, seed):
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            n += 1
    return n


def write_demo_config(records_path: str, manifest: str, portals: list[str], out: str, samples: int = 60) -> None:
    """The page's config: the manifest, the portals, and a spread of sample videos to start from."""
    with open(records_path, encoding="utf-8") as fh:
        recs = [json.loads(line) for line in fh if line.strip()]
    step = max(1, len(recs) // samples)
    picked = []
    for r in recs[::step][:samples]:
        m = r["metadata"]
        picked.append({"id": r["id"], "title": m["title"], "channel": m["channel"], "tags": m["tags"],
                       "uploaded": m["uploaded"], "timestamp": r["timestamp"], "vector": r["vector"]})
    channels = sorted({r["metadata"]["channel"] for r in recs})
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"manifest": manifest, "portals": portals, "count": len(recs), "channels": channels,
                   "samples": picked}, fh)
