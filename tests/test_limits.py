"""Input limits with typed errors (issue 10, failures 4, 5 and 7), in the API, the worker protocol and the CLI.

Every rejection is typed and changes nothing; nothing ever raises RecursionError.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from s5vec import api, filters, limits, rpc
from s5vec.errors import CIDError, FilterError, InvalidArgumentError
from s5vec.s5.cid import BlobId, blob_cid
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

from kit import clustered
from conftest import ROOT

KINDS = ["flat", "hnsw", "ivf", "hybrid"]


def nested_and(depth: int) -> dict:
    f: dict = {"g": 1}
    for _ in range(depth):
        f = {"$and": [f]}
    return f


def nested_meta(depth: int) -> dict:
    m: dict = {"leaf": 1}
    for _ in range(depth):
        m = {"a": m}
    return m


def recs(n=60, dim=8, seed=0):
    x = clustered(n, dim, 4, seed)
    return [{"id": f"v{i:06d}", "vector": x[i].tolist(), "metadata": {"g": i % 3}} for i in range(n)], x


@pytest.fixture(scope="module")
def published():
    store = ChunkStore(MemoryClient())
    r, x = recs()
    return api.publish(r, store, kind="flat"), store, x


# ---------------------------------------------------------------- failure 4: deep filters and metadata
@pytest.mark.parametrize("depth", [33, 900, 100_000])
def test_deep_filter_is_a_filter_error(depth):
    with pytest.raises(FilterError, match="nested too deeply"):
        filters.parse(nested_and(depth))


def test_deep_filter_as_json_text_is_a_filter_error():
    text = '{"$and": [' * 100_000 + '{"g": 1}' + "]}" * 100_000
    with pytest.raises(FilterError):
        filters.parse(text)


def test_filter_limits_are_not_too_tight():
    assert filters.parse(nested_and(30)) is not None
    wide = {"$or": [{"g": i} for i in range(400)]}
    assert filters.parse(wide).matches({"g": 399})
    with pytest.raises(FilterError, match="too large"):
        filters.parse({"$or": [{"g": i} for i in range(600)]})
    with pytest.raises(FilterError, match="too large"):
        filters.parse({"g": {"$in": list(range(2000))}})


def test_deep_filter_in_search_and_worker_protocol(published):
    cid, store, x = published
    db = api.Database.open(cid, store=store)
    with pytest.raises(FilterError):
        db.search(x[0], 3, nested_and(900))
    reply = json.loads(asyncio.run(rpc.handle("open", {"manifest": cid, "portals": ["http://127.0.0.1:9"]})))
    assert reply["ok"] is False  # (no portal there; the search below uses a handle opened on the store)
    rpc._dbs[999] = db
    try:
        reply = json.loads(asyncio.run(rpc.handle(
            "search", {"handle": 999, "vector": x[0].tolist(), "filter": nested_and(900)})))
        assert reply["ok"] is False and reply["error"]["name"] == "FilterError"
        reply = json.loads(asyncio.run(rpc.handle(
            "search", {"handle": 999, "vector": x[0].tolist(), "filter": nested_and(40)})))
        assert reply["ok"] is False and reply["error"]["name"] == "FilterError"
    finally:
        del rpc._dbs[999]


@pytest.mark.parametrize("kind", KINDS)
def test_deep_metadata_is_rejected_at_publish(kind):
    r, _ = recs()
    r[7]["metadata"] = nested_meta(10_000)
    store = ChunkStore(MemoryClient())
    with pytest.raises(InvalidArgumentError, match="v000007.*nested too deeply"):
        api.publish(r, store, kind=kind)
    assert store.stats()["chunks_uploaded"] == 0
    r[7]["metadata"] = nested_meta(limits.MAX_METADATA_DEPTH - 2)
    api.publish(r, store, kind=kind)


def test_metadata_size_limit():
    r, _ = recs()
    r[3]["metadata"] = {"text": "x" * (70 * 1024)}
    with pytest.raises(InvalidArgumentError, match="v000003.*64 KiB"):
        api.publish(r, ChunkStore(MemoryClient()), kind="flat")
    r[3]["metadata"] = {"text": "x" * (60 * 1024)}
    api.publish(r, ChunkStore(MemoryClient()), kind="flat")
    r[3]["metadata"] = {"many": list(range(20_000))}
    with pytest.raises(InvalidArgumentError, match="64 KiB"):
        api.publish(r, ChunkStore(MemoryClient()), kind="flat")


# ---------------------------------------------------------------- failure 5: NaN and infinity
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.float32("nan")])
def test_nan_and_infinity_in_metadata_rejected_at_publish(kind, bad):
    r, _ = recs()
    r[4]["metadata"] = {"g": 1, "score": {"inner": [1.0, bad]}}
    with pytest.raises(InvalidArgumentError) as ei:
        api.publish(r, ChunkStore(MemoryClient()), kind=kind)
    msg = str(ei.value)
    assert "v000004" in msg and "score.inner[1]" in msg


def test_nan_rejected_at_upsert_and_nothing_changes(published):
    cid, store, x = published
    db = api.Database.open(cid, store=store)
    before = len(db.index)
    with pytest.raises(InvalidArgumentError, match="new1.*'rating'"):
        db.upsert([{"id": "new0", "vector": x[0].tolist()},
                   {"id": "new1", "vector": x[1].tolist(), "metadata": {"rating": float("nan")}}])
    assert len(db.index) == before


def test_worker_reply_is_valid_json_even_for_old_nan_metadata():
    out = rpc._finite({"hits": [{"metadata": {"a": float("nan"), "b": [float("inf"), 1.5]}}]})
    assert out == {"hits": [{"metadata": {"a": None, "b": [None, 1.5]}}]}


# ---------------------------------------------------------------- ids
def test_id_limits():
    r, _ = recs()
    r[0]["id"] = "é" * 300  # 600 bytes of UTF-8
    with pytest.raises(InvalidArgumentError, match="600 bytes"):
        api.publish(r, ChunkStore(MemoryClient()), kind="flat")
    r[0]["id"] = "é" * 256  # 512 bytes: allowed
    api.publish(r, ChunkStore(MemoryClient()), kind="flat")
    for bad in ("", 5, None, b"bytes", "\ud800"):
        r[0]["id"] = bad
        with pytest.raises(InvalidArgumentError):
            api.publish(r, ChunkStore(MemoryClient()), kind="flat")


# ---------------------------------------------------------------- failure 7: delete of a bare string
@pytest.mark.parametrize("kind", KINDS)
def test_delete_of_a_bare_string_is_rejected(kind):
    store = ChunkStore(MemoryClient())
    r, _ = recs()
    # ids that are single characters exist too: a bare string used to delete them one by one
    x = clustered(10, 8, 2, 9)
    r += [{"id": ch, "vector": x[i].tolist()} for i, ch in enumerate("v03")]
    db = api.Database.open(api.publish(r, store, kind=kind), store=store)
    n = len(db.index)
    with pytest.raises(InvalidArgumentError, match="list of ids"):
        db.delete("v000003")
    with pytest.raises(InvalidArgumentError):
        db.delete(b"v000003")
    assert len(db.index) == n
    assert db.delete(["v000003"]) == 1 and len(db.index) == n - 1


# ---------------------------------------------------------------- failure 7: non-canonical CIDs
def test_cid_with_an_extra_trailing_zero_size_byte_is_rejected():
    data = b"hello s5"
    raw = BlobId.of(data).to_bytes()
    for extra in (b"\0", b"\0\0"):
        bad = "b" + base64.b32encode(raw + extra).decode().rstrip("=").lower()
        with pytest.raises(CIDError, match="non-canonical"):
            BlobId.parse(bad)
    # the canonical spellings still parse, size 0 as one zero byte or none
    assert BlobId.parse(blob_cid(data)).size == len(data)
    zero = BlobId.of(b"").to_bytes()
    assert zero[-1] == 0 and BlobId.from_bytes(zero).size == 0 and BlobId.from_bytes(zero[:-1]).size == 0
    with pytest.raises(CIDError):
        BlobId.from_bytes(zero + b"\0")
    m = MemoryClient()
    cid = m.upload(data)
    bad = "b" + base64.b32encode(BlobId.parse(cid).to_bytes() + b"\0").decode().rstrip("=").lower()
    with pytest.raises(CIDError):
        m.download(bad)


# ---------------------------------------------------------------- worker protocol: size and depth
def test_request_limits():
    with pytest.raises(InvalidArgumentError, match="too large"):
        limits.check_request({"vector": "x" * (limits.MAX_REQUEST_BYTES + 10)})
    with pytest.raises(InvalidArgumentError, match="too large"):
        limits.check_request({"vector": memoryview(bytearray(limits.MAX_REQUEST_BYTES + 10))})
    deep: dict = {}
    for _ in range(10_000):
        deep = {"a": deep}
    reply = json.loads(asyncio.run(rpc.handle("search", {"handle": 1, "params": deep})))
    assert reply == {"ok": False, "error": {"name": "InvalidArgumentError",
                                             "message": reply["error"]["message"]}}
    assert "nested too deeply" in reply["error"]["message"]
    big = json.loads(asyncio.run(rpc.handle("search", {"handle": 1, "vector": [0.0] * (9 * 2**20)})))
    assert big["error"]["name"] == "InvalidArgumentError" and "too large" in big["error"]["message"]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "10", True, 10**9])
def test_rpc_open_timeout_is_checked(bad):
    reply = json.loads(asyncio.run(rpc.handle("open", {"manifest": blob_cid(b"m"), "portals": ["http://x"],
                                                        "timeoutMs": bad})))
    assert reply["ok"] is False and reply["error"]["name"] == "InvalidArgumentError"


# ---------------------------------------------------------------- failure 7: the CLI
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "pkg"))


def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "s5vec", *args], capture_output=True, env=ENV,
                          input=stdin, timeout=120)


def _one_line(p) -> str:
    err = p.stderr.decode()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_cli_non_utf8_records_file_is_one_line_exit_2(tmp_path):
    f = tmp_path / "recs.jsonl"
    f.write_bytes(b'{"id": "a", "vector": [1, 2]}\n{"id": "b\xff", "vector": [1, 2]}\n')
    p = cli("publish", str(f), "--portal", "http://127.0.0.1:9")
    assert p.returncode == 2
    assert "recs.jsonl:2: not UTF-8 (byte 0xff at column 10)" in _one_line(p)
    p = cli("publish", "-", "--portal", "http://127.0.0.1:9", stdin=b"\xff\xfe\n")
    assert p.returncode == 2 and "not UTF-8" in _one_line(p)


def test_cli_deep_json_and_deep_filter_are_one_line(tmp_path):
    f = tmp_path / "deep.jsonl"
    f.write_text('{"id": "a", "vector": [1], "metadata": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}\n")
    p = cli("publish", str(f), "--portal", "http://127.0.0.1:9")
    assert p.returncode == 2 and "nested too deeply" in _one_line(p)
    q = tmp_path / "q.jsonl"
    q.write_text("[1, 2]\n")
    p = cli("search", blob_cid(b"m"), "--portal", "http://127.0.0.1:9", "--queries", str(q),
            "--filter", '{"$and": [' * 900 + '{"g": 1}' + "]}" * 900)
    assert p.returncode == 1 and "FilterError" in _one_line(p)


def test_cli_timeout_and_token_options(tmp_path):
    p = cli("search", blob_cid(b"m"), "--portal", "http://127.0.0.1:9", "--queries", "-", "--timeout", "0")
    assert p.returncode == 2 and b"--timeout" in p.stderr
    from s5vec.cli import build_parser

    a = build_parser().parse_args(["publish", "f", "--portal", "http://p", "--auth-token", "T", "--timeout", "2.5"])
    assert (a.auth_token, a.timeout) == ("T", 2.5)
    os.environ["S5VEC_AUTH_TOKEN"] = "from-env"
    try:
        a = build_parser().parse_args(["migrate", "c", "--portal", "http://p"])
    finally:
        del os.environ["S5VEC_AUTH_TOKEN"]
    assert a.auth_token == "from-env"
