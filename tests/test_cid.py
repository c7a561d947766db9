"""S5 blob CIDs: known vectors from the reference clients, round trips, rejects."""
from __future__ import annotations

import base64

import blake3 as blake3_pkg
import pytest

from s5vec.errors import CIDError, IntegrityError
from s5vec.s5 import hashing
from s5vec.s5.cid import BlobId, blob_cid, hash_hex, normalize, verify

# --- vectors from julesl23/s5.js, test/blob_identifier.test.ts ("encoding") ---------
# hash given there *with* its multihash prefix 0x1e; size 5050
JS_HASH = bytes.fromhex("e40b877081c208036d451b898700b4bf938792ffa3e4426f2bf871aa057d992b")
JS_SIZE = 5050
JS_STRINGS = {
    "base16": "f5b821ee40b877081c208036d451b898700b4bf938792ffa3e4426f2bf871aa057d992bba13",
    "base32": "blobb5zalq5yidqqianwukg4jq4aljp4tq6jp7i7eijxsx6drvicx3gjlxijq",
    "base58": "z44t3p46N4Fmqc1STusbaEoZ2HeDCFNNFRGys8SJsDvV9kHyMUbt",
    "base64url": "uW4Ie5AuHcIHCCANtRRuJhwC0v5OHkv-j5EJvK_hxqgV9mSu6Ew",
}

# --- julesl23/s5.js, test/blob_identifier.test.ts ("blob sizes"): base32 of
# 0x5b 0x82 + 32 zero bytes + size bytes.  (That test passes a 32-byte zero "hash"
# without the 0x1e multihash byte, so these strings are not valid blob ids: we use
# them to check the size field encoding and the base32 codec bit for bit.)
JS_SIZE_PREFIX = "blobaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
JS_SIZE_CASES = {
    0: "aa",
    1: "ab",
    42: "bk",
    255: "h7",
    256: "aaae",
    65535: "h774",
    65536: "aaaaaq",
    57124823: "gxu5tqg",
}

# --- legacy S5 CID, from s5-dev/lib5, test/cid.dart: raw type 0x26, blake3 0x1f ----
LEGACY_B64 = "uJh9HlpMAkwc3YGnUflReWWPwj6Vtg3ihGyXFYNe_KvJbGl_fj1s"
LEGACY_B32 = "beypupfutacjqon3anhkh4vc6lfr7bd5fnwbxrii3excwbv57flzfwgs736hvw"
LEGACY_B58 = "z6e5mLE5CqXdaPxWaD1h4tCMibSH1adYGAyGrWn5xpNNf4CMVxDxW"
LEGACY_HASH = "479693009307376069d47e545e5963f08fa56d8378a11b25c560d7bf2af25b1a"
LEGACY_SIZE = 1536155487
# lib5 test/cid.dart: a *media metadata* CID -- not a blob, must be rejected
LEGACY_MEDIA = "z5TTp1umafoRLvi8VHEU6fXtUxkpjas2N5KPKhZyaLff9ZZ5"

# --- s5-dev/blobsum README.md: `blobsum LICENSE` output (parse-only vector) ------
BLOBSUM_LICENSE = "blobb5kykfixjikdxcpnx5dpo26pjjywwuz473hfdsmbxvsvcq5xgbcipmewa"


