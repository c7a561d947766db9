"""ChunkStore: LRU by bytes, prefetch pinning, upload dedupe, counters."""
from __future__ import annotations

import asyncio
import os

import pytest

from s5vec.errors import IntegrityError, InvalidArgumentError, NotFoundError
from s5vec.s5.cid import BlobId, blob_cid
from s5vec.s5.client import MemoryClient, PortalClient
from s5vec.s5.portal import serve
from s5vec.store import ChunkStore


def _blobs(n, size):
    return [os.urandom(size) for _ in range(n)]


def test_get_caches_and_counts():
    m = MemoryClient()
    data = b"a" * 100
    cid = m.upload(data)
    st = ChunkStore(m, cache_bytes=1000)
    assert st.get(cid) == data
    assert st.get(cid) == data
    assert st.get(BlobId.parse(cid).to_string("base58")) == data  # same blob, other spelling
    s = st.stats()
    assert (s["chunks_fetched"], s["bytes_fetched"], s["cache_hits"], s["cache_misses"]) == (1, 100, 2, 1)
    assert s["cache_bytes"] == 100 and s["cache_entries"] == 1
    assert m.blobs_downloaded == 1


def test_lru_eviction_by_bytes():
    m = MemoryClient()
    blobs = _blobs(5, 300)
    cids = [m.upload(b) for b in blobs]
    st = ChunkStore(m, cache_bytes=1000)
    for c in cids[:3]:
        st.get(c)
    assert st.stats()["cache_bytes"] == 900
    st.get(cids[0])  # touch 0: now 1 is least recent
    st.get(cids[3])  # 1200 > 1000 -> evict 1
    s = st.stats()
    assert s["cache_bytes"] == 900 and s["evictions"] == 1
    assert cids[1] not in st and cids[0] in st and cids[3] in st
    st.get(cids[1])  # refetch
    assert st.stats()["chunks_fetched"] == 5
    assert st.stats()["cache_bytes"] <= 1000


def test_blob_bigger_than_cache_not_cached_but_returned():
    m = MemoryClient()
    big = os.urandom(5000)
    cid = m.upload(big)
    st = ChunkStore(m, cache_bytes=1000)
    assert st.get(cid) == big
    assert st.stats()["cache_bytes"] == 0
    assert st.get(cid) == big
    assert st.stats()["chunks_fetched"] == 2


def test_prefetch_then_get_hits():
    m = MemoryClient()
    blobs = _blobs(4, 100)
    cids = [m.upload(b) for b in blobs]
    st = ChunkStore(m, cache_bytes=10_000)
    asyncio.run(st.prefetch(cids + cids[:1]))
    assert st.stats()["chunks_fetched"] == 4
    before = st.snapshot()
    for cid, b in zip(cids, blobs):
        assert st.get(cid) == b
    c = st.diff(before)
    # reading what the prefetch brought is part of that fetch, not a cache hit
    assert c["chunks_fetched"] == 0 and c["cache_hits"] == 0
    before = st.snapshot()
    for cid, b in zip(cids, blobs):
        assert st.get(cid) == b
    c = st.diff(before)
    assert c["chunks_fetched"] == 0 and c["cache_hits"] == 4
    asyncio.run(st.prefetch(cids))  # all cached: nothing fetched
    assert st.stats()["chunks_fetched"] == 4


def test_prefetched_blob_bigger_than_cache_is_pinned_until_read():
    m = MemoryClient()
    big = os.urandom(5000)
    cid = m.upload(big)
    st = ChunkStore(m, cache_bytes=1000)
    st.prefetch_sync([cid])
    s = st.stats()
    assert s["pinned_bytes"] == 5000 and s["chunks_fetched"] == 1
    assert st.get(cid) == big  # served from the pin, no second download
    assert m.blobs_downloaded == 1
    assert st.stats()["pinned_bytes"] == 0  # released once read
    assert st.get(cid) == big  # now a normal miss
    assert m.blobs_downloaded == 2


def test_prefetch_more_than_cache_keeps_all_until_read():
    m = MemoryClient()
    blobs = _blobs(10, 300)
    cids = [m.upload(b) for b in blobs]
    st = ChunkStore(m, cache_bytes=1000)
    st.prefetch_sync(cids)
    for cid, b in zip(cids, blobs):
        assert st.get(cid) == b
    assert m.blobs_downloaded == 10
    s = st.stats()
    assert s["pinned_bytes"] == 0 and s["cache_bytes"] <= 1000


def test_prefetch_sync_inside_running_loop():
    m = MemoryClient()
    cids = [m.upload(b) for b in _blobs(3, 50)]
    st = ChunkStore(m)

    async def main():
        st.prefetch_sync(cids)  # a loop is running here: uses a helper thread

    asyncio.run(main())
    assert st.stats()["chunks_fetched"] == 3


