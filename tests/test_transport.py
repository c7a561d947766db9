"""Transport under slow and broken portals: deadline per blob, health, hedging, single-flight.

Real sockets throughout (tests/blobserver.py serves blobs from memory and hangs, trickles or
delays on demand); timings are generous bounds, the figures themselves are printed.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from s5vec import api
from s5vec.errors import InvalidArgumentError, NotFoundError, PortalError
from s5vec.s5.client import PortalClient, PortalHealth
from s5vec.store import ChunkStore

from blobserver import BlobServer, MirrorClient
from kit import clustered


@pytest.fixture
def good():
    with BlobServer() as s:
        yield s


@pytest.fixture
def hanging():
    with BlobServer(mode="hang") as s:
        yield s


def _publish(server: BlobServer, n=2000, dim=16, kind="ivf", **params):
    x = clustered(n, dim, 20, seed=3)
    recs = [{"id": f"v{i}", "vector": x[i].tolist(), "metadata": {"g": i % 4}} for i in range(n)]
    store = ChunkStore(MirrorClient(server))
    return api.publish(recs, store, kind=kind, params=params or None), x


# ---------------------------------------------------------------- failure 1: a hanging first portal
def test_open_and_first_search_with_a_hanging_first_portal(good, hanging):
    """Issue 10, failure 1: every blob used to wait out the timeout on the hanging portal (80 s)."""
    cid, x = _publish(good, nlist=16)
    t0 = time.monotonic()
    db = api.Database.open(cid, [hanging.url, good.url], timeout=10)
    t_open = time.monotonic() - t0
    hits = db.search(x[5], 10)
    total = time.monotonic() - t0
    print(f"\nopen {t_open:.3f} s, open + first search {total:.3f} s with a hanging first portal")
    assert hits[0]["id"] == "v5"
    assert total < 8, total
    # the hanging portal was asked once (the manifest), then moved to the back
    assert sum(hanging.gets.values()) <= 2
    assert db.store.client.health.is_down(hanging.url)


def test_trickling_portal_is_cut_off_by_the_deadline():
    """1 byte per 0.5 s: a per-read timeout never fires; the per-blob deadline does."""
    with BlobServer(mode="trickle") as slow:
        slow.trickle_every = 0.5
        cid = slow.add(os.urandom(40))
        c = PortalClient([slow.url], timeout=1.5, retries=0)
        t0 = time.monotonic()
        with pytest.raises(PortalError, match="deadline"):
            c.download(cid)
        took = time.monotonic() - t0
        print(f"\ntrickling portal cut off after {took:.2f} s (deadline 1.5 s)")
        assert 1.4 < took < 4


def test_trickling_first_portal_is_hedged(good):
    with BlobServer(mode="trickle") as slow:
        data = os.urandom(5000)
        cid = slow.add(data)
        good.add(data)
        c = PortalClient([slow.url, good.url], timeout=5)
        t0 = time.monotonic()
        assert c.download(cid) == data
        assert time.monotonic() - t0 < 2
        assert c.health.order() == [good.url, slow.url]


def test_deadline_covers_retries_of_a_single_hanging_portal(hanging):
    c = PortalClient([hanging.url], timeout=0.8, retries=3)
    t0 = time.monotonic()
    with pytest.raises(PortalError) as ei:
        c.download(hanging.add(b"never served"))
    assert time.monotonic() - t0 < 2.5
    assert "deadline" in str(ei.value) and not isinstance(ei.value, NotFoundError)


# ---------------------------------------------------------------- hedging and health
def test_hedge_takes_the_first_verified_answer_and_cancels_the_other(good):
    with BlobServer(mode="delay") as slow:
        slow.delay = 3.0
        data = os.urandom(1000)
        cid = slow.add(data)
        good.add(data)
        c = PortalClient([slow.url, good.url], timeout=10)
        t0 = time.monotonic()
        assert c.download(cid) == data
        took = time.monotonic() - t0
        assert took < 1.5, took  # ~ the first hedge delay (250 ms), not the 3 s delay
        assert slow.gets[cid] == 1 and good.gets[cid] == 1
        # the slow portal lost the race: it goes to the back, later blobs skip it
        assert c.health.order() == [good.url, slow.url]
        for _ in range(5):
            assert c.download(cid) == data
        assert slow.gets[cid] == 1 and good.gets[cid] == 6


def test_hedge_ignores_a_fast_portal_serving_wrong_bytes(good):
    with BlobServer() as liar:
        data = os.urandom(3000)
        cid = good.add(data)
        liar.blobs[cid] = os.urandom(3000)  # wrong bytes under the right CID
        c = PortalClient([liar.url, good.url], timeout=5)
        assert c.download(cid) == data
        assert liar.url in c._bad[cid]


@pytest.mark.parametrize("fault", ["reset", "corrupt", "truncate", "error", "flap"])
def test_faulty_first_portal_falls_back_fast_and_goes_last(good, fault):
    with BlobServer(mode=fault) as bad:
        blobs = [os.urandom(2000 + i) for i in range(6)]
        cids = [good.add(b) for b in blobs]
        for b in blobs:
            bad.add(b)
        c = PortalClient([bad.url, good.url], timeout=5, retries=0)
        t0 = time.monotonic()
        assert [c.download(x) for x in cids] == blobs
        got = asyncio.run(c.download_many(cids))
        assert [got[x] for x in cids] == blobs
        assert time.monotonic() - t0 < 3
        if fault != "flap":  # a flapping portal answers well half the time
            # failed on the first blob (wrong bytes are asked for once more past any cache), then
            # tried last, so never again
            assert list(bad.gets) == [cids[0]] and bad.gets[cids[0]] <= 2, bad.gets


def test_a_failed_portal_is_probed_again_after_its_cool_down(good):
    with BlobServer(mode="error") as flaky:
        data = os.urandom(100)
        cid = flaky.add(data)
        good.add(data)
        c = PortalClient([flaky.url, good.url], timeout=5, retries=0)
        c.health.cooldown = 0.3
        assert c.download(cid) == data
        assert c.health.is_down(flaky.url) and flaky.gets[cid] == 1
        assert c.download(cid) == data
        assert flaky.gets[cid] == 1  # in cool-down: tried last, so not at all
        time.sleep(0.35)
        flaky.mode = "ok"
        assert c.download(cid) == data
        assert flaky.gets[cid] == 2  # probed, answered
        assert not c.health.is_down(flaky.url)
        assert c.health.order() == [flaky.url, good.url]


def test_health_probe_is_one_request_and_cool_down_doubles():
    now = [0.0]
    h = PortalHealth(["a", "b"], cooldown=1.0, clock=lambda: now[0])
    h.failed("a")
    assert h.order() == ["b", "a"]
    now[0] = 1.01
    assert h.order() == ["a", "b"]  # this request probes a
    assert h.order() == ["b", "a"]  # others keep it last until the probe is answered
    h.failed("a")
    now[0] = 2.5
    assert h.order() == ["b", "a"]  # second cool-down is 2 s
    now[0] = 3.1
    assert h.order()[0] == "a"
    h.ok("a", 0.01)
    assert h.order() == ["a", "b"] and h.order() == ["a", "b"]


def test_hedge_delay_follows_observed_latency():
    h = PortalHealth(["a"])
    assert h.hedge_delay() == 0.25
    for _ in range(10):
        h.ok("a", 0.001)
    assert h.hedge_delay() == 0.05
    for _ in range(30):
        h.ok("a", 0.2)
    assert abs(h.hedge_delay() - 0.6) < 1e-9


def test_async_download_many_with_a_hanging_portal(good, hanging):
    blobs = [os.urandom(500 + i) for i in range(30)]
    cids = [good.add(b) for b in blobs]
    c = PortalClient([hanging.url, good.url], timeout=10)
    t0 = time.monotonic()
    got = asyncio.run(c.download_many(cids))
    assert [got[k] for k in cids] == blobs
    assert time.monotonic() - t0 < 3


def test_timeouts_and_tokens_from_make_store(good):
    st = api.make_store([good.url], timeout=2.5, auth_token="sekret")
    assert st.client.timeout == 2.5 and st.client.auth_token == "sekret"
    with pytest.raises(InvalidArgumentError):
        api.make_store([good.url], timeout=0)
    with pytest.raises(InvalidArgumentError):
        api.make_store([good.url], timeout=float("nan"))
    with pytest.raises(InvalidArgumentError):
        api.make_store([good.url], auth_token="a\nb")


# ---------------------------------------------------------------- failure 6: single-flight
def test_store_single_flight_threads_and_coroutines():
    with BlobServer(mode="delay") as slow:
        slow.delay = 0.3
        data = os.urandom(2000)
        cid = slow.add(data)
        st = ChunkStore(PortalClient([slow.url], timeout=5), cache_bytes=0)  # nothing stays cached
        with ThreadPoolExecutor(40) as ex:
            got = list(ex.map(lambda _: st.get(cid), range(40)))
        assert all(g == data for g in got) and slow.gets[cid] == 1

        other = os.urandom(3000)
        cid2 = slow.add(other)
        st2 = ChunkStore(PortalClient([slow.url], timeout=5))

        async def many():
            await asyncio.gather(*(st2.prefetch([cid2]) for _ in range(50)))

        # coroutines on one loop, plus threads each running their own loop, at the same time
        ts = [threading.Thread(target=lambda: asyncio.run(st2.prefetch([cid2]))) for _ in range(10)]
        for t in ts:
            t.start()
        asyncio.run(many())
        for t in ts:
            t.join()
        assert slow.gets[cid2] == 1 and st2.get(cid2) == other
        assert st2.stats()["chunks_fetched"] == 1


def test_single_flight_shares_errors():
    with BlobServer(mode="delay") as slow:
        slow.delay = 0.2
        st = ChunkStore(PortalClient([slow.url], timeout=5))
        from s5vec.s5.cid import blob_cid

        missing = blob_cid(b"not there")
        with ThreadPoolExecutor(20) as ex:
            errs = list(ex.map(lambda _: _err(lambda: st.get(missing)), range(20)))
        assert all(isinstance(e, NotFoundError) for e in errs)
        assert slow.gets[missing] == 1
        # a later ask is a new flight (errors are not cached)
        with pytest.raises(NotFoundError):
            st.get(missing)
        assert slow.gets[missing] == 2


def _err(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return e
    return None


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_500_concurrent_searches_after_open_fetch_each_chunk_once(good, mode):
    """Issue 10, failure 6: 500 searches right after open fetched 4,006 chunks for ~1 MB."""
    cid, x = _publish(good, n=3000, nlist=24)
    db = api.Database.open(cid, [good.url])
    opened = sum(good.gets.values())
    good.mode, good.delay = "delay", 0.05  # every chunk takes a while: the searches overlap
    rng = np.random.default_rng(0)
    qs = x[rng.integers(0, len(x), 500)] + 0.01
    if mode == "threads":
        with ThreadPoolExecutor(64) as ex:
            res = list(ex.map(lambda q: db.search(q, 5), qs))
    else:
        async def run():
            return await asyncio.gather(*(db.search_async(q, 5) for q in qs))
        res = [r["hits"] for r in asyncio.run(run())]
    assert len(res) == 500 and all(len(h) == 5 for h in res)
    per_chunk = {k: n for k, n in good.gets.items()}
    print(f"\n{mode}: {sum(per_chunk.values()) - opened} chunk GETs for 500 searches "
          f"({len(per_chunk)} distinct blobs)")
    assert max(per_chunk.values()) == 1, sorted(per_chunk.values())[-5:]
    assert db.store.stats()["chunks_fetched"] == len(per_chunk)


# ---------------------------------------------------------------- through the project's fault portal
@pytest.fixture
def real_portal(tmp_path):
    from s5vec.s5.portal import start_portal

    p = start_portal(tmp_path / "real")
    yield p
    p.stop()


def test_open_and_search_behind_the_fault_portal(real_portal):
    """Failure 1 again, with s5vec.s5.faults: a hanging proxy of the real portal first."""
    from s5vec.s5.faults import FaultPortal

    x = clustered(1500, 16, 12, seed=5)
    recs = [{"id": f"v{i}", "vector": x[i].tolist()} for i in range(1500)]
    cid = api.publish(recs, api.make_store([real_portal.url]), kind="ivf", params={"nlist": 12})
    with FaultPortal(real_portal.url, mode="hanging") as fp:
        t0 = time.monotonic()
        db = api.Database.open(cid, [fp.url, real_portal.url], timeout=10)
        assert db.search(x[3], 5)[0]["id"] == "v3"
        took = time.monotonic() - t0
        print(f"\nfault portal 'hanging' first: open + first search {took:.2f} s")
        assert took < 8
        for mode, params in (("resetting", {}), ("corrupting", {}), ("truncating", {}), ("flapping", {}),
                             ("delay", {"delay": 3})):
            fp.set_mode(mode, **params)
            fresh = api.Database.open(cid, [fp.url, real_portal.url], timeout=10)
            t0 = time.monotonic()
            assert fresh.search(x[9], 5)[0]["id"] == "v9", mode
            assert time.monotonic() - t0 < 4, mode


def test_slow_fault_portal_is_cut_off_by_the_deadline(real_portal):
    from s5vec.s5.faults import FaultPortal

    data = os.urandom(200)
    cid = PortalClient([real_portal.url]).upload(data)
    with FaultPortal(real_portal.url, mode="slow", rate=20) as fp:  # 200 bytes at 20 B/s: 10 s
        t0 = time.monotonic()
        with pytest.raises(PortalError, match="deadline"):
            PortalClient([fp.url], timeout=1.5, retries=0).download(cid)
        assert time.monotonic() - t0 < 4
