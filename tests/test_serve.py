"""The HTTP API: every endpoint through httpx against a real ``s5vec serve`` process and a real portal.

The oracle is the Python API itself (``Database`` opened on the same manifest): the server must
answer exactly what ``Database.search`` answers, keep every committed write, refuse bad input with
the right status and error name, and keep serving afterwards.
"""
from __future__ import annotations

import json
import math
import time

import httpx
import numpy as np
import pytest

from kit import assert_same_hits
from procs import portal  # noqa: F401 -- the shared module-scoped fixture
from servekit import DIM, TOKEN, holds, publish, serve_process, text_search_available, video_records

from s5vec import api, errors
from s5vec.client import Client
from s5vec.s5.portal import serve as serve_portal
from s5vec.serve.app import ROUTES

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def records():
    return video_records(1500)


@pytest.fixture(scope="module")
def cid(portal, records):
    return publish(portal, records)


@pytest.fixture(scope="module")
def oracle(cid, portal):
    return api.Database.open(cid, [portal])


@pytest.fixture(scope="module")
def server(cid, portal, tmp_path_factory):
    """A long-lived server that tests only *read* from (writes go to their own server)."""
    with serve_process(cid, portal, tmp=tmp_path_factory.mktemp("srv")) as (url, proc):
        yield url


@pytest.fixture
def writable(cid, portal, tmp_path):
    with serve_process(cid, portal, tmp=tmp_path) as (url, proc):
        yield url


def queries(n: int = 8, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, DIM)).astype(np.float32)


def assert_error(r: httpx.Response, status: int, name: str | tuple[str, ...]) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"name", "message"}, body
    assert body["error"]["name"] in ((name,) if isinstance(name, str) else name), body
    assert body["error"]["message"]


def still_serving(url: str) -> None:
    r = httpx.post(f"{url}/v1/search", json={"vector": [0.1] * DIM, "k": 3})
    assert r.status_code == 200 and len(r.json()["hits"]) == 3


# -- reads ----------------------------------------------------------------------------------------
def test_health_info_stats(server, oracle):
    h = httpx.get(f"{server}/v1/health").json()
    assert h == {"status": "ready", "manifest": oracle.cid}
    info = httpx.get(f"{server}/v1/info").json()
    assert info == oracle.info()
    assert {"kind", "dim", "count", "manifest", "parent", "spec"} <= set(info)
    before = httpx.get(f"{server}/v1/stats").json()
    for q in queries(5):
        httpx.post(f"{server}/v1/search", json={"vector": q.tolist()}).raise_for_status()
    st = httpx.get(f"{server}/v1/stats").json()
    assert st["queries"] == before["queries"] + 5
    assert st["latency_ms"]["p50"] > 0 and st["latency_ms"]["p99"] >= st["latency_ms"]["p50"]
    assert st["store"]["bytes_fetched"] > 0 and "cache" in st
    assert httpx.get(f"{server}/v1/manifest").json()["kind"] == "hybrid"


