"""Signed registry pointers through the HTTP API: open by pointer, a commit moves the pointer to the
new manifest, and a pointer moved by someone else meanwhile makes the commit a 409."""
from __future__ import annotations

import httpx
import pytest

from procs import portal  # noqa: F401 -- the shared module-scoped fixture
from servekit import TOKEN, publish, serve_process, video_records

registry = pytest.importorskip("s5vec.s5.registry")

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def cid(portal):
    return publish(portal, video_records(300))


def test_open_by_pointer_commit_moves_it(portal, cid, tmp_path):
    key = registry.SigningKey.generate()
    key.save(tmp_path / "key")
    registry.publish_pointer(portal, key, cid)
    # read-only by pointer: no key, the pointer stays
    with serve_process(None, portal, "--pointer", key.pointer, tmp=tmp_path) as (url, _):
        info = httpx.get(f"{url}/v1/info").json()
        assert info["manifest"] == cid
        assert info["pointer"] == {"pointer": key.pointer, "revision": 1, "writable": False}
    # with the key: a commit moves the pointer
    with serve_process(None, portal, "--pointer-key", str(tmp_path / "key"), tmp=tmp_path) as (url, _):
        new = video_records(2, seed=3, start=400000)
        assert httpx.post(f"{url}/v1/records", json={"records": new}, headers=AUTH).status_code == 200
        r = httpx.post(f"{url}/v1/commit", headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["revision"] == 2
        assert registry.resolve_pointer(portal, key.pointer) == r.json()["manifest"]
        # someone else moves the pointer: the next commit uploads but answers 409
        registry.publish_pointer(portal, key, cid)  # revision 3, back to the old manifest
        assert httpx.post(f"{url}/v1/records", json={"records": video_records(1, seed=4, start=410000)},
                          headers=AUTH).status_code == 200
        r = httpx.post(f"{url}/v1/commit", headers=AUTH)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["name"] == "StaleRevisionError"
        assert registry.resolve_pointer(portal, key.pointer) == cid  # left where the other writer put it


def test_unknown_pointer_reports_failed_health(portal, tmp_path):
    import subprocess
    import sys
    import time

    from servekit import ENV
    key = registry.SigningKey.generate()
    proc = subprocess.Popen([sys.executable, "-m", "s5vec", "serve", "--pointer", key.pointer, "--portal", portal,
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        url = proc.stdout.readline().split("listening on", 1)[1].split()[0]
        deadline = time.monotonic() + 30
        while (r := httpx.get(f"{url}/v1/health")).json()["status"] == "starting" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 503 and r.json()["error"]["name"] == "NotFoundError"
    finally:
        proc.terminate()
        proc.wait(10)


def test_cid_and_pointer_are_exclusive(portal, cid):
    import subprocess
    import sys

    from servekit import ENV
    key = registry.SigningKey.generate()
    p = subprocess.run([sys.executable, "-m", "s5vec", "serve", cid, "--pointer", key.pointer, "--portal", portal],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode != 0 and "either" in p.stderr