def _b32(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode().rstrip("=").lower()


@pytest.mark.parametrize("base", list(JS_STRINGS))
def test_s5js_vectors_encode(base):
    assert BlobId(JS_HASH, JS_SIZE).to_string(base) == JS_STRINGS[base]


@pytest.mark.parametrize("base", list(JS_STRINGS))
def test_s5js_vectors_decode(base):
    bid = BlobId.parse(JS_STRINGS[base])
    assert bid.hash == JS_HASH and bid.size == JS_SIZE
    assert str(bid) == JS_STRINGS["base32"]


def test_to_bytes_layout():
    raw = BlobId(JS_HASH, JS_SIZE).to_bytes()
    assert raw == bytes([0x5B, 0x82, 0x1E]) + JS_HASH + (5050).to_bytes(2, "little")
    assert BlobId.from_bytes(raw) == BlobId(JS_HASH, JS_SIZE)


@pytest.mark.parametrize("size,suffix", list(JS_SIZE_CASES.items()))
def test_s5js_size_encoding(size, suffix):
    # same size encoding as BlobId.to_bytes (trimmed LE, size 0 -> one zero byte)
    size_bytes = BlobId(bytes(32), size).to_bytes()[35:]
    assert _b32(bytes([0x5B, 0x82]) + bytes(32) + size_bytes) == JS_SIZE_PREFIX + suffix


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 57124823, 2**32, 2**64 - 1])
def test_size_round_trip(size):
    bid = BlobId(bytes(range(32)), size)
    raw = bid.to_bytes()
    assert len(raw) == 35 + max(1, (size.bit_length() + 7) // 8)
    for base in ("base32", "base58", "base64url", "base16"):
        assert BlobId.parse(bid.to_string(base)) == bid


def test_size_zero_without_size_byte_is_read():
    # s5-rs writes size 0 as no size byte at all; accept it
    raw = bytes([0x5B, 0x82, 0x1E]) + bytes(range(32))
    assert BlobId.parse(_b32(raw)) == BlobId(bytes(range(32)), 0)


def test_legacy_cid_all_bases():
    for s in (LEGACY_B64, LEGACY_B32, LEGACY_B58):
        bid = BlobId.parse(s)
        assert bid.hash.hex() == LEGACY_HASH
        assert bid.size == LEGACY_SIZE
    # converts to the same v1 blob id
    assert normalize(LEGACY_B64) == BlobId(bytes.fromhex(LEGACY_HASH), LEGACY_SIZE).to_string()
    assert hash_hex(LEGACY_B58) == LEGACY_HASH


def test_legacy_media_cid_rejected():
    with pytest.raises(CIDError):
        BlobId.parse(LEGACY_MEDIA)


def test_blobsum_readme_vector_parses():
    bid = BlobId.parse(BLOBSUM_LICENSE)
    assert bid.size == 11361
    assert bid.to_string() == BLOBSUM_LICENSE


def test_blob_cid_of_data_matches_blake3():
    for data in (b"", b"hello", bytes(range(256)) * 100):
        cid = blob_cid(data)
        assert cid.startswith("blob")
        bid = BlobId.parse(cid)
        assert bid.hash == blake3_pkg.blake3(data).digest()
        assert bid.size == len(data)
        verify(cid, data)
        verify(bid, data)


def test_known_blake3_digest():
    # BLAKE3 reference test vector: blake3("") 
    assert hashing.blake3(b"").hex() == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert hashing.blake3(memoryview(b"abc")) == blake3_pkg.blake3(b"abc").digest()
    big = bytes(3 << 20)
    assert hashing.blake3(big) == blake3_pkg.blake3(big).digest()
    assert hashing.backend_name() == "blake3-py"
    assert blob_cid(b"") == BlobId(bytes.fromhex(
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"), 0).to_string()


def test_verify_rejects():
    data = b"some chunk bytes"
    cid = blob_cid(data)
    with pytest.raises(IntegrityError, match="size"):
        verify(cid, data + b"!")
    with pytest.raises(IntegrityError, match="hash"):
        verify(cid, b"Some chunk bytes")
    with pytest.raises(CIDError):
        verify("not-a-cid", data)


GOOD = JS_STRINGS["base32"]
_RAW = BlobId(JS_HASH, JS_SIZE).to_bytes()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "b",
        "x" + GOOD[1:],  # unknown multibase
        GOOD + "1",  # invalid base32 char
        GOOD.upper()[0:1].lower() + GOOD[1:].upper()[:5] + GOOD[6:],  # mixed case
        GOOD + "=",  # padded
        GOOD[:-1],  # non-canonical length / truncated
        _b32(bytes([0x5C]) + _RAW[1:]),  # wrong magic
        _b32(bytes([0x5B, 0x83]) + _RAW[2:]),  # wrong blob type
        _b32(bytes([0x5B, 0x82, 0x12]) + _RAW[3:]),  # sha256 multihash
        _b32(_RAW[:20]),  # short hash
        _b32(_RAW[:35] + bytes(9)),  # size field > 8 bytes
        _b32(bytes([0x26, 0x1F]) + bytes(32)),  # legacy without size
        _b32(bytes([0x26, 0x12]) + bytes(33)),  # legacy non-blake3
        "z0OIl",  # invalid base58 chars
        "u" + "A" * 3 + "+/",  # base64 (not url) chars
        "fzz",  # bad hex
        "b" + "a" * 300,  # too long
    ],
)
def test_parse_rejects_malformed(bad):
    with pytest.raises(CIDError):
        BlobId.parse(bad)


def test_parse_rejects_non_strings():
    with pytest.raises(CIDError):
        BlobId.parse(b"blob")  # type: ignore[arg-type]
    with pytest.raises(CIDError):
        BlobId.parse(None)  # type: ignore[arg-type]


def test_blobid_validates_fields():
    with pytest.raises(CIDError):
        BlobId(b"short", 1)
    with pytest.raises(CIDError):
        BlobId(bytes(32), -1)
    with pytest.raises(CIDError):
        BlobId(bytes(32), 2**64)
    with pytest.raises(CIDError):
        BlobId(bytes(32), 1).to_string("base36")


def test_blobid_hashable_and_equal_across_bases():
    a = BlobId.parse(JS_STRINGS["base58"])
    b = BlobId.parse(JS_STRINGS["base64url"])
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
