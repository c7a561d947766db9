"""The HTTP API under concurrent load: 50 clients mixing searches and upserts (and a commit every
second) against a real ``s5vec serve`` process. Zero errors, zero lost writes (counted after the
last commit, in the reopened snapshot), and no reader ever sees half of a batch.

The duration is ``S5VEC_LOAD_SECONDS`` (default 5 s here; bench/bench_serve.py runs 30 s).
"""
from __future__ import annotations

import asyncio
import os
import time

import httpx
import numpy as np
import pytest

from procs import portal  # noqa: F401 -- the shared module-scoped fixture
from servekit import DIM, TOKEN, holds, publish, serve_process, video_records

from s5vec import api

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECONDS = float(os.environ.get("S5VEC_LOAD_SECONDS", "5"))
CLIENTS = 50


@pytest.fixture(scope="module")
def cid(portal):
    return publish(portal, video_records(1000))


async def _client(n: int, url: str, stop_at: float, rng: np.random.Generator, log: dict) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        i = 0
        while i == 0 or time.monotonic() < stop_at:  # at least one request each, however busy the machine
            i += 1
            t0 = time.perf_counter()
            if rng.random() < 0.2:  # upsert 1-5 new records with ids unique to this client
                recs = [{"id": f"load-{n}-{i}-{j}", "vector": rng.standard_normal(DIM).tolist(),
                         "metadata": {"title": f"load video {n} {i} {j}", "client": n, "i": i}, "timestamp": time.time() - rng.random() * 4e7}
                        for j in range(int(rng.integers(1, 6)))]
                r = await http.post("/v1/records", json={"records": recs}, headers=AUTH)
                if r.status_code == 200 and r.json()["upserted"] == len(recs):
                    log["written"].update(rec["id"] for rec in recs)
                else:
                    log["errors"].append((r.status_code, r.text[:200]))
            else:
                body = {"vector": rng.standard_normal(DIM).tolist(), "k": 10}
                if rng.random() < 0.3:
                    body["filter"] = {"topic": "music"}
                r = await http.post("/v1/search", json=body)
                if r.status_code != 200 or len(r.json()["hits"]) != 10:
                    log["errors"].append((r.status_code, r.text[:200]))
            log["ms"].append((time.perf_counter() - t0) * 1000)


def test_fifty_clients_mixed_search_and_upsert(cid, portal, tmp_path):
    with serve_process(cid, portal, tmp=tmp_path) as (url, _):
        start = httpx.get(f"{url}/v1/info").json()["count"]
        log: dict = {"written": set(), "errors": [], "ms": [], "commits": 0}

        async def committer(stop_at: float) -> None:  # snapshots taken while the others read and write
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                while time.monotonic() < stop_at:
                    await asyncio.sleep(1.0)
                    r = await http.post("/v1/commit", headers=AUTH)
                    log["commits"] += r.status_code == 200
                    if r.status_code != 200:
                        log["errors"].append((r.status_code, r.text[:200]))

        async def main() -> None:
            stop_at = time.monotonic() + SECONDS
            await asyncio.gather(committer(stop_at),
                                 *(_client(n, url, stop_at, np.random.default_rng(n), log) for n in range(CLIENTS)))

        asyncio.run(main())
        ms = np.array(log["ms"])
        print(f"\n{CLIENTS} clients x {SECONDS:g} s: {ms.size} requests ({ms.size / SECONDS:.0f}/s), "
              f"{len(log['written'])} records written; client-side p50 {np.percentile(ms, 50):.1f} ms, "
              f"p99 {np.percentile(ms, 99):.1f} ms")
        assert log["errors"] == []
        assert ms.size >= CLIENTS and len(log["written"]) > 0 and log["commits"] >= 1
        r = httpx.post(f"{url}/v1/commit", headers=AUTH, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["count"] == start + len(log["written"])
        db = api.Database.open(r.json()["manifest"], [portal])
        assert db.info()["count"] == start + len(log["written"])
        missing = [i for i in log["written"] if not holds(db, i)]
        assert missing == []


def test_readers_never_see_half_a_batch(cid, portal, tmp_path):
    batch = video_records(3000, seed=31, start=500000)
    with serve_process(cid, portal, tmp=tmp_path) as (url, _):
        start = httpx.get(f"{url}/v1/info").json()["count"]
        seen: list[int] = []
        hits_seen: list[int] = []

        async def main() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                done = asyncio.Event()

                async def write() -> None:
                    r = await http.post("/v1/records", json={"records": batch}, headers=AUTH)
                    assert r.status_code == 200, r.text
                    done.set()

                async def read() -> None:
                    while not done.is_set():
                        seen.append((await http.get("/v1/info")).json()["count"])
                        hits = (await http.post("/v1/search/batch", json={"queries": [
                            {"vector": batch[0]["vector"], "k": 1}, {"vector": batch[-1]["vector"], "k": 1}]})).json()
                        ids = [res["hits"][0]["id"] for res in hits["results"]]
                        # both ends of the batch are in, or neither is
                        hits_seen.append(sum(i in (batch[0]["id"], batch[-1]["id"]) for i in ids))

                await asyncio.gather(write(), *(read() for _ in range(4)))

        asyncio.run(main())
        assert set(seen) <= {start, start + len(batch)}, sorted(set(seen))
        assert set(hits_seen) <= {0, 2}, hits_seen
        assert 0 in hits_seen  # the readers did run while the batch was being applied
        assert httpx.get(f"{url}/v1/info").json()["count"] == start + len(batch)
        for rec in (batch[0], batch[-1]):  # once applied, the probe queries do find both ends
            hits = httpx.post(f"{url}/v1/search", json={"vector": rec["vector"], "k": 1}).json()["hits"]
            assert hits[0]["id"] == rec["id"]
