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


# ---------------------------------------------------------------- one budget for what is really held

def _list_chunks(n_chunks: int, rows: int, seed: int = 0) -> list[bytes]:
    """Real ``ivf_list`` chunks (ids, packed metadata, timestamps, PQ-like codes), as published."""
    import numpy as np

    from s5vec import layout

    rng = np.random.default_rng(seed)
    out = []
    for c in range(n_chunks):
        out.append(layout.encode_chunk("ivf_list", {"lists": [{
            "list": c, "ids": [f"doc-{c}-{r}" for r in range(rows)],
            "metadata": [{"ch": f"c{r % 7}"} if r % 3 == 0 else {} for r in range(rows)],
            "timestamps": rng.random(rows) * 1e9,
            "codes": rng.integers(0, 256, (rows, 48), dtype=np.uint8)}]}))
    return out


def test_accounted_bytes_are_what_decoded_chunks_hold_and_stay_within_the_budget():
    """Many distinct list chunks read decoded through a store with a small budget: ``cache_bytes``
    counts the decoded bodies (their deep footprint, not the raw bytes), stays <= the budget, and
    the memory the store really holds (traced by the allocator) stays near the budget. On the old
    store, which counted raw bytes and kept decoded copies beside them, the traced memory was ~3x."""
    import gc
    import tracemalloc

    from s5vec import layout

    m = MemoryClient()
    blobs = _list_chunks(400, 250)
    cids = [m.upload(b) for b in blobs]
    budget = 1 << 20  # ~60 of the 400 chunks (16 KiB each)
    gc.collect()
    tracemalloc.start()
    try:
        st = ChunkStore(m, cache_bytes=budget)
        reader = layout.StoreReader(st)
        base = tracemalloc.get_traced_memory()[0]
        peak_acc = 0
        for cid in cids:
            body = reader.get(cid, "ivf_list")
            assert body["lists"][0]["ids"][7] == f"doc-{cids.index(cid)}-7"
            peak_acc = max(peak_acc, st.stats()["cache_bytes"])
        del body
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    s = st.stats()
    assert peak_acc <= budget and 0.8 * budget < s["cache_bytes"] <= budget
    assert s["evictions"] > 300 and s["cache_entries"] < 100
    # what is counted is what is held: the allocator's view agrees within 25% (store bookkeeping, key strings)
    assert held <= 1.25 * budget, f"the store holds {held} B for a {budget} B budget"
    from s5vec.store import footprint

    h = st.held()
    assert h["raw_entries"] == 0 and h["decoded_bytes"] == s["cache_bytes"]  # one copy per chunk: decoded
    one = layout.decode_chunk(blobs[0], "ivf_list")
    assert footprint(one) > 0.9 * len(blobs[0])


def test_decoded_entries_drop_their_bytes_and_a_raw_read_refetches():
    from s5vec import layout

    m = MemoryClient()
    blob = _list_chunks(1, 50)[0]
    cid = m.upload(blob)
    st = ChunkStore(m, cache_bytes=1 << 20)
    assert st.get(cid) == blob
    assert st.held() == {"raw_bytes": len(blob), "raw_entries": 1, "decoded_bytes": 0, "decoded_entries": 0}
    body = layout.StoreReader(st).get(cid, "ivf_list")
    h = st.held()
    assert h["raw_entries"] == 0 and h["decoded_entries"] == 1 and st.stats()["cache_bytes"] == h["decoded_bytes"]
    assert layout.StoreReader(st).get(cid, "ivf_list") is body and m.blobs_downloaded == 1
    assert st.peek_decoded(cid, "ivf_list") is body and st.peek_decoded(cid, "other") is None
    assert st.get(cid) == blob and m.blobs_downloaded == 2  # the bytes were dropped: fetched again


def test_kept_chunks_are_counted_and_never_evicted():
    m = MemoryClient()
    blobs = _blobs(6, 300)
    cids = [m.upload(b) for b in blobs]
    st = ChunkStore(m, cache_bytes=1000)
    st.get(cids[0])
    st.keep([cids[0]])
    st.keep([cids[0]])  # nested
    for c in cids[1:]:
        st.get(c)
    s = st.stats()
    assert cids[0] in st and s["resident_bytes"] == 300 and s["cache_bytes"] <= 1000
    st.release([cids[0]])
    for c in cids[1:]:
        st.get(c)
    assert cids[0] in st  # still kept once
    st.release([cids[0]])
    st.get(cids[1])
    st.get(cids[2])
    assert cids[0] not in st and st.stats()["resident_bytes"] == 0  # back in the LRU, least recent first


def test_prefetched_round_survives_decoding_that_grows_entries():
    """A round's chunks stay readable while reading earlier ones (decoded bodies charged bigger
    than their bytes) evicts: nothing is fetched twice."""
    from s5vec import layout

    m = MemoryClient()
    blobs = _list_chunks(30, 200, seed=3)
    cids = [m.upload(b) for b in blobs]
    st = ChunkStore(m, cache_bytes=5 * len(blobs[0]))
    st.prefetch_sync(cids)
    reader = layout.StoreReader(st)
    got = [reader.get(c, "ivf_list")["lists"][0]["list"] for c in cids]
    assert got == list(range(30)) and m.blobs_downloaded == 30
    s = st.stats()
    assert s["pinned_bytes"] == 0 and s["cache_bytes"] <= s["cache_limit"]