def test_openapi_describes_every_route(server):
    doc = httpx.get(f"{server}/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for method, path, _fn, op in ROUTES:
        p = path.replace(":path}", "}")
        assert p in doc["paths"], p
        operation = doc["paths"][p][method.lower()]
        assert operation["operationId"] == op and "200" in operation["responses"]
    bodies = {op for m, p, f, op in ROUTES if "requestBody" in doc["paths"][p.replace(":path}", "}")][m.lower()]}
    assert {"search", "searchBatch", "upsert", "deleteRecords", "similar"} <= bodies
    # every $ref resolves
    text = json.dumps(doc)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in doc["components"]["schemas"], ref


def test_vector_search_equals_database(server, oracle):
    for n, q in enumerate(queries(8)):
        flt = [None, {"topic": "music"}, {"uploaded_ts": {"$gte": 1.7e9}}, {"channel": {"$in": ["tech-lab", "diy-hub"]}}][n % 4]
        params = {"ef": 64, "nprobe": 8} if n % 2 else None
        body = {"vector": q.tolist(), "k": 7, "filter": flt, "params": params}
        r = httpx.post(f"{server}/v1/search", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert set(got["stats"]) >= {"bytesFetched", "chunksFetched", "cacheHits", "ms"}
        assert_same_hits(got["hits"], oracle.search(q, 7, flt, params))


def test_batch_search_equals_database(server, oracle):
    qs = queries(5, seed=9)
    body = {"queries": [{"vector": q.tolist(), "k": 4 + i, "filter": {"topic": "gaming"} if i == 2 else None}
                        for i, q in enumerate(qs)]}
    r = httpx.post(f"{server}/v1/search/batch", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5
    for i, (q, res) in enumerate(zip(qs, results)):
        assert_same_hits(res["hits"], oracle.search(q, 4 + i, {"topic": "gaming"} if i == 2 else None))
    # one bad query fails the whole batch, naming it
    body["queries"][3]["vector"] = [1.0, 2.0]
    r = httpx.post(f"{server}/v1/search/batch", json=body)
    assert_error(r, 400, "DimensionError")
    assert_error(httpx.post(f"{server}/v1/search/batch", json={"queries": []}), 400, "InvalidArgumentError")


def test_get_record_and_similar(server, oracle, records):
    rec = records[17]
    r = httpx.get(f"{server}/v1/records/{rec['id']}")
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["id"] == rec["id"] and got["metadata"] == rec["metadata"] and got["timestamp"] == rec["timestamp"]
    assert "vector" not in got
    v = httpx.get(f"{server}/v1/records/{rec['id']}", params={"vector": "1"}).json()["vector"]
    want = np.asarray(rec["vector"], np.float32)
    assert np.allclose(v, want / np.linalg.norm(want), atol=1e-3)  # stored as prepared for cosine (maybe fp16)
    assert_error(httpx.get(f"{server}/v1/records/nope"), 404, "UnknownIdError")
    # similar: the record's own vector, the record left out
    r = httpx.post(f"{server}/v1/records/{rec['id']}/similar", json={"k": 5, "filter": {"topic": rec["metadata"]["topic"]}})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    want_hits = [h for h in oracle.search(np.asarray(v, np.float32), 6, {"topic": rec["metadata"]["topic"]})
                 if h["id"] != rec["id"]][:5]
    assert_same_hits(hits, want_hits)
    assert rec["id"] not in {h["id"] for h in hits}
    assert_error(httpx.post(f"{server}/v1/records/nope/similar", json={}), 404, "UnknownIdError")


def test_text_search(server, oracle):
    if text_search_available():
        for text, flt in (("space documentary", None), ("cooking tutorial", {"topic": "cooking"})):
            r = httpx.post(f"{server}/v1/search", json={"text": text, "k": 5, "filter": flt})
            assert r.status_code == 200, r.text
            assert_same_hits(r.json()["hits"], oracle.search_text(text, 5, flt))
        r = httpx.post(f"{server}/v1/search", json={"text": "cooking", "k": 5, "mode": "keyword"})
        assert r.status_code == 200, r.text
        assert_same_hits(r.json()["hits"], oracle.search_text("cooking", 5, mode="keyword"))
        assert_error(httpx.post(f"{server}/v1/search", json={"text": "?!", "k": 5}), 400,
                     ("EmptyQueryError", "InvalidArgumentError"))
        assert_error(httpx.post(f"{server}/v1/search", json={"text": "x", "mode": "nope"}), 400, "InvalidArgumentError")
    else:  # no text search on this build: a typed 400, never a fake answer
        r = httpx.post(f"{server}/v1/search", json={"text": "space documentary", "k": 5})
        assert_error(r, 400, "NotSupportedError")
        with Client(server) as c, pytest.raises(errors.NotSupportedError):
            c.search(text="space documentary")


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, status, name", [
    (b"{not json", 400, "InvalidArgumentError"),
    (b"", 400, "InvalidArgumentError"),
    (b"[1, 2]", 400, "InvalidArgumentError"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "InvalidArgumentError"),
    (json.dumps({"vector": [0.5] * (DIM + 1)}).encode(), 400, "DimensionError"),
    (json.dumps({"vector": [0.5] * (DIM - 1) + [math.nan]}).encode(), 400, "InvalidVectorError"),
    (json.dumps({"vector": [0.5] * DIM, "filter": {"topic": {"$regex": "x"}}}).encode(), 400, "FilterError"),
    (json.dumps({"vector": [0.5] * DIM, "k": 0}).encode(), 400, "InvalidArgumentError"),
    (json.dumps({"vector": [0.5] * DIM, "params": {"efSearch": 5}}).encode(), 400, "InvalidArgumentError"),
    (json.dumps({"vector": [0.5] * DIM, "text": "both"}).encode(), 400, "InvalidArgumentError"),
    (json.dumps({"vectr": [0.5] * DIM}).encode(), 400, "InvalidArgumentError"),
])
def test_bad_search_input(server, content, status, name):
    r = httpx.post(f"{server}/v1/search", content=content, headers={"Content-Type": "application/json"})
    assert_error(r, status, name)
    still_serving(server)


def test_body_over_limit_is_413_and_server_keeps_serving(server):
    big = b'{"vector": [' + b"0.123456789," * (50 * 2**20 // 12) + b'0.1]}'
    assert len(big) > 50 * 10**6
    r = httpx.post(f"{server}/v1/search", content=big, headers={"Content-Type": "application/json"}, timeout=60)
    assert_error(r, 413, "PayloadTooLargeError")

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(50):
            yield b" " * 2**20

    r = httpx.post(f"{server}/v1/search", content=chunks(), headers={"Content-Type": "application/json"}, timeout=60)
    assert_error(r, 413, "PayloadTooLargeError")
    still_serving(server)


def test_unknown_route_and_method(server):
    assert_error(httpx.get(f"{server}/v1/nothing"), 404, "RouteNotFoundError")
    assert_error(httpx.put(f"{server}/v1/search", json={}), 405, "MethodNotAllowedError")


# -- writes ----------------------------------------------------------------------------------------
def test_writes_need_the_token_and_change_nothing(server, oracle):
    new = video_records(3, seed=99, start=900000)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + TOKEN},
                    {"Authorization": TOKEN}):
        for method, path, body in (("POST", "/v1/records", {"records": new}), ("DELETE", "/v1/records/v000001", None),
                                   ("POST", "/v1/records/delete", {"ids": ["v000001"]}),
                                   ("POST", "/v1/commit", None), ("POST", "/v1/migrate", None)):
            r = httpx.request(method, f"{server}{path}", json=body, headers=headers)
            assert_error(r, 401, "UnauthorizedError")
            assert r.headers["www-authenticate"] == "Bearer"
    info = httpx.get(f"{server}/v1/info").json()
    assert info["count"] == oracle.info()["count"] and info["manifest"] == oracle.cid
    assert_error(httpx.get(f"{server}/v1/records/{new[0]['id']}"), 404, "UnknownIdError")
    with Client(server) as c, pytest.raises(errors.UnauthorizedError):
        c.upsert(new)


