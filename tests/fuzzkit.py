"""Hypothesis strategies and oracles shared by tests/test_fuzz.py (bounded, CI) and
bench/bench_fuzz.py (long runs that print counts).

The oracle is always the same: an input either works or raises one of the typed errors of
``s5vec.errors`` -- never another exception, never RecursionError, never a hang.
"""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

from s5vec import api, errors, layout, rpc
from s5vec.s5.cid import BlobId
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

TYPED = tuple(
    c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.S5VecError))
TYPED_NAMES = frozenset(c.__name__ for c in TYPED)
HANG_SECONDS = 10.0


class Hang(AssertionError):
    pass


def run_bounded(fn: Callable[[], Any], seconds: float = HANG_SECONDS) -> Any:
    """Run ``fn`` on a daemon thread; a call that does not return in ``seconds`` is a hang."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["e"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise Hang(f"no answer within {seconds} s")
    if "e" in box:
        raise box["e"]
    return box.get("v")


# ---------------------------------------------------------------- JSON-like values
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
json_keys = st.one_of(st.sampled_from(["$and", "$or", "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte",
                                       "$not", "$exists", "g", "year", "tags", "_timestamp", "x"]),
                      st.text(max_size=6))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(json_keys, inner, max_size=4)),
    max_leaves=25,
)


def deep(depth: int, leaf: Any = 1, key: str = "$and", as_list: bool = True) -> Any:
    v = leaf
    for _ in range(depth):
        v = {key: [v]} if as_list else {key: v}
    return v


filters_docs = st.one_of(
    json_values,
    st.dictionaries(json_keys, json_values, max_size=5),
    st.integers(0, 3000).map(lambda d: deep(d, {"g": 1})),
    st.integers(0, 200).map(lambda n: {"$or": [{"g": i} for i in range(n)]}),
)

records_values = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=8), st.integers(), st.none(), st.just("x" * 600))},
    optional={
        "vector": st.one_of(st.lists(st.floats(width=32), min_size=0, max_size=6), st.text(max_size=3),
                            st.none(), st.integers()),
        "metadata": st.one_of(json_values, st.integers(0, 40).map(lambda d: deep(d, 1, "a", False))),
        "timestamp": scalars,
    },
)


# ---------------------------------------------------------------- CIDs
def cid_strings() -> st.SearchStrategy[str]:
    raw = st.builds(
        lambda h, size, extra: BlobId(h, size).to_bytes() + extra,
        st.binary(min_size=32, max_size=32), st.integers(0, 2**64 - 1), st.binary(max_size=2))
    enc = st.sampled_from(["b", "z", "u", "f", "B", "F", "x"])
    mutated = st.builds(lambda r, e: _encode(r, e), st.one_of(raw, st.binary(max_size=50)), enc)
    return st.one_of(mutated, st.text(max_size=90), st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", max_size=80)
                     .map(lambda s: "b" + s))


def _encode(raw: bytes, prefix: str) -> str:
    import base64

    from s5vec.s5.cid import _b58encode

    if prefix in "bB":
        s = base64.b32encode(raw).decode().rstrip("=")
        return prefix + (s.lower() if prefix == "b" else s)
    if prefix == "z":
        return "z" + _b58encode(raw)
    if prefix == "u":
        return "u" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    if prefix in "fF":
        return prefix + (raw.hex() if prefix == "f" else raw.hex().upper())
    return prefix + raw.hex()


# ---------------------------------------------------------------- chunks and manifests
def sample_index_blobs(kinds=("flat", "hnsw", "ivf", "hybrid"), n=120, dim=8) -> tuple[dict[str, bytes], dict[str, str]]:
    """Real chunks and manifests of small indexes of every kind: (cid -> bytes, kind -> manifest cid)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    recs = [{"id": f"r{i}", "vector": x[i].tolist(), "metadata": {"g": i % 3, "t": ["a", "b"][i % 2]},
             "timestamp": 1.7e9 - i * 3600.0 * 24} for i in range(n)]
    client = MemoryClient()
    store = ChunkStore(client)
    params = {"flat": {"chunk_rows": 50}, "hnsw": {}, "ivf": {"nlist": 4}, "hybrid": {"nlist": 4}}
    manifests = {k: api.publish(recs, store, kind=k, params=params.get(k)) for k in kinds}
    return dict(client.blobs), manifests


def mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Byte-level mutations of a valid blob: flips, truncation, insertion, deletion, splicing."""
    n = len(data)

    def flip(i: int, b: int) -> bytes:
        i %= max(n, 1)
        return data[:i] + bytes([data[i] ^ (b or 1)]) + data[i + 1:] if n else bytes([b])

    return st.one_of(
        st.builds(flip, st.integers(0, max(n - 1, 0)), st.integers(0, 255)),
        st.integers(0, n).map(lambda k: data[:k]),
        st.builds(lambda i, b: data[:i] + b + data[i:], st.integers(0, n), st.binary(min_size=1, max_size=9)),
        st.builds(lambda i, k: data[:i] + data[i + k:], st.integers(0, n), st.integers(1, 16)),
        st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(1, 255)), min_size=2, max_size=8)
        .map(lambda fl: _flips(data, fl)),
    )


def _flips(data: bytes, fl) -> bytes:
    b = bytearray(data)
    for i, x in fl:
        if b:
            b[i % len(b)] ^= x
    return bytes(b)


def decode_any(data: bytes) -> str:
    """Decode ``data`` as a manifest and as a chunk: 'ok' if either accepts it, else the typed
    error's name (anything else raises)."""
    names = []
    for fn in (layout.decode_manifest, layout.decode_chunk):
        try:
            fn(data)
        except errors.S5VecError as e:
            names.append(e.name)
    return "ok" if len(names) < 2 else names[-1]


