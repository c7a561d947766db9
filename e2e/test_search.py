"""Search through the browser bridge (real Chromium, Pyodide worker, portals on other origins)
against the same index searched on CPython.

The index is published once per module from CPython to portal 1 and copied to portal 2.
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from kit import assert_same_hits

N, DIM, CLUSTERS, CHUNK_ROWS = 5000, 64, 40, 1024
CHANNELS = ["news", "music", "gaming", "science", "travel"]
T0 = 1_640_995_200  # 2022-01-01
T1 = 1_793_491_200  # 2026-11-01


def make_records(seed: int = 11) -> list[dict]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    labels = rng.integers(0, CLUSTERS, N)
    vecs = (centres[labels] + 0.35 * rng.standard_normal((N, DIM))).astype(np.float32)
    ts = rng.integers(T0, T1, N)
    return [
        {
            "id": f"doc{i:05d}",
            "vector": vecs[i],
            "metadata": {"channel": CHANNELS[int(labels[i] + i) % len(CHANNELS)], "uploaded_ts": float(ts[i]),
                         "cluster": int(labels[i])},
            "timestamp": float(ts[i]),
        }
        for i in range(N)
    ]


def queries(records: list[dict], n: int = 20, seed: int = 5) -> list[np.ndarray]:
    """Half near stored vectors (perturbed), half fresh random directions."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n):
        if j % 2 == 0:
            base = records[int(rng.integers(0, len(records)))]["vector"]
            out.append((base + 0.2 * rng.standard_normal(DIM)).astype(np.float32))
        else:
            out.append(rng.standard_normal(DIM).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def published(portals):
    from s5vec.api import Database, make_store, publish, read_manifest

    p1, p2 = portals
    records = make_records()
    store = make_store([p1.url])
    cid = publish(records, store, kind="flat", params={"chunk_rows": CHUNK_ROWS})
    for f in p1.blobs_dir.iterdir():  # portal 2 holds a full good copy
        if not f.name.startswith("."):
            shutil.copy(f, p2.blobs_dir / f.name)
    manifest = read_manifest(store, cid)
    ref = Database.open(cid, [p1.url])
    return {"cid": cid, "records": records, "manifest": manifest, "ref": ref, "urls": [p1.url, p2.url]}


@pytest.fixture(scope="module")
def other_index(portals):
    """A second, small index on both portals (shares no chunk with the main one)."""
    from s5vec.api import Database, make_store, publish

    p1, p2 = portals
    records = [dict(r, id=f"other{i}") for i, r in enumerate(make_records(seed=99)[:600])]
    cid = publish(records, make_store([p2.url]), kind="flat", params={"chunk_rows": 256})
    for f in p2.blobs_dir.iterdir():
        if not f.name.startswith(".") and not (p1.blobs_dir / f.name).exists():
            shutil.copy(f, p1.blobs_dir / f.name)
    return {"cid": cid, "records": records, "ref": Database.open(cid, [p2.url])}


@contextlib.contextmanager
def tampered(portal_servers, cid: str):
    """Overwrite the blob file of ``cid`` on the given portals with same-size wrong bytes; restore after."""
    from s5vec.s5.cid import BlobId

    bid = BlobId.parse(cid)
    saved = []
    for srv in portal_servers:
        path: Path = srv.blob_path(bid)
        data = path.read_bytes()
        saved.append((path, data))
        bad = bytearray(data)
        bad[len(bad) // 2] ^= 0xFF
        path.write_bytes(bytes(bad))
    try:
        yield
    finally:
        for path, data in saved:
            path.write_bytes(data)


# ---------------------------------------------------------------- correctness

def test_open_info(shared_harness, published):
    key = shared_harness.open(published["cid"], published["urls"])
    info = shared_harness.js("return window.dbs[arg].info;", key)
    assert info["kind"] == "flat"
    assert info["dim"] == DIM
    assert info["count"] == N
    assert info["metric"] == "cosine"
    assert info["manifest"] == published["cid"]


def test_twenty_queries_match_cpython(shared_harness, published):
    key = shared_harness.open(published["cid"], published["urls"])
    ref = published["ref"]
    for j, q in enumerate(queries(published["records"])):
        res = shared_harness.search(key, q, k=10, f32=(j % 3 != 0))  # also plain number[] vectors
        assert res["ok"], res
        assert_same_hits(res["value"]["hits"], ref.search(q, k=10))
        stats = res["value"]["stats"]
        assert set(stats) >= {"bytesFetched", "chunksFetched", "cacheHits", "ms"}
        assert stats["ms"] >= 0


def test_filter_matches_cpython(shared_harness, published):
    key = shared_harness.open(published["cid"], published["urls"])
    ref = published["ref"]
    lo, hi = 1_672_531_200, 1_735_689_600  # [2023-01-01, 2025-01-01)
    flt = {"channel": "music", "uploaded_ts": {"$gte": lo, "$lt": hi}}
    for q in queries(published["records"], n=5, seed=9):
        res = shared_harness.search(key, q, k=10, filter=flt)
        assert res["ok"], res
        hits = res["value"]["hits"]
        assert hits, "filter should match some records"
        for h in hits:
            assert h["metadata"]["channel"] == "music"
            assert lo <= h["metadata"]["uploaded_ts"] < hi
        assert_same_hits(hits, ref.search(q, k=10, filter=flt))


def test_input_vector_not_detached(shared_harness, published):
    """The bridge copies before transferring: the caller's Float32Array stays usable."""
    key = shared_harness.open(published["cid"], published["urls"])
    out = shared_harness.js(
        """const v = new Float32Array(arg.vec); const hits = await window.dbs[arg.key].search(v, { k: 3 });
           return { len: v.length, first: v[0], hits: hits.length };""",
        {"key": key, "vec": [float(x) for x in published["records"][0]["vector"]]},
    )
    assert out["len"] == DIM and out["hits"] == 3
    assert out["first"] == pytest.approx(float(published["records"][0]["vector"][0]), abs=1e-6)


# ---------------------------------------------------------------- integrity

def test_tampered_chunk_on_portal1_good_copy_on_portal2(harness, published, portals):
    ref = published["ref"]
    row_chunk = published["manifest"]["index"]["rows"][1]
    qs = queries(published["records"], n=5, seed=21)
    with tampered([portals[0]], row_chunk):
        key = harness.open(published["cid"], published["urls"])  # portal 1 first
        for q in qs:
            res = harness.search(key, q, k=10)
            assert res["ok"], res
            assert_same_hits(res["value"]["hits"], ref.search(q, k=10))


@pytest.mark.parametrize("which", ["row-chunk", "manifest"])
def test_tampered_everywhere_rejects_integrity_error_and_worker_survives(harness, published, other_index, portals, which):
    """No good copy anywhere: open rejects with IntegrityError; the same worker then serves other queries.

    A fresh page (fresh HTTP cache) per case: portals send blobs as immutable, so a page that already
    fetched the good bytes would never see the tampered file.
    """
    chunk = published["manifest"]["index"]["rows"][2] if which == "row-chunk" else published["cid"]
    with tampered(portals, chunk):
        res = harness.run(
            "await S5Vec.open({ manifest: arg.cid, portals: arg.urls }); return 'opened';",
            {"cid": published["cid"], "urls": published["urls"]},
        )
        assert not res["ok"]
        assert res["isS5VecError"]
        assert res["name"] == "IntegrityError", res
        assert res["message"]
        # the worker keeps serving: a fresh open of an index needing no tampered chunk, then searches
        key = harness.open(other_index["cid"], published["urls"])
        for q in queries(other_index["records"], n=3, seed=4):
            res = harness.search(key, q, k=10)
            assert res["ok"], res
            assert_same_hits(res["value"]["hits"], other_index["ref"].search(q, k=10))


# ---------------------------------------------------------------- malformed requests

def _still_serving(bridge, key, published):
    q = published["records"][7]["vector"]
    res = bridge.search(key, q, k=5)
    assert res["ok"], res
    assert res["value"]["hits"][0]["id"] == "doc00007"


def test_bad_requests_reject_with_python_error_names(shared_harness, published, closed_port_url):
    from s5vec.s5.cid import blob_cid

    b = shared_harness
    key = b.open(published["cid"], published["urls"])
    vec = [float(x) for x in published["records"][0]["vector"]]

    cases = [
        ("DimensionError", b.search(key, vec[:-1], k=10)),
        ("DimensionError", b.search(key, vec + vec, k=10, f32=False)),
        ("InvalidVectorError", b.search(key, [float("nan")] + vec[1:], k=10)),
        ("InvalidVectorError", b.search(key, [float("inf")] + vec[1:], k=10, f32=False)),
        ("FilterError", b.search(key, vec, k=10, filter={"channel": {"$regex": "mu.*"}})),
        ("InvalidArgumentError", b.search(key, vec, k=0)),
        ("NotFoundError", b.run("await S5Vec.open({ manifest: arg.cid, portals: arg.urls });",
                                {"cid": blob_cid(b"no such manifest anywhere"), "urls": published["urls"]})),
        ("PortalError", b.run("await S5Vec.open({ manifest: arg.cid, portals: [arg.url] });",
                              {"cid": published["cid"], "url": closed_port_url})),
        ("CIDError", b.run("await S5Vec.open({ manifest: 'not-a-cid', portals: arg });", published["urls"])),
        ("InvalidArgumentError", b.run("await S5Vec.open({ manifest: arg, portals: [] });", published["cid"])),
    ]
    for name, res in cases:
        assert not res["ok"], (name, res)
        assert res["isS5VecError"], res
        assert res["name"] == name, (name, res)
        assert res["message"]
        _still_serving(b, key, published)


def test_closed_database(shared_harness, published):
    """Closing twice is fine; later calls reach the worker and Python answers ClosedError."""
    key = shared_harness.open(published["cid"], published["urls"])
    handle = shared_harness.js("await window.dbs[arg].close(); await window.dbs[arg].close(); return window.dbs[arg].handle;", key)
    assert shared_harness.js("return window.dbs[arg].closed;", key) is True
    res = shared_harness.search(key, published["records"][0]["vector"])
    assert not res["ok"] and res["isS5VecError"], res
    assert (res["name"], res["message"]) == ("ClosedError", f"database {handle} is closed")  # rpc's words
    res = shared_harness.run("return await window.dbs[arg].stats();", key)
    assert not res["ok"] and res["name"] == "ClosedError", res


def test_recovers_after_tampered_blob_is_repaired(harness, published, portals):
    """A portal that served bad bytes once and was then repaired: a fresh open in the same page works.

    Portals send blobs with ``Cache-Control: immutable``; the bad response must not stay stuck
    in the browser's HTTP cache.
    """
    chunk = published["manifest"]["index"]["rows"][3]
    with tampered(portals, chunk):
        res = harness.run("await S5Vec.open({ manifest: arg.cid, portals: arg.urls });",
                          {"cid": published["cid"], "urls": published["urls"]})
        assert not res["ok"] and res["name"] == "IntegrityError", res
    key = harness.open(published["cid"], published["urls"])
    q = published["records"][3]["vector"]
    res = harness.search(key, q, k=10)
    assert res["ok"], res
    assert_same_hits(res["value"]["hits"], published["ref"].search(q, k=10))