def test_read_only_server_refuses_writes(cid, portal, tmp_path):
    with serve_process(cid, portal, token=None, tmp=tmp_path) as (url, _):
        r = httpx.post(f"{url}/v1/commit", headers=AUTH)
        assert_error(r, 403, "ForbiddenError")
        still_serving(url)


def test_bad_write_batches_change_nothing(writable, records):
    count = httpx.get(f"{writable}/v1/info").json()["count"]
    good = video_records(4, seed=5, start=800000)
    cases = [
        ({"records": [dict(g, vector=[1.0, 2.0]) for g in good]}, "DimensionError"),
        ({"records": good[:2] + [dict(good[2], vector=[1.0, 2.0])]}, ("InvalidArgumentError", "DimensionError")),
        ({"records": good[:2] + [dict(good[2], vector=[math.nan] * DIM)]}, "InvalidVectorError"),
        ({"records": good[:2] + [dict(good[0])]}, "InvalidArgumentError"),  # duplicate id
        ({"records": good[:2] + [{"vector": good[2]["vector"]}]}, "InvalidArgumentError"),  # no id
        ({"records": good[:2] + [dict(good[2], timestamp="yesterday")]}, "InvalidArgumentError"),
        ({"records": []}, "InvalidArgumentError"),
        ({"records": "nope"}, "InvalidArgumentError"),
    ]
    for body, name in cases:
        r = httpx.post(f"{writable}/v1/records", content=json.dumps(body), headers=AUTH)
        assert_error(r, 400, name)
    assert_error(httpx.post(f"{writable}/v1/records/delete", json={"ids": ["v000001", "nope"]}, headers=AUTH),
                 404, "UnknownIdError")
    assert_error(httpx.delete(f"{writable}/v1/records/nope", headers=AUTH), 404, "UnknownIdError")
    assert httpx.get(f"{writable}/v1/info").json()["count"] == count
    for rec in good:
        assert httpx.get(f"{writable}/v1/records/{rec['id']}").status_code == 404
    assert httpx.get(f"{writable}/v1/records/v000001").status_code == 200