def test_put_dedupes():
    m = MemoryClient()
    st = ChunkStore(m)
    a = st.put(b"chunk-a")
    assert a == blob_cid(b"chunk-a")
    assert st.put(b"chunk-a") == a
    st.put(b"chunk-b")
    s = st.stats()
    assert (s["chunks_uploaded"], s["chunks_skipped"], s["bytes_uploaded"]) == (2, 1, 14)
    assert m.blobs_uploaded == 2
    # a fetched cid counts as known too
    other = MemoryClient()
    cid = other.upload(b"remote")
    st2 = ChunkStore(other)
    st2.get(cid)
    st2.put(b"remote")
    assert st2.stats()["chunks_skipped"] == 1 and other.blobs_uploaded == 1


def test_put_with_cache_flag():
    m = MemoryClient()
    st = ChunkStore(m)
    cid = st.put(b"cached on write", cache=True)
    assert st.get(cid) == b"cached on write"
    assert st.stats()["chunks_fetched"] == 0 and m.blobs_downloaded == 0


def test_errors_propagate_and_nothing_cached():
    m = MemoryClient()
    cid = m.upload(b"good")
    m.blobs[cid] = b"evil"
    st = ChunkStore(m)
    with pytest.raises(IntegrityError):
        st.get(cid)
    with pytest.raises(IntegrityError):
        st.prefetch_sync([cid])
    assert cid not in st and st.stats()["chunks_fetched"] == 0
    with pytest.raises(NotFoundError):
        st.get(blob_cid(b"absent"))


def test_snapshot_diff():
    m = MemoryClient()
    cids = [m.upload(b) for b in _blobs(3, 10)]
    st = ChunkStore(m)
    before = st.snapshot()
    st.get(cids[0])
    d = st.diff(before)
    assert d["chunks_fetched"] == 1 and d["bytes_fetched"] == 10
    before = st.snapshot()
    st.get(cids[1])
    st.get(cids[1])
    d = st.diff(before)
    assert d["chunks_fetched"] == 1 and d["cache_hits"] == 1 and d["bytes_fetched"] == 10


def test_decoded_objects_share_the_byte_budget():
    """get_decoded keeps the decoded form only while the bytes are cached (one budget)."""
    m = MemoryClient()
    blobs = _blobs(3, 400)
    cids = [m.upload(b) for b in blobs]
    st = ChunkStore(m, cache_bytes=1000)
    calls = []

    def decode(data):
        calls.append(data)
        return {"n": len(data)}

    a = st.get_decoded(cids[0], "k", decode)
    assert st.get_decoded(cids[0], "k", decode) is a and len(calls) == 1
    assert st.get_decoded(cids[0], "other", decode) is not a and len(calls) == 2  # another decoding
    st.get(cids[1]); st.get(cids[2])  # evicts cids[0] (3 x 400 > 1000)
    assert cids[0] not in st
    st.get_decoded(cids[0], "other", decode)
    assert len(calls) == 3 and st.stats()["cache_bytes"] <= 1000


def test_bad_cache_size():
    with pytest.raises(InvalidArgumentError):
        ChunkStore(MemoryClient(), cache_bytes=-1)


def test_store_over_real_portal(tmp_path):
    server, _ = serve(tmp_path / "portal")
    try:
        client = PortalClient([server.url])
        st = ChunkStore(client, cache_bytes=50_000)
        blobs = _blobs(12, 8_000)
        cids = [st.put(b) for b in blobs]
        assert st.stats()["chunks_uploaded"] == 12
        fresh = ChunkStore(PortalClient([server.url]), cache_bytes=50_000)
        before = fresh.snapshot()
        fresh.prefetch_sync(cids)
        got = [fresh.get(x) for x in cids]
        c = fresh.diff(before)
        assert got == blobs
        assert c["chunks_fetched"] == 12 and c["bytes_fetched"] == 96_000 and c["cache_hits"] == 0
        assert fresh.stats()["cache_bytes"] <= 50_000
    finally:
        server.stop()


def test_prefetch_sync_pyodide_path(monkeypatch):
    """Under Pyodide prefetch_sync downloads sequentially through the sync client."""
    import sys

    m = MemoryClient()
    blobs = _blobs(4, 100)
    cids = [m.upload(b) for b in blobs]
    st = ChunkStore(m, cache_bytes=250)
    monkeypatch.setattr(sys, "platform", "emscripten")
    st.prefetch_sync(cids + cids[:1])
    monkeypatch.undo()
    assert m.blobs_downloaded == 4
    assert [st.get(c) for c in cids] == blobs  # pinned until read, despite the tiny cache
    assert m.blobs_downloaded == 4
