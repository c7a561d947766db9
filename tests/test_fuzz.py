"""Fuzzing with Hypothesis: chunks and manifests (random and mutated valid ones, through the decoder
and the index loaders), filters, records, CIDs and worker-protocol requests.

The oracle: every input works or raises a typed ``s5vec.errors`` error, nothing hangs. Example
counts are bounded for CI (300 per test by default; the whole file runs in under a minute);
``bench/bench_fuzz.py`` runs the same strategies for a long time and prints counts.
"""
from __future__ import annotations

import asyncio
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzkit as fk
from s5vec import api, errors, filters, layout, rpc
from s5vec.s5.cid import BlobId
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

# Bounded for CI (a few hundred examples per test, derandomized so CI is repeatable); set
# S5VEC_FUZZ_EXAMPLES for a longer local run. Applied per test, so no global Hypothesis profile changes.
N = int(os.environ.get("S5VEC_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=N, deadline=None, derandomize="S5VEC_FUZZ_EXAMPLES" not in os.environ,
                database=None, suppress_health_check=list(HealthCheck))

BLOBS, MANIFESTS = fk.sample_index_blobs()
VALID = sorted(BLOBS)  # every real chunk and manifest of four small indexes
QUERY = np.random.default_rng(1).standard_normal(8).astype(np.float32)


# ---------------------------------------------------------------- chunks and manifests
@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_decode_typed(data):
    fk.run_bounded(lambda: fk.decode_any(data))


@FUZZ
@given(st.sampled_from(VALID).flatmap(lambda c: fk.mutations(BLOBS[c])))
def test_mutated_chunks_decode_typed(data):
    fk.run_bounded(lambda: fk.decode_any(data))


@settings(FUZZ, max_examples=max(1, N // 2))
@given(st.sampled_from(sorted(MANIFESTS.values())).flatmap(
    lambda m: st.tuples(st.just(m), st.sampled_from([m] + [c["cid"] for c in layout.decode_manifest(BLOBS[m])["chunks"]]))
).flatmap(lambda mt: st.tuples(st.just(mt[0]), st.just(mt[1]), fk.mutations(BLOBS[mt[1]]))))
def test_mutated_blobs_through_open_and_search(case):
    manifest, target, bad = case
    fk.run_bounded(lambda: fk.open_with_mutated(BLOBS, manifest, target, bad, QUERY))


# ---------------------------------------------------------------- filters
RECORDS = [{"g": 1, "year": 2021, "tags": ["a", "b"], "x": None, "_timestamp": 1.7e9},
           {"g": "1", "year": 2020.5, "tags": [], "x": True}, {}, {"g": [1, 2, {"z": 1}], "year": "2021"}]
SUMMARY = filters.summarize([{k: v for k, v in r.items() if k != "_timestamp"} for r in RECORDS])


@FUZZ
@given(fk.filters_docs)
def test_filters_parse_or_filter_error(doc):
    def go():
        try:
            f = filters.parse(doc)
        except errors.FilterError:
            return
        if f is not None:
            for r in RECORDS:
                assert isinstance(f.matches(r), bool)
            assert 0 <= f.bound(SUMMARY) <= SUMMARY["n"]
            f.estimate(SUMMARY)
            f.key()
    fk.run_bounded(go)


@FUZZ
@given(st.text(max_size=60))
def test_filter_text_parse_or_filter_error(text):
    try:
        filters.parse(text)
    except errors.FilterError:
        pass


# ---------------------------------------------------------------- records
@FUZZ
@given(st.lists(fk.records_values, min_size=0, max_size=4), st.sampled_from(["flat", "hnsw", "ivf", "hybrid"]))
def test_records_publish_or_typed_error(recs, kind):
    def go():
        store = ChunkStore(MemoryClient())
        try:
            cid = api.publish(recs, store, kind=kind, params={"nlist": 1} if kind in ("ivf", "hybrid") else None)
        except errors.S5VecError:
            assert store.stats()["chunks_uploaded"] == 0  # nothing half-written
            return
        db = api.Database.open(cid, store=store)
        hits = db.search(np.ones(db.index.dim, np.float32), 3)
        assert fk.finite_json(hits)  # a published record always reaches the browser as valid JSON
    fk.run_bounded(go)


# ---------------------------------------------------------------- CIDs
@FUZZ
@given(fk.cid_strings())
def test_cids_parse_canonically_or_cid_error(s):
    try:
        bid = BlobId.parse(s)
    except errors.CIDError:
        return
    for base in ("base32", "base58", "base64url", "base16"):
        assert BlobId.parse(bid.to_string(base)) == bid
    # one blob, one string per multibase: whatever parses is exactly the canonical spelling
    if not _is_legacy(s):
        base = {"b": "base32", "B": "base32", "z": "base58", "u": "base64url", "f": "base16", "F": "base16"}[s[0]]
        canonical = bid.to_string(base)
        assert s == (canonical.upper() if s[0] in "BF" else canonical), (s, canonical)


def _is_legacy(s: str) -> bool:
    from s5vec.s5.cid import LEGACY_CID_TYPE_RAW, _multibase_decode

    try:
        return _multibase_decode(s)[0] == LEGACY_CID_TYPE_RAW
    except errors.CIDError:
        return False


# ---------------------------------------------------------------- worker protocol
@pytest.fixture(scope="module")
def rpc_world():
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from blobserver import BlobServer, MirrorClient

    with BlobServer() as good:
        x = np.random.default_rng(2).standard_normal((200, 8)).astype(np.float32)
        recs = [{"id": f"r{i}", "vector": x[i].tolist(), "metadata": {"g": i % 3}} for i in range(200)]
        cids = [api.publish(recs, ChunkStore(MirrorClient(good)), kind=k, params=p)
                for k, p in (("flat", None), ("ivf", {"nlist": 4}), ("hnsw", None))]
        with BlobServer(mode="hang") as hanging:
            handles = []
            for c in cids:
                msg = fk.rpc_call("open", {"manifest": c, "portals": [good.url], "timeoutMs": 2000})
                assert msg["ok"], msg
                handles.append(msg["result"]["handle"])
            closed = f"http://127.0.0.1:{_closed_port()}"
            yield {"handles": handles, "manifests": cids, "portals": [good.url, closed, hanging.url]}
            for h in handles:
                fk.rpc_call("close", {"handle": h})


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_protocol_requests(rpc_world):
    names: dict[str, int] = {}

    @settings(FUZZ, max_examples=N + N // 3)
    @given(fk.rpc_requests(rpc_world["handles"], rpc_world["manifests"], rpc_world["portals"]))
    def one(req):
        op, args = req
        if op == "close":  # keep the shared handles open
            args = {"handle": -1}
        if isinstance(args, dict):  # a hanging portal may be asked: keep its deadline under the hang bound
            t = args.get("timeoutMs")
            if t is None:
                args["timeoutMs"] = 1500
            elif isinstance(t, (int, float)):
                args["timeoutMs"] = min(t, 1500)
        msg = fk.rpc_call(op, args)
        key = "ok" if msg["ok"] else msg["error"]["name"]
        names[key] = names.get(key, 0) + 1

    one()
    print(f"\nworker protocol outcomes: {dict(sorted(names.items()))}")
    assert "InternalError" not in names


def test_rpc_reply_is_always_json_with_a_known_name():
    for op, args in [("search", {"handle": "x"}), (None, None), ("open", []), ("open", {"manifest": 1}),
                     ("search", {"vector": float("nan")})]:
        msg = json.loads(asyncio.run(rpc.handle(op, args)))
        assert msg["ok"] is False and msg["error"]["name"] in fk.TYPED_NAMES
