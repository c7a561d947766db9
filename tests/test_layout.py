import cbor2
import numpy as np
import pytest

from s5vec import layout
from s5vec.errors import FormatError


def test_typed_arrays_round_trip_and_are_rfc8746():
    body = {"v": np.arange(12, dtype=np.float32).reshape(3, 4), "c": np.arange(5, dtype=np.uint8),
            "i": np.array([-1, 7], np.int32), "ids": ["a", "b"], "n": np.int64(3), "f": np.float32(0.5)}
    data = layout.encode_chunk("test", body)
    # readable by any CBOR decoder: tag 40 holding [shape, tag 85 (float32 LE)]
    raw = cbor2.loads(data)["body"]
    assert raw["v"].tag == 40 and raw["v"].value[0] == [3, 4] and raw["v"].value[1].tag == 85
    assert raw["c"].tag == 64 and raw["i"].tag == 78
    out = layout.decode_chunk(data, "test")
    np.testing.assert_array_equal(out["v"], body["v"])
    assert out["v"].dtype == np.float32 and out["c"].dtype == np.uint8
    assert out["n"] == 3 and out["f"] == 0.5 and out["ids"] == ["a", "b"]


def test_encoding_is_deterministic():
    a = layout.encode_chunk("x", {"b": 1, "a": np.ones(3, np.float32)})
    b = layout.encode_chunk("x", {"a": np.ones(3, np.float32), "b": 1})
    assert a == b


def test_malformed_and_truncated_raise_format_error():
    data = layout.encode_chunk("x", {"a": np.ones(30, np.float32)})
    for bad in (data[: len(data) // 2], b"", b"\xff\xff\xff", b"\x9f\x01", cbor2.dumps({"format": "other"})):
        with pytest.raises(FormatError):
            layout.decode_chunk(bad)
    with pytest.raises(FormatError):
        layout.decode_chunk(data, "y")  # wrong chunk kind
    bad_typed = cbor2.dumps({"format": "s5vec", "version": 1, "chunk": "x", "body": {"a": cbor2.CBORTag(85, b"abc")}})
    with pytest.raises(FormatError):
        layout.decode_chunk(bad_typed)


def test_manifest_round_trip_and_version_check():
    data = layout.encode_manifest(kind="flat", dim=4, metric="cosine", count=2, index={"rows": ["x"]},
                                  chunks=[{"cid": "x", "kind": "flat_rows", "size": 10}], parent=None)
    doc = layout.decode_manifest(data)
    assert doc["kind"] == "flat" and doc["dim"] == 4 and doc["parent"] is None
    future = cbor2.loads(data)
    future["version"] = 99
    with pytest.raises(FormatError, match="version"):
        layout.decode_manifest(cbor2.dumps(future))
    with pytest.raises(FormatError):
        layout.decode_manifest(layout.encode_chunk("flat_rows", {}))


def test_packed_columns_round_trip_and_decode_lazily():
    ids = ["a", "", "ünï", "x" * 50]
    metas = [{"ch": "c1", "tags": ["p", "q"]}, {}, {"n": 3, "f": 0.5}, {"nested": {"k": [1, 2]}}]
    body = layout.decode_chunk(layout.encode_chunk("t", {"ids": layout.pack_strings(ids),
                                                         "meta": layout.pack_records(metas)}), "t")
    assert layout.unpack_strings(body["ids"], 4) == ids
    lazy = layout.unpack_records(body["meta"], 4)
    assert isinstance(lazy, layout.LazyRecords) and lazy._cache == {}
    assert lazy[2] == metas[2] and 0 not in lazy._cache  # only what was asked for is decoded
    assert list(lazy) == metas and lazy[1:3] == metas[1:3]
    # the old plain-list form still reads
    assert layout.unpack_strings(ids) == ids and list(layout.unpack_records(metas)) == metas


def test_packed_columns_reject_bad_offsets():
    bad = layout.pack_records([{"a": 1}, {"b": 2}])
    bad["offsets"] = np.array([0, 3, 99], np.uint32)
    with pytest.raises(FormatError):
        layout.unpack_records(bad)
    s = layout.pack_strings(["ab", "c"])
    s["offsets"] = np.array([0, 5], np.uint32)
    with pytest.raises(FormatError):
        layout.unpack_strings(s)
    with pytest.raises(FormatError):
        layout.unpack_strings(layout.pack_strings(["a"]), 2)
    junk = {"cbor": b"\xff\xfe", "offsets": np.array([0, 2], np.uint32)}
    with pytest.raises(FormatError):
        layout.unpack_records(junk)[0]


def test_list_chunk_ids_stay_packed_and_read_like_a_list():
    """A decoded ivf_list keeps its ids as one string + the offsets array (no str object per id
    until one is read): what the chunk cache holds costs about the chunk's bytes."""
    ids = ["a", "", "ünï", "x" * 50, "日本"]
    body = layout.decode_chunk(layout.encode_chunk("ivf_list", {"lists": [{
        "list": 0, "ids": ids, "metadata": [{}] * 5, "timestamps": np.zeros(5)}]}), "ivf_list")
    got = body["lists"][0]["ids"]
    assert isinstance(got, layout.LazyStrings) and len(got) == 5
    assert list(got) == ids and got[2] == "ünï" and got[-1] == "日本" and got[1:4] == ids[1:4]
    with pytest.raises(IndexError):
        got[5]
    for off in ([0, 2], [1, 2, 3, 4, 5, 56], [0, 1, 0, 4, 54, 56]):
        with pytest.raises(FormatError):
            layout.LazyStrings("a" * 56, np.array(off, np.uint32))


@pytest.mark.parametrize("entry", [{"cid": "x"}, {"kind": "flat_rows"}, {"cid": 1, "kind": "k"}, "x"])
def test_manifest_chunk_entries_need_cid_and_kind(entry):
    """Found by tests/test_fuzz.py: a chunk entry without a kind gave a KeyError from Database.open."""
    good = {"cid": "y", "kind": "flat_rows"}
    data = layout.encode_manifest(kind="flat", dim=4, metric="cosine", count=0, index={}, chunks=[good, entry])
    with pytest.raises(FormatError, match="chunk entry 1"):
        layout.decode_manifest(data)
