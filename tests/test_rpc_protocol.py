"""s5vec.rpc serves exactly the ops of protocol.json, checks only the shape of a request, and
answers a call on a closed handle with ClosedError (CPython; the browser side is e2e/test_protocol.py)."""
import asyncio
import json
from importlib import resources

import pytest

from s5vec import api, rpc
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

from kit import clustered


def call(op, args=None):
    return json.loads(asyncio.run(rpc.handle(op, args)))


def test_rpc_serves_exactly_the_table_in_protocol_json():
    table = json.loads(resources.files("s5vec").joinpath("protocol.json").read_text("utf-8"))
    assert set(rpc.OPS) == set(table["ops"]) >= {"version", "open", "search", "stats", "close"}
    assert set(call("version")["result"]["ops"]) == set(table["ops"])
    for bad in ("nope", 3, None, "Search"):
        out = call(bad, {})
        assert out["error"]["name"] == "InvalidArgumentError", out
        assert all(name in out["error"]["message"] for name in table["ops"]), out


def test_an_op_outside_the_table_cannot_be_registered():
    with pytest.raises(RuntimeError, match="not in protocol.json"):
        rpc.op("notInTheTable")


@pytest.fixture
def opened(monkeypatch):
    x = clustered(200, 8, seed=3)
    store = ChunkStore(MemoryClient())
    cid = api.publish([{"id": f"r{i}", "vector": x[i]} for i in range(200)], store, kind="flat")
    monkeypatch.setattr(api, "make_store", lambda portals, **kw: store)
    monkeypatch.setattr(rpc, "_stores", {})  # rpc shares one store per portal list for a worker's session
    out = call("open", {"manifest": cid, "portals": ["http://unused"]})
    assert out["ok"], out
    return out["result"]["handle"], x


def test_request_shape_is_checked(opened):
    h, x = opened
    for args in ({"handle": "1", "vector": x[0].tolist()}, {"handle": True, "vector": x[0].tolist()},
                 {"vector": x[0].tolist()}, {"handle": h}, [h]):
        assert call("search", args)["error"]["name"] == "InvalidArgumentError", args
    assert call("open", {"manifest": 5, "portals": []})["error"]["name"] == "InvalidArgumentError"


def test_closed_handle_gets_closed_error(opened):
    h, x = opened
    assert call("search", {"handle": h, "vector": x[0].tolist(), "k": 2})["ok"]
    assert call("close", {"handle": h}) == {"ok": True, "result": {}}
    assert call("close", {"handle": h}) == {"ok": True, "result": {}}  # idempotent
    for op, args in [("search", {"handle": h, "vector": x[0].tolist()}), ("stats", {"handle": h})]:
        out = call(op, args)
        assert out["error"] == {"name": "ClosedError", "message": f"database {h} is closed"}, out
    assert h not in rpc._dbs  # released, only the tombstone is left
    assert call("stats", {"handle": 10**9})["error"]["name"] == "InvalidArgumentError"  # never opened
