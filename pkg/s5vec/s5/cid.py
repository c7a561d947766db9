"""S5 v1 blob identifiers (CIDs).

Binary layout (S5 v1 spec, docs.s5.pro/spec/blobs.html)::

    0x5b            S5 magic byte
    0x82            blob type "default"
    0x1e            multihash code: blake3
    32 bytes        blake3 hash of the blob
    1..8 bytes      blob size, little-endian, trailing zero bytes trimmed

The string form is multibase: ``b`` + RFC 4648 base32 lower-case without padding
(default, so every blob CID starts with ``blob``), ``z`` base58btc, ``u`` base64url
without padding, ``f`` lower-case hex (``B``/``F`` upper-case variants are read too).

Notes on interop:
* a size of 0 is *written* as one ``0x00`` byte (as lib5 and s5.js do); a CID with no
  size byte at all (as s5-rs writes for size 0) is *read* as size 0 as well;
* any other size field with a trailing zero byte is rejected (:class:`CIDError`): it would be a
  second string for the same blob;
* legacy S5 ``CID`` strings of raw type (``0x26`` + multihash ``0x1f`` blake3 +
  32-byte hash + little-endian size) are read into the same (hash, size) pair.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ..errors import CIDError, IntegrityError
from .hashing import blake3

__all__ = [
    "BlobId",
    "blob_cid",
    "verify",
    "hash_hex",
    "MAGIC_BYTE",
    "BLOB_TYPE_DEFAULT",
    "MULTIHASH_BLAKE3",
    "LEGACY_CID_TYPE_RAW",
    "LEGACY_MULTIHASH_BLAKE3",
]

MAGIC_BYTE = 0x5B
BLOB_TYPE_DEFAULT = 0x82
MULTIHASH_BLAKE3 = 0x1E
LEGACY_CID_TYPE_RAW = 0x26
LEGACY_MULTIHASH_BLAKE3 = 0x1F
_MAX_SIZE = (1 << 64) - 1
_MAX_CID_CHARS = 256  # the longest valid CID (hex, 8 size bytes) has 87 chars

# ---------------------------------------------------------------- multibase codecs

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def _b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    return "1" * zeros + "".join(reversed(out))


def _b58decode(s: str) -> bytes:
    if not s:
        raise CIDError("empty base58btc payload")
    n = 0
    for c in s:
        i = _B58_INDEX.get(c)
        if i is None:
            raise CIDError(f"invalid base58btc character {c!r}")
        n = n * 58 + i
    zeros = len(s) - len(s.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _multibase_decode(s: str) -> bytes:
    """Decode a multibase string strictly (canonical encodings only)."""
    if not isinstance(s, str):
        raise CIDError(f"CID must be a string, not {type(s).__name__}")
    if len(s) < 2:
        raise CIDError(f"CID too short: {s!r}")
    if len(s) > _MAX_CID_CHARS:
        raise CIDError(f"CID too long ({len(s)} characters)")
    if not s.isascii():
        raise CIDError("CID contains non-ASCII characters")
    prefix, body = s[0], s[1:]
    try:
        if prefix in ("b", "B"):
            if (prefix == "b" and body != body.lower()) or (prefix == "B" and body != body.upper()):
                raise CIDError(f"mixed-case base32 in CID {s!r}")
            if "=" in body:
                raise CIDError("base32 CID must not be padded")
            up = body.upper()
            data = base64.b32decode(up + "=" * (-len(up) % 8))
            if _b32encode(data) != body.lower():  # rejects impossible lengths / stray bits
                raise CIDError(f"non-canonical base32 in CID {s!r}")
            return data
        if prefix == "z":
            data = _b58decode(body)
            return data
        if prefix == "u":
            body_np = body.rstrip("=")
            if any(c in "+/" for c in body_np):
                raise CIDError("base64url CID contains '+' or '/'")
            data = base64.urlsafe_b64decode(body_np + "=" * (-len(body_np) % 4))
            if _b64url_encode(data) != body_np:
                raise CIDError(f"non-canonical base64url in CID {s!r}")
            return data
        if prefix in ("f", "F"):
            if (prefix == "f" and body != body.lower()) or (prefix == "F" and body != body.upper()):
                raise CIDError(f"mixed-case hex in CID {s!r}")
            return bytes.fromhex(body)
    except CIDError:
        raise
    except (binascii.Error, ValueError) as e:
        raise CIDError(f"invalid multibase payload in CID {s!r}: {e}") from None
    raise CIDError(f"unsupported multibase prefix {prefix!r} in CID {s!r} (expected b, z, u or f)")


# ---------------------------------------------------------------- BlobId


def _decode_size(size_bytes: bytes, what: str) -> int:
    """Little-endian size, trimmed: a trailing zero byte (other than size 0's single 0x00) would give
    a second spelling of the same blob, so it is rejected (one blob, one CID)."""
    if len(size_bytes) > 8:
        raise CIDError(f"{what}: size field has {len(size_bytes)} bytes (max 8)")
    if len(size_bytes) > 1 and size_bytes[-1] == 0:
        raise CIDError(f"{what}: non-canonical size field {size_bytes.hex()} (trailing zero byte)")
    return int.from_bytes(size_bytes, "little")


@dataclass(frozen=True)
class BlobId:
    """An S5 blob identifier: the 32-byte BLAKE3 hash and the size in bytes."""

    hash: bytes
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.hash, (bytes, bytearray)) or len(self.hash) != 32:
            raise CIDError("BlobId.hash must be 32 bytes")
        if isinstance(self.hash, bytearray):
            object.__setattr__(self, "hash", bytes(self.hash))
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= _MAX_SIZE:
            raise CIDError(f"BlobId.size must be an integer in [0, 2**64), got {self.size!r}")

    # -- encoding
    def to_bytes(self) -> bytes:
        n = max(1, (self.size.bit_length() + 7) // 8)  # size 0 -> one 0x00 byte
        return bytes((MAGIC_BYTE, BLOB_TYPE_DEFAULT, MULTIHASH_BLAKE3)) + self.hash + self.size.to_bytes(n, "little")

    def to_string(self, base: str = "base32") -> str:
        raw = self.to_bytes()
        if base == "base32":
            return "b" + _b32encode(raw)
        if base in ("base58", "base58btc"):
            return "z" + _b58encode(raw)
        if base in ("base64url", "base64"):
            return "u" + _b64url_encode(raw)
        if base in ("base16", "hex"):
            return "f" + raw.hex()
        raise InvalidBase(base)

    def __str__(self) -> str:
        return self.to_string()

    @property
    def hash_hex(self) -> str:
        return self.hash.hex()

    # -- decoding
    @classmethod
    def from_bytes(cls, raw: bytes) -> "BlobId":
        raw = bytes(raw)
        if not raw:
            raise CIDError("empty CID bytes")
        if raw[0] == LEGACY_CID_TYPE_RAW:
            # legacy S5 CID: [0x26][0x1f blake3 multihash][32 hash bytes][size LE]
            if len(raw) < 34:
                raise CIDError(f"legacy CID too short ({len(raw)} bytes, need at least 34)")
            if raw[1] not in (LEGACY_MULTIHASH_BLAKE3, MULTIHASH_BLAKE3):
                raise CIDError(f"legacy CID: unsupported multihash code 0x{raw[1]:02x} (expected 0x1f blake3)")
            size_bytes = raw[34:]
            if not size_bytes:
                raise CIDError("legacy CID carries no size")
            return cls(raw[2:34], _decode_size(size_bytes, "legacy CID"))
        if raw[0] != MAGIC_BYTE:
            raise CIDError(f"not an S5 blob CID: magic byte 0x{raw[0]:02x} (expected 0x5b)")
        if len(raw) < 2 or raw[1] != BLOB_TYPE_DEFAULT:
            got = f"0x{raw[1]:02x}" if len(raw) > 1 else "nothing"
            raise CIDError(f"not an S5 blob CID: blob type {got} (expected 0x82)")
        if len(raw) < 3 or raw[2] != MULTIHASH_BLAKE3:
            got = f"0x{raw[2]:02x}" if len(raw) > 2 else "nothing"
            raise CIDError(f"unsupported multihash code {got} (expected 0x1e blake3)")
        if len(raw) < 35:
            raise CIDError(f"CID hash truncated ({len(raw) - 3} of 32 bytes)")
        return cls(raw[3:35], _decode_size(raw[35:], "CID"))

    @classmethod
    def parse(cls, s: "str | BlobId") -> "BlobId":
        """Parse a CID string (S5 v1 blob id in any supported multibase, or legacy raw CID)."""
        if isinstance(s, BlobId):
            return s
        if isinstance(s, (bytes, bytearray)):
            raise CIDError("BlobId.parse expects a string; use BlobId.from_bytes for raw bytes")
        return cls.from_bytes(_multibase_decode(s))

    @classmethod
    def of(cls, data: bytes) -> "BlobId":
        """The BlobId of ``data``."""
        return cls(blake3(data), len(data))


class InvalidBase(CIDError):
    def __init__(self, base: str) -> None:
        super().__init__(f"unknown multibase {base!r} (use base32, base58, base64url or base16)")


# ---------------------------------------------------------------- helpers


def blob_cid(data: bytes) -> str:
    """The canonical (base32) CID string of ``data``."""
    return BlobId.of(data).to_string()


def verify(cid: "str | BlobId", data: bytes) -> None:
    """Raise :class:`IntegrityError` unless ``data`` is exactly the blob ``cid`` names.

    The size is checked first (cheap); then the BLAKE3 hash.  A malformed ``cid``
    raises :class:`CIDError`.
    """
    bid = BlobId.parse(cid)
    n = len(data)
    if n != bid.size:
        raise IntegrityError(f"size mismatch for {bid}: expected {bid.size} bytes, got {n}")
    got = blake3(data)
    if got != bid.hash:
        raise IntegrityError(f"hash mismatch for {bid}: got blake3 {got.hex()}, expected {bid.hash.hex()}")


def hash_hex(cid: "str | BlobId") -> str:
    """Lower-case hex of the blob's BLAKE3 hash (stable file name, whatever the CID's multibase)."""
    return BlobId.parse(cid).hash.hex()


def normalize(cid: "str | BlobId") -> str:
    """The canonical base32 string of any accepted CID form."""
    return BlobId.parse(cid).to_string()
