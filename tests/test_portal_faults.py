"""The fault-injection portal does what each mode says, over real HTTP (it is a test tool others rely on)."""
from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.parse

import pytest

from s5vec.s5.cid import blob_cid
from s5vec.s5.client import PortalClient
from s5vec.s5.faults import FaultPortal
from s5vec.s5.portal import start_portal


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    p = start_portal(tmp_path_factory.mktemp("real"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def blob(real):
    data = os.urandom(4000)
    return PortalClient([real.url]).upload(data), data


def _get(url: str, path: str, timeout: float = 5.0):
    """(status, headers, body) or the exception raised, read with http.client (no retries)."""
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.headers, r.read()
    except Exception as e:  # noqa: BLE001 - the test inspects which failure it was
        return e
    finally:
        c.close()


def test_good_delegates_byte_for_byte(real, blob):
    cid, data = blob
    with FaultPortal(real.url) as fp:
        st, h, body = _get(fp.url, f"/s5/blob/{cid}")
        assert st == 200 and body == data and h["ETag"] == f'"{cid}"'
        assert PortalClient([fp.url]).download(cid) == data
        assert fp.requests[0] == ("GET", f"/s5/blob/{cid}", "good")


def test_directory_upstream_starts_a_real_portal(tmp_path):
    with FaultPortal(tmp_path / "dir", mode="corrupting") as fp:
        cid = PortalClient([fp.url]).upload(b"via the proxy")  # uploads are not faulted by default
        assert (tmp_path / "dir" / "blobs").is_dir()
        st, _, body = _get(fp.url, f"/s5/blob/{cid}")
        assert st == 200 and body != b"via the proxy" and len(body) == len(b"via the proxy")


def test_corrupting_and_truncating(real, blob):
    cid, data = blob
    with FaultPortal(real.url, mode="corrupting", offset=10) as fp:
        st, _, body = _get(fp.url, f"/s5/blob/{cid}")
        assert st == 200 and len(body) == len(data) and body != data
        assert [i for i in range(len(data)) if body[i] != data[i]] == [10]
        fp.set_mode("truncating", fraction=0.25)
        res = _get(fp.url, f"/s5/blob/{cid}")
        assert isinstance(res, http.client.IncompleteRead) and len(res.partial) == 1000


def test_hanging_and_resetting(real, blob):
    cid, _ = blob
    with FaultPortal(real.url, mode="hanging") as fp:
        t0 = time.monotonic()
        assert isinstance(_get(fp.url, f"/s5/blob/{cid}", timeout=0.5), socket.timeout)
        assert 0.4 < time.monotonic() - t0 < 3
        fp.set_mode("resetting")
        assert isinstance(_get(fp.url, f"/s5/blob/{cid}"), ConnectionError)


def test_slow_and_delay(real, blob):
    cid, data = blob
    with FaultPortal(real.url, mode="slow", rate=20_000) as fp:
        t0 = time.monotonic()
        st, _, body = _get(fp.url, f"/s5/blob/{cid}")
        assert st == 200 and body == data and time.monotonic() - t0 > 0.15  # ~4.3 kB at 20 kB/s
        fp.set_mode("delay", delay=0.3)
        t0 = time.monotonic()
        assert _get(fp.url, f"/s5/blob/{cid}")[2] == data and time.monotonic() - t0 >= 0.3


def test_flapping_alternates(real, blob):
    cid, data = blob
    with FaultPortal(real.url, mode="flapping", bad="resetting") as fp:
        results = [_get(fp.url, f"/s5/blob/{cid}") for _ in range(4)]
        assert [isinstance(r, tuple) and r[2] == data for r in results] == [True, False, True, False]
        assert [m for _, _, m in fp.requests] == ["good", "resetting", "good", "resetting"]


def test_other_paths_and_preflights_pass(real, blob):
    cid, _ = blob
    with FaultPortal(real.url, mode="resetting") as fp:
        st, _, body = _get(fp.url, "/s5/version")
        assert st == 200 and b"s5vec" in body
        u = urllib.parse.urlsplit(fp.url)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
        c.request("OPTIONS", f"/s5/blob/{cid}", headers={"Origin": "http://x", "Access-Control-Request-Method": "GET"})
        r = c.getresponse()
        assert r.status == 204 and r.getheader("Access-Control-Allow-Origin") == "*"
        c.close()


def test_client_falls_back_past_each_fault(real, blob, tmp_path):
    """The product client gets the right bytes when the first portal misbehaves (short timeouts)."""
    cid, data = blob
    for mode in ("corrupting", "truncating", "resetting", "hanging"):
        with FaultPortal(real.url, mode=mode) as fp:
            assert PortalClient([fp.url, real.url], timeout=0.5, retries=0).download(cid) == data, mode


def test_bad_mode_is_refused(real):
    with pytest.raises(ValueError):
        FaultPortal(real.url, mode="explode")
    with FaultPortal(real.url) as fp, pytest.raises(ValueError):
        fp.set_mode("flapping", bad="good")
    assert blob_cid(b"") and True