def open_with_mutated(blobs: dict[str, bytes], manifest: str, target: str, bad: bytes, query: np.ndarray) -> str:
    """Open the index ``manifest`` with blob ``target`` replaced by ``bad`` (re-addressed, so it passes
    the hash check and reaches the decoder and the index loader), then search."""
    client = MemoryClient(blobs)
    new_cid = client.upload(bad)
    if target == manifest:
        root = new_cid
    else:
        doc = layout.loads(blobs[manifest])
        for c in doc["chunks"]:
            if c["cid"] == target:
                c["cid"], c["size"] = new_cid, len(bad)
        _replace_refs(doc["index"], target, new_cid)
        root = client.upload(layout.dumps(doc))
    store = ChunkStore(client)
    try:
        db = api.Database.open(root, store=store)
        db.search(query, 5)
        db.search(query, 5, {"g": 1})
    except errors.S5VecError as e:
        return e.name
    return "ok"


def _replace_refs(obj: Any, old: str, new: str) -> None:
    stack = [obj]
    while stack:
        o = stack.pop()
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in list(items):
            if v == old:
                o[k] = new
            elif isinstance(v, (dict, list)):
                stack.append(v)


# ---------------------------------------------------------------- worker protocol
OPS = ["version", "open", "search", "close", "stats", "upsert", "delete", "commit", "nope", "", None, 3]


def rpc_requests(handles: list[int], manifests: list[str], portals: list[str]) -> st.SearchStrategy:
    """(op, args) pairs: random, plus well-formed ones with one field gone wrong."""
    vector = st.one_of(st.lists(st.floats(width=32), max_size=10), st.text(max_size=4), st.none(),
                       st.integers(), st.binary(max_size=40).map(memoryview),
                       st.just([0.5] * 8), st.lists(st.floats(-1, 1, width=32), min_size=8, max_size=8))
    args = st.fixed_dictionaries({}, optional={
        "handle": st.one_of(st.sampled_from(handles), st.integers(-3, 10**12), st.text(max_size=3), st.none()),
        "manifest": st.one_of(st.sampled_from(manifests), cid_strings(), st.integers()),
        "portals": st.one_of(st.just(portals), st.lists(st.sampled_from(portals + ["ftp://x", "", "http://"]),
                                                        max_size=3), st.text(max_size=5), st.none()),
        "vector": vector,
        "k": st.one_of(st.integers(-5, 10**12), st.floats(), st.text(max_size=3), st.none(), st.booleans()),
        "filter": filters_docs,
        "params": st.one_of(st.dictionaries(st.sampled_from(["ef", "nprobe", "rerank", "x", "k"]), scalars,
                                            max_size=3), json_values),
        "cacheBytes": st.one_of(st.integers(-1, 2**40), st.floats(), st.text(max_size=3)),
        "timeoutMs": st.one_of(st.integers(-10, 3000), st.floats(allow_nan=True), st.text(max_size=3)),
    })
    good_vec = st.lists(st.floats(-2, 2, width=32), min_size=8, max_size=8)
    search = st.fixed_dictionaries(
        {"handle": st.sampled_from(handles), "vector": st.one_of(good_vec, vector)},
        optional={"k": st.one_of(st.integers(1, 20), st.integers(-5, 10**6)),
                  "filter": filters_docs,
                  "params": st.dictionaries(st.sampled_from(["ef", "nprobe", "rerank", "x"]),
                                            st.one_of(st.integers(-3, 10**6), st.floats(), st.booleans()),
                                            max_size=2)})
    opens = st.fixed_dictionaries(
        {"manifest": st.one_of(st.sampled_from(manifests), cid_strings()),
         "portals": st.lists(st.sampled_from(portals), min_size=1, max_size=3)},
        optional={"timeoutMs": st.one_of(st.integers(-10, 1500), st.floats(allow_nan=True)),
                  "cacheBytes": st.one_of(st.integers(-1, 2**30), st.floats())})
    return st.one_of(
        st.tuples(st.sampled_from(OPS), st.one_of(args, json_values, st.none())),
        st.tuples(st.just("search"), search),
        st.tuples(st.just("open"), opens),
        st.tuples(st.sampled_from(["stats", "close"]), st.fixed_dictionaries({"handle": st.sampled_from(handles)})),
    )


def rpc_call(op: Any, args: Any) -> dict:
    """One worker-protocol request on CPython: the reply, parsed (it must be JSON with a known name)."""
    reply = run_bounded(lambda: asyncio.run(rpc.handle(op, args)))
    assert isinstance(reply, str), type(reply)
    msg = json.loads(reply)
    assert isinstance(msg, dict) and isinstance(msg.get("ok"), bool), msg
    if not msg["ok"]:
        assert msg["error"]["name"] in TYPED_NAMES, msg["error"]
    return msg


def finite_json(value: Any) -> bool:
    """True if json.dumps(value) needs no NaN/Infinity."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True

