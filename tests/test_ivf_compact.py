"""IVF list chunks with compact columns (uint16 offsets, timestamps as base + deltas): exact round
trips, old chunks (uint32 offsets, float64 timestamps) read unchanged, and the byte model of
``ivf_tune`` against what a published index really weighs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kit
from s5vec import api, layout
from s5vec.errors import FormatError
from s5vec.index import ivf_tune
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

FIXTURE = Path(__file__).parent / "fixtures" / "ivf_format_before_compact.cbor"


def _fixture_records():
    """The records tests/fixtures/ivf_format_before_compact.cbor was published from (by the writer
    before compact columns, commit 93cabf8): integer-second and fractional timestamps, empty and
    non-empty metadata."""
    rng = np.random.default_rng(7)
    n, dim = 600, 16
    x = rng.standard_normal((n, dim)).astype(np.float32)
    recs = []
    for i in range(n):
        ts = 1.6e9 + 86400 * i if i % 3 else 1.6e9 + 0.25 * i
        recs.append({"id": f"rec-{i}", "vector": x[i].tolist(),
                     "metadata": ({"i": i, "tag": ["a", "b"][i % 2]} if i % 5 else {}), "timestamp": ts})
    return recs, x


@pytest.mark.parametrize("ts", [
    np.full(300, 1764000000.123),                      # one stamp for all: 1 byte a record
    1.6e9 + np.arange(300, dtype=np.float64) * 7,      # whole seconds, small range: 2 bytes
    1.0e9 + np.arange(300, dtype=np.float64) * 86400,  # whole seconds over ~300 days: 4 bytes
    1.6e9 + np.arange(300) * 0.25,                     # fractions: float64 as before
    np.array([1.6e9, np.nan, 1.7e9]),                  # NaN (old chunks): float64 as before
    -86400.0 * np.arange(50, dtype=np.float64),        # before 1970
    np.array([0.0, 2.0 ** 33]),                        # range beyond uint32: float64
    np.empty(0),
])
def test_timestamps_pack_exactly(ts):
    packed = layout.pack_timestamps(ts)
    back = layout.unpack_timestamps(layout.loads(layout.dumps({"t": packed}))["t"], len(ts))
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, ts)  # NaN == NaN here: bit-exact round trip
    if len(ts) > 2 and np.isfinite(ts).all() and np.array_equal(np.floor(ts - ts.min()), ts - ts.min()) \
            and ts.max() - ts.min() < 2 ** 32:
        assert isinstance(packed, dict) and packed["dt"].dtype.itemsize < 8


def test_compact_columns_are_smaller_and_bad_ones_are_refused():
    ids = [str(i) for i in range(2_000_000, 2_000_400)]
    body = {"lists": [{"list": 3, "ids": ids, "metadata": [{}] * 400, "timestamps": np.full(400, 1.7e9),
                       "codes": np.zeros((400, 48), np.uint8)}]}
    new = layout.encode_chunk("ivf_list", body)
    old = layout.dumps({"format": "s5vec", "version": 2, "chunk": "ivf_list", "body": {"lists": [{
        "list": 3, "ids": {"text": "".join(ids), "offsets": np.arange(401, dtype=np.uint32) * 7},
        "metadata": {"cbor": b"\xa0" * 400, "offsets": np.arange(401, dtype=np.uint32)},
        "timestamps": np.full(400, 1.7e9), "codes": np.zeros((400, 48), np.uint8)}]}})
    assert len(old) - len(new) >= 400 * 11 - 16  # 7 bytes of timestamp + 2 + 2 of offsets a record (- the t0/dt keys)
    for data in (new, old):
        got = layout.decode_chunk(data, "ivf_list")["lists"][0]
        assert list(got["ids"]) == ids and list(got["metadata"]) == [{}] * 400
        np.testing.assert_array_equal(got["timestamps"], np.full(400, 1.7e9))
    bad = layout.dumps({"format": "s5vec", "version": 2, "chunk": "ivf_list", "body": {"lists": [{
        "list": 0, "ids": ["a"], "metadata": [{}], "timestamps": {"t0": 1.0, "dt": np.zeros(1, np.float32)}}]}})
    with pytest.raises(FormatError):
        layout.decode_chunk(bad, "ivf_list")


def test_indexes_written_before_compact_columns_read_unchanged():
    """Blobs published by the writer before this format change (a committed fixture) open with
    today's reader: every record's metadata and timestamp, and the same hits as the same records
    published today (whose list chunks are smaller)."""
    fx = layout.loads(FIXTURE.read_bytes())
    recs, x = _fixture_records()
    for name, cid in fx["manifests"].items():
        old_db = api.Database.open(cid, store=ChunkStore(MemoryClient(fx["blobs"])))
        man = old_db.manifest
        params = man["index"]["params"]
        store = ChunkStore(MemoryClient())
        new_cid = api.publish(recs, store, kind="ivf", params={k: params[k] for k in (
            "nlist", "nprobe", "codec", "pq_m", "refine", "refine_m", "refine_rows", "rerank") if params.get(k) is not None})
        new_db = api.Database.open(new_cid, store=ChunkStore(store.client))
        for r in recs[::7]:
            got = old_db.get(r["id"])
            assert got["metadata"] == r["metadata"] and got["timestamp"] == r["timestamp"], (name, r["id"])
            assert new_db.get(r["id"]) == got
        for q in kit.queries_near(x, 10, seed=3):
            kit.assert_same_hits(new_db.search(q, 10), old_db.search(q, 10))
        old_lists = sum(c["size"] for c in man["chunks"] if c["kind"] == "ivf_list")
        new_lists = sum(c["size"] for c in new_db.manifest["chunks"] if c["kind"] == "ivf_list")
        assert new_lists < old_lists, (name, new_lists, old_lists)