def test_upsert_delete_commit_reopen_loses_nothing(writable, portal, records):
    c = Client(writable, token=TOKEN)
    start = c.info()
    new = video_records(40, seed=11, start=700000)
    replaced = dict(records[3], metadata=dict(records[3]["metadata"], title="REPLACED"))
    assert c.upsert(new + [replaced]) == 41
    assert c.delete(["v000010", "v000011"]) == 2
    r = httpx.delete(f"{writable}/v1/records/v000012", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"deleted": 1, "count": start["count"] + 40 - 3}
    assert c.get(replaced["id"])["metadata"]["title"] == "REPLACED"
    # the server's own searches see the edits before the commit
    hit = c.search(new[5]["vector"], k=1)[0]
    assert hit["id"] == new[5]["id"]
    assert c.migrate() >= 0
    cid = c.commit()
    info = c.info()
    assert info["manifest"] == cid and info["parent"] == start["manifest"] and info["count"] == start["count"] + 37
    # reopen the committed snapshot with the Python API: every write is there
    db = api.Database.open(cid, [portal])
    assert db.info()["count"] == start["count"] + 37
    for rec in new:
        assert db.get(rec["id"])["metadata"] == rec["metadata"]
    assert db.get(replaced["id"])["metadata"]["title"] == "REPLACED"
    for gone in ("v000010", "v000011", "v000012"):
        assert not holds(db, gone)
    for q in queries(4, seed=21):
        assert_same_hits(c.search(q, k=6, filter={"topic": "travel"}), db.search(q, 6, {"topic": "travel"}))
    c.close()


