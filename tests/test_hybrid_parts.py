"""A published hybrid index keeps its records in both parts, routed by timestamp (CPython only).

Moved from e2e/test_ivf_hybrid.py, where it ran no browser. Published to a real local portal
and reopened from the manifest, so the split is checked as it is stored, not only in memory.
"""
import time

import numpy as np
import pytest

from s5vec import api
from s5vec.s5.portal import serve

from conftest import clustered

N, DIM, DAY = 2_000, 32, 86_400.0


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    server, _ = serve(tmp_path_factory.mktemp("hybrid-portal"))
    now = time.time()
    x = clustered(N, DIM, clusters=32, seed=17)
    rng = np.random.default_rng(23)
    recent = np.arange(N) % 2 == 0
    # recent: 1 hour .. 25 days old (well inside the 30-day window); old: 35 .. 400 days
    ts = np.where(recent, now - rng.uniform(3600, 25 * DAY, N), now - rng.uniform(35 * DAY, 400 * DAY, N))
    records = [{"id": f"h{i:05d}", "vector": x[i], "timestamp": float(ts[i])} for i in range(N)]
    cid = api.publish(records, api.make_store([server.url]), kind="hybrid",
                      params={"recent_threshold": "30d", "nlist": 16, "nprobe": 4})
    yield {"db": api.Database.open(cid, [server.url]), "records": records, "recent": recent}
    server.stop()


def test_hybrid_both_parts_hold_records(published):
    db, m = published["db"], published["db"].manifest
    assert m["kind"] == "hybrid" and m["count"] == N
    n_recent = int(published["recent"].sum())
    assert len(db.index.recent) == n_recent == N // 2
    assert len(db.index.historical) == N - n_recent
    assert m["index"]["historical"]["count"] == N - n_recent
    kinds = {c["kind"] for c in m["chunks"]}
    assert "ivf_list" in kinds and any(k.startswith("hnsw") for k in kinds), kinds
    # routed by timestamp: every recent record is in the HNSW part, every old one in IVF
    for r, rec in zip(published["records"], published["recent"]):
        assert (r["id"] in db.index.recent) == bool(rec), r["id"]
