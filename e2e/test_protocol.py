"""The bridge, the worker and s5vec.rpc use one op table (protocol.json), through the real bridge.

* The table the page imports (web/dist/protocol.js <- protocol.json), the ops the worker's rpc
  reports at start-up and pkg/s5vec/protocol.json are the same set.
* Every op the bridge sends, exercising each public method, is in the table and accepted by
  the worker; with ``version`` (sent by the worker itself at start-up) they cover the table.
  Adding an op to the table without a bridge method that this test exercises fails here.
* An op outside the table, or args that are not an object, get InvalidArgumentError naming
  the accepted ops, and the worker keeps serving.
* Calls on a database whose worker died reject without posting to it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .test_search import published  # noqa: F401  (module fixture: a flat index on both portals)

TABLE = json.loads((Path(__file__).resolve().parents[1] / "pkg" / "s5vec" / "protocol.json").read_text())

# Records the op of every CALL the bridge posts; window.rewriteNext(fn) edits the next CALL message.
SPY = """
if (!window.sentOps) {
  window.sentOps = [];
  window.rewriteNext = null;
  const post = Worker.prototype.postMessage;
  Worker.prototype.postMessage = function (msg, transfer) {
    if (msg && msg.type === "call") {
      if (window.rewriteNext) { msg = window.rewriteNext(msg); window.rewriteNext = null; }
      window.sentOps.push(msg.op);
    }
    return post.call(this, msg, transfer);
  };
}
window.sentOps.length = 0;
"""


def test_bridge_worker_and_rpc_share_one_op_table(shared_harness, published):  # noqa: F811
    b = shared_harness
    page_ops = b.js("const { OPS } = await import('./protocol.js'); return Object.values(OPS);")
    worker_ops = b.js("return (await S5Vec.runtime()).ops;")
    assert set(page_ops) == set(worker_ops) == set(TABLE["ops"])

    b.js(SPY)
    q = [float(x) for x in published["records"][0]["vector"]]
    sent = b.js(
        """const db = await S5Vec.open({ manifest: arg.cid, portals: arg.urls });
           const hits = await db.search(arg.q, { k: 3 });
           const batch = await db.searchBatch([arg.q, arg.q], { k: 3 });
           if (batch.length !== 2 || batch[1][0].id !== hits[0].id) throw new Error("unexpected batch answer");
           const stats = await db.stats();
           const got = await db.get("doc00000");
           // this index has no text field: searchText is answered (InvalidArgumentError), so the op was sent
           const text = await db.searchText("anything").catch((e) => e.name);
           if (got.id !== "doc00000" || text !== "InvalidArgumentError") throw new Error("unexpected text answers");
           // the write and offline ops, each refused by Python before it changes anything
           const refused = async (p, name) => { try { await p; } catch (e) { if (e.name === name) return; throw e; }
                                                throw new Error("expected " + name); };
           await refused(db.upsert([{ id: "x", vector: [1] }]), "DimensionError");
           await refused(db.delete(["no-such-id"]), "UnknownIdError");
           await refused(db.commit(), "NothingToCommitError");
           await refused(db.pin(), "OfflineUnavailableError");   // chunks op answered; no service worker here
           await db.close();
           if (hits[0].id !== "doc00000" || typeof stats !== "object") throw new Error("unexpected answer");
           return window.sentOps.slice();""",
        {"cid": published["cid"], "urls": published["urls"], "q": q},
    )
    assert set(sent) <= set(TABLE["ops"]), sent
    assert set(sent) | {"version"} == set(TABLE["ops"]), ("an op in protocol.json that no bridge method sends", sent)


@pytest.mark.parametrize("rewrite", ["msg.op = 'nope'", "msg.op = 42", "msg.args = 'not an object'"])
def test_request_outside_the_table_gets_invalid_argument(shared_harness, published, rewrite):  # noqa: F811
    b = shared_harness
    b.js(SPY)
    key = b.open(published["cid"], published["urls"])
    res = b.run("window.rewriteNext = (msg) => { %s; return msg; }; return await window.dbs[arg].stats();" % rewrite, key)
    assert not res["ok"] and res["isS5VecError"] and res["name"] == "InvalidArgumentError", res
    if "op" in rewrite:
        assert all(op in res["message"] for op in TABLE["ops"]), res["message"]
    q = published["records"][7]["vector"]
    after = b.search(key, q, k=3)  # the worker keeps serving
    assert after["ok"] and after["value"]["hits"][0]["id"] == "doc00007", after


def test_calls_on_a_dead_worker_reject_without_posting(harness, published):  # noqa: F811
    b = harness
    key = b.open(published["cid"], published["urls"])
    b.js(SPY)
    res = b.run(
        """const db = window.dbs[arg];
           db._runtime.fail(new window.S5VecError("WorkerError", "worker killed by the test"));
           try { await db.search([1, 2, 3]); } catch (e) { window.searchError = e.name + ": " + e.message; }
           await db.close();  // nothing to release: resolves
           if (window.sentOps.length) throw new Error("posted to a dead worker: " + window.sentOps);
           return window.searchError;""",
        key,
    )
    assert res == {"ok": True, "value": "WorkerError: worker killed by the test"}, res
    # the next open starts a fresh worker
    key2 = b.open(published["cid"], published["urls"])
    q = published["records"][5]["vector"]
    after = b.search(key2, q, k=3)
    assert after["ok"] and after["value"]["hits"][0]["id"] == "doc00005", after