def test_commit_and_upsert_stream_progress(writable, portal):
    c = Client(writable, token=TOKEN)
    events: list[dict] = []
    n = 2500  # more than one upsert step: progress after each step
    assert c.upsert(video_records(n, seed=12, start=600000), progress=events.append) == n
    steps = [e for e in events if e["phase"] == "upsert"]
    assert [e["done"] for e in steps] == [1000, 2000, 2500] and all(e["total"] == n for e in steps)
    events.clear()
    cid = c.commit(progress=events.append)
    assert events and events[-1]["phase"] == "commit" and events[-1]["done"] is True
    assert events[-1]["chunks_uploaded"] >= 1
    assert api.Database.open(cid, [portal]).info()["count"] == c.info()["count"]
    # the raw protocol: Accept: text/event-stream, `progress` events then one `result`
    with httpx.stream("POST", f"{writable}/v1/commit", headers={**AUTH, "Accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("event:")]
    assert names[-1] == "result" and set(names[:-1]) <= {"progress"}
    # bad input is still a plain JSON error with its status when a stream was asked for
    r = httpx.post(f"{writable}/v1/records?stream=1", json={"records": [{"id": "x", "vector": [1.0]}]}, headers=AUTH)
    assert_error(r, 400, "DimensionError")
    c.close()


def test_client_raises_the_error_classes(server):
    with Client(server) as c:
        with pytest.raises(errors.DimensionError):
            c.search([1.0, 2.0])
        with pytest.raises(errors.FilterError):
            c.search([0.1] * DIM, filter={"a": {"$nope": 1}})
        with pytest.raises(errors.UnknownIdError):
            c.get("nope")
        with pytest.raises(errors.InvalidArgumentError):
            c.search([0.1] * DIM, k=-1)
        assert len(c.search_batch([{"vector": [0.1] * DIM, "k": 2}])[0]["hits"]) == 2
        assert c.stats()["queries"] >= 1
    from s5vec.client import ServerUnavailableError
    with Client("http://127.0.0.1:9", timeout=2) as c, pytest.raises(ServerUnavailableError):
        c.info()


def test_unknown_cid_reports_not_ready(portal, tmp_path):
    """A manifest the portal does not hold: the server starts, health says failed, routes say why."""
    missing = "blobb5rsudgfsbzpklyh34sbuqan6iqej7rufxtgcn2dgseaa57xw3iyvlaaa"
    from servekit import ENV
    import subprocess
    import sys
    import time
    proc = subprocess.Popen([sys.executable, "-m", "s5vec", "serve", missing, "--portal", portal, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        url = proc.stdout.readline().split("listening on", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            r = httpx.get(f"{url}/v1/health")
            if r.json()["status"] != "starting" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 503 and r.json()["status"] == "failed"
        assert r.json()["error"]["name"] in ("NotFoundError", "CIDError")
        assert_error(httpx.get(f"{url}/v1/info"), 503, "ClosedError")
    finally:
        proc.terminate()
        proc.wait(10)


def test_cors(cid, portal, tmp_path):
    with serve_process(cid, portal, "--cors-origin", "https://app.example", tmp=tmp_path) as (url, _):
        r = httpx.options(f"{url}/v1/search", headers={"Origin": "https://app.example",
                                                     "Access-Control-Request-Method": "POST"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = httpx.get(f"{url}/v1/info", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_read_only_workers(cid, portal, oracle, tmp_path):
    """--workers 2: two processes on one port (SO_REUSEPORT), each with the index; reads only."""
    import subprocess
    import sys

    from servekit import ENV
    p = subprocess.run([sys.executable, "-m", "s5vec", "serve", cid, "--portal", portal, "--port", "0",
                        "--workers", "2"], capture_output=True, text=True, timeout=60,
                       env=dict(ENV, S5VEC_SERVE_TOKEN=TOKEN))
    assert p.returncode != 0 and "reads only" in p.stderr
    with serve_process(cid, portal, "--workers", "2", token=None, tmp=tmp_path) as (url, proc):
        qs = queries(6, seed=44)
        clients = [httpx.Client(base_url=url) for _ in range(8)]  # several connections: both workers
        for n, q in enumerate(qs):
            for c in clients:
                r = c.post("/v1/search", json={"vector": q.tolist(), "k": 5})
                assert r.status_code == 200, r.text
                assert_same_hits(r.json()["hits"], oracle.search(q, 5))
        assert_error(clients[0].post("/v1/commit", headers=AUTH), 403, "ForbiddenError")
        for c in clients:
            c.close()
        port = int(url.rsplit(":", 1)[1])
    import socket
    with socket.socket() as s:  # every worker is gone with the parent
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_client_leaving_a_stream_does_not_cut_the_write(writable):
    """A client that drops its progress stream after the first event: the batch is still applied
    whole (never half), and the server keeps serving."""
    start = httpx.get(f"{writable}/v1/info").json()["count"]
    batch = video_records(2500, seed=61, start=300000)
    with httpx.stream("POST", f"{writable}/v1/records?stream=1", json={"records": batch}, headers=AUTH,
                      timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event:"):
                break  # leave after the first event
    deadline = time.monotonic() + 60
    while (count := httpx.get(f"{writable}/v1/info").json()["count"]) != start + len(batch):
        assert count == start and time.monotonic() < deadline, count
        time.sleep(0.05)
    still_serving(writable)


def test_commit_to_a_portal_that_requires_a_token(tmp_path, records):
    """Commits upload chunks: with --portal-token-file they reach a token-guarded portal; without
    it the portal refuses, the commit is a 502 PortalError, and the server keeps serving."""
    guarded, _ = serve_portal(tmp_path / "guarded", tokens=["portal-secret"])
    try:
        from s5vec.s5.client import PortalClient
        from s5vec.store import ChunkStore
        store = ChunkStore(PortalClient([guarded.url], auth_token="portal-secret"))
        cid = api.publish(records[:300], store, kind="hybrid", params={"recent_threshold": "365d", "nlist": 8})
        new = video_records(3, seed=8, start=200000)
        (tmp_path / "pt").write_text("portal-secret\n")
        with serve_process(cid, guarded.url, "--portal-token-file", str(tmp_path / "pt"), tmp=tmp_path) as (url, _):
            assert httpx.post(f"{url}/v1/records", json={"records": new}, headers=AUTH).status_code == 200
            r = httpx.post(f"{url}/v1/commit", headers=AUTH)
            assert r.status_code == 200, r.text
            assert api.Database.open(r.json()["manifest"], [guarded.url]).info()["count"] == 303
        with serve_process(cid, guarded.url, tmp=tmp_path) as (url, _):
            assert httpx.post(f"{url}/v1/records", json={"records": new}, headers=AUTH).status_code == 200
            assert_error(httpx.post(f"{url}/v1/commit", headers=AUTH), 502, ("AuthError", "PortalError"))
            still_serving(url)
    finally:
        guarded.stop()
