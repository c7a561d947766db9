"""The commit the tab runs (Database.commit_async): staged chunks, parallel uploads, manifest last,
typed errors, and a retry after a commit that failed part-way."""
import asyncio

import numpy as np
import pytest

from s5vec import api
from s5vec.errors import AuthError, NothingToCommitError, PortalError, QuotaError, UnknownIdError
from s5vec.s5.client import MemoryClient, _upload_error
from s5vec.store import ChunkStore

DIM = 16


def records(n, seed=0, prefix="r", age_days=1.0):
    rng = np.random.default_rng(seed)
    return [{"id": f"{prefix}{i}", "vector": rng.standard_normal(DIM).tolist(), "metadata": {"g": i % 3},
             "timestamp": 1.7e9 - i * 86400 * age_days} for i in range(n)]


class FlakyClient(MemoryClient):
    """A portal that dies after ``ok`` more uploads (then every upload fails like a dead server)."""

    def __init__(self, blobs, ok):
        super().__init__()
        self.blobs = blobs  # the same portal storage as the other clients of the test
        self.ok = ok

    def upload(self, data):
        if self.ok <= 0:
            raise PortalError("upload failed on every portal (unreachable (ConnectionRefusedError))")
        self.ok -= 1
        return super().upload(data)


@pytest.fixture
def published():
    client = MemoryClient()
    cid = api.publish(records(3000), ChunkStore(client), kind="hybrid",
                      params={"recent_threshold": "30d", "nlist": 16})
    return client, cid


def edit(db):
    new = records(100, seed=1, prefix="n")
    for r in new:
        r["timestamp"] = 1.7e9  # recent: the HNSW part
    return new, [f"r{i}" for i in range(0, 1000, 100)]


def chunk_cids(client, cid):
    return [c["cid"] for c in api.read_manifest(ChunkStore(client), cid)["chunks"]]


def test_commit_async_writes_the_same_chunks_as_commit(published):
    client, cid = published
    a = api.Database.open(cid, store=ChunkStore(client))
    b = api.Database.open(cid, store=ChunkStore(client))
    new, gone = edit(a)
    a.upsert(new)
    a.delete(gone)
    cid_a, _ = a.commit()

    async def tab():
        await b.upsert_async(new)
        await b.delete_async(gone)
        return await b.commit_async()

    res = asyncio.run(tab())
    assert res["parent"] == cid and res["manifest"] == b.cid
    assert chunk_cids(client, res["manifest"]) == chunk_cids(client, cid_a)
    changed = set(chunk_cids(client, res["manifest"])) - set(chunk_cids(client, cid))
    assert res["uploaded"] == len(changed) and res["skipped"] == len(chunk_cids(client, cid_a)) - len(changed)
    fresh = api.Database.open(res["manifest"], store=ChunkStore(client))
    assert len(fresh.index) == 3000 + 100 - 10 and fresh.manifest["parent"] == cid
    assert changed


def test_upload_count_is_the_changed_chunks(published):
    client, cid = published
    db = api.Database.open(cid, store=ChunkStore(client))
    new, gone = edit(db)
    events = []

    async def tab():
        await db.upsert_async(new)
        await db.delete_async(gone)
        return await db.commit_async(progress=events.append)

    n_blobs = len(client.blobs)
    res = asyncio.run(tab())
    changed = set(chunk_cids(client, res["manifest"])) - set(chunk_cids(client, cid))
    assert res["uploaded"] == len(changed) > 0
    assert len(client.blobs) == n_blobs + len(changed) + 1  # + the manifest
    assert res["skipped"] == len(chunk_cids(client, res["manifest"])) - len(changed)
    assert events[-1]["done"] == events[-1]["total"] == len(changed) and events[-1]["uploaded"] == len(changed)
    fresh = api.Database.open(res["manifest"], store=ChunkStore(client))
    for r in new[:5]:
        assert fresh.get(r["id"])["metadata"] == r["metadata"]
    for i in gone:
        with pytest.raises(UnknownIdError):
            fresh.get(i)


def test_a_commit_that_fails_part_way_names_nothing_and_a_retry_finishes(published):
    client, cid = published
    flaky = FlakyClient(client.blobs, ok=2)
    db = api.Database.open(cid, store=ChunkStore(flaky))
    new, gone = edit(db)
    n_blobs = len(client.blobs)

    async def first():
        await db.upsert_async(new)
        await db.delete_async(gone)
        with pytest.raises(PortalError):
            await db.commit_async()

    asyncio.run(first())
    assert len(client.blobs) == n_blobs + 2            # two chunks made it, no manifest
    assert db.cid == cid and db.edits == 2              # still the old snapshot, edits kept
    assert len(api.Database.open(cid, store=ChunkStore(client)).index) == 3000   # old manifest valid

    flaky.ok = 10**6                                    # the portal is back
    res = asyncio.run(db.commit_async())
    changed = set(chunk_cids(client, res["manifest"])) - set(chunk_cids(client, cid))
    assert res["uploaded"] == len(changed) - 2          # only what was still missing
    assert len(api.Database.open(res["manifest"], store=ChunkStore(client)).index) == 3090
    with pytest.raises(NothingToCommitError):
        asyncio.run(db.commit_async())


def test_bad_edits_change_nothing(published):
    client, cid = published
    db = api.Database.open(cid, store=ChunkStore(client))

    async def run():
        with pytest.raises(NothingToCommitError):
            await db.commit_async()
        with pytest.raises(Exception) as e:
            await db.upsert_async([{"id": "x", "vector": [1.0] * (DIM + 1)}])
        assert e.value.name == "DimensionError"
        with pytest.raises(Exception) as e:
            await db.upsert_async([{"id": "x", "vector": [float("nan")] * DIM}])
        assert e.value.name == "InvalidVectorError"
        with pytest.raises(UnknownIdError):
            await db.delete_async(["r1", "nope"])
        assert db.edits == 0 and len(db.index) == 3000
        with pytest.raises(NothingToCommitError):
            await db.commit_async()

    asyncio.run(run())
    db.get("r1")  # the known id of the refused delete is still there


def test_refused_uploads_are_typed():
    assert isinstance(_upload_error("c", [401, 403], ["a", "b"]), AuthError)
    assert isinstance(_upload_error("c", [413], ["a"]), QuotaError)
    assert isinstance(_upload_error("c", [401, 0], ["a", "b"]), AuthError)    # one down, one wants a token
    assert type(_upload_error("c", [500, 401], ["a", "b"])) is PortalError
    assert type(_upload_error("c", [0], ["a"])) is PortalError


class SlowClient(MemoryClient):
    """Uploads that take a while (so the tab can edit while a commit runs)."""

    async def upload_async(self, data):
        await asyncio.sleep(0.01)
        return self.upload(data)


def test_edits_made_while_a_commit_uploads_stay_pending(published):
    client, cid = published
    slow = SlowClient()
    slow.blobs = client.blobs
    db = api.Database.open(cid, store=ChunkStore(slow))
    new, _ = edit(db)

    async def run():
        await db.upsert_async(new[:50])
        commit = asyncio.create_task(db.commit_async())
        await asyncio.sleep(0.005)                 # the snapshot is taken, uploads are running
        await db.upsert_async(new[50:])
        first = await commit
        assert db.edits == 1, "the edit made during the uploads is still pending"
        assert len(api.Database.open(first["manifest"], store=ChunkStore(client)).index) == 3050
        second = await db.commit_async()
        assert second["parent"] == first["manifest"]
        assert len(api.Database.open(second["manifest"], store=ChunkStore(client)).index) == 3100

    asyncio.run(run())
