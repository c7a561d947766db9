"""S5 registry entries: signed, mutable pointers (here: to the latest manifest CID).

The entry format is S5's, byte for byte (s5.js ``src/registry/entry.ts``)::

    serialised     = 0x07 | pk (33) | revision (8, little-endian) | len (1) | data (len) | signature (64)
    signed message = 0x07 | revision (8, little-endian) | len (1) | data
    pk             = 0xed (multicodec ed25519) | 32-byte ed25519 public key

``data`` is at most 48 bytes; s5vec stores the manifest blob CID's binary form in it.  A portal keeps
one entry per public key and only accepts an entry whose signature verifies and whose revision is
higher than the stored one, so a pointer can only move forward and only its key holder can move it.

The HTTP API follows the S5 node's: ``GET /s5/registry?pk=<base64url pk>`` answers
``{"pk", "revision", "data", "signature"}`` (bytes as base64url without padding) and
``POST /s5/registry`` takes the same JSON.

Signature checks go through one small function (:func:`verify_ed25519`) whose backend can be swapped
with :func:`set_verifier`: CPython uses ``cryptography``; another runtime (Pyodide, where the browser
verifies with WebCrypto) can plug its own in.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import CIDError, FormatError, IntegrityError, InvalidArgumentError, NotFoundError, PortalError
from .cid import BlobId

__all__ = [
    "RECORD_TYPE_REGISTRY_ENTRY",
    "MKEY_ED25519",
    "MAX_DATA_LENGTH",
    "RegistryEntry",
    "SigningKey",
    "create_entry",
    "verify_entry",
    "verify_ed25519",
    "set_verifier",
    "encode_pk",
    "decode_pk",
    "get_entry",
    "set_entry",
    "publish_pointer",
    "resolve_pointer",
]

RECORD_TYPE_REGISTRY_ENTRY = 0x07
MKEY_ED25519 = 0xED
MAX_DATA_LENGTH = 48
MAX_REVISION = (1 << 64) - 1
PK_LENGTH = 33
SIGNATURE_LENGTH = 64
_HEADER = 1 + PK_LENGTH + 8 + 1  # type byte, pk, revision, data length
MAX_SERIALIZED = _HEADER + MAX_DATA_LENGTH + SIGNATURE_LENGTH


# ---------------------------------------------------------------- base64url (no padding), as S5 uses it

def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(s: str, what: str = "value") -> bytes:
    if not isinstance(s, str) or not s.isascii():
        raise FormatError(f"{what} must be a base64url string")
    body = s.rstrip("=")
    if any(c in "+/" for c in body):
        raise FormatError(f"{what} is not base64url (contains '+' or '/')")
    try:
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, base64.binascii.Error) as e:
        raise FormatError(f"{what} is not valid base64url: {e}") from None
    if b64url_encode(data) != body:
        raise FormatError(f"{what} is not canonical base64url")
    return data


def encode_pk(pk: bytes) -> str:
    """The pointer string of a 33-byte multicodec public key (base64url, no padding)."""
    return b64url_encode(_check_pk(pk))


def decode_pk(pointer: str) -> bytes:
    """The 33-byte multicodec public key of a pointer string; :class:`FormatError` if malformed."""
    return _check_pk(b64url_decode(pointer, "public key"))


def _check_pk(pk: bytes) -> bytes:
    pk = bytes(pk)
    if len(pk) != PK_LENGTH:
        raise FormatError(f"public key must be {PK_LENGTH} bytes (0xed + 32), got {len(pk)}")
    if pk[0] != MKEY_ED25519:
        raise FormatError(f"public key type 0x{pk[0]:02x} is not ed25519 (0xed)")
    return pk


# ---------------------------------------------------------------- signature backend

Verifier = Callable[[bytes, bytes, bytes], bool]


def _cryptography_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


_verifier: Verifier = _cryptography_verify


def set_verifier(fn: Verifier | None) -> None:
    """Plug in another ed25519 verifier ``fn(raw_public_key_32, message, signature_64) -> bool``
    (``None`` restores the ``cryptography`` one)."""
    global _verifier
    _verifier = fn or _cryptography_verify


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s (raw 32 bytes) ed25519 signature of ``message``."""
    if len(public_key) != 32 or len(signature) != SIGNATURE_LENGTH:
        return False
    return bool(_verifier(bytes(public_key), bytes(message), bytes(signature)))


# ---------------------------------------------------------------- entries

def signed_message(revision: int, data: bytes) -> bytes:
    """What an entry's signature covers: type byte, revision (8 LE), data length (1), data."""
    return bytes([RECORD_TYPE_REGISTRY_ENTRY]) + revision.to_bytes(8, "little") + bytes([len(data)]) + data


@dataclass(frozen=True)
class RegistryEntry:
    """One registry entry.  Construction checks field shapes, not the signature (see :meth:`verify`)."""

    pk: bytes
    revision: int
    data: bytes
    signature: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "pk", _check_pk(self.pk))
        if isinstance(self.revision, bool) or not isinstance(self.revision, int):
            raise FormatError(f"revision must be an integer, not {type(self.revision).__name__}")
        if not 0 <= self.revision <= MAX_REVISION:
            raise FormatError(f"revision {self.revision} outside 0..2^64-1")
        data, sig = bytes(self.data), bytes(self.signature)
        if len(data) > MAX_DATA_LENGTH:
            raise FormatError(f"entry data is {len(data)} bytes; at most {MAX_DATA_LENGTH}")
        if len(sig) != SIGNATURE_LENGTH:
            raise FormatError(f"signature must be {SIGNATURE_LENGTH} bytes, got {len(sig)}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "signature", sig)

    # -- binary
    def serialize(self) -> bytes:
        return (bytes([RECORD_TYPE_REGISTRY_ENTRY]) + self.pk + self.revision.to_bytes(8, "little")
                + bytes([len(self.data)]) + self.data + self.signature)

    @classmethod
    def deserialize(cls, raw: bytes) -> "RegistryEntry":
        raw = bytes(raw)
        if len(raw) < _HEADER + SIGNATURE_LENGTH:
            raise FormatError(f"registry entry too short ({len(raw)} bytes)")
        if raw[0] != RECORD_TYPE_REGISTRY_ENTRY:
            raise FormatError(f"not a registry entry (type byte 0x{raw[0]:02x}, expected 0x07)")
        n = raw[_HEADER - 1]
        if len(raw) != _HEADER + n + SIGNATURE_LENGTH:
            raise FormatError(f"registry entry is {len(raw)} bytes; its data length {n} implies "
                              f"{_HEADER + n + SIGNATURE_LENGTH}")
        return cls(raw[1:34], int.from_bytes(raw[34:42], "little"), raw[_HEADER:_HEADER + n], raw[_HEADER + n:])

    # -- JSON (the S5 node HTTP API shape)
    def to_json(self) -> dict[str, Any]:
        return {"pk": b64url_encode(self.pk), "revision": self.revision,
                "data": b64url_encode(self.data), "signature": b64url_encode(self.signature)}

    @classmethod
    def from_json(cls, obj: Any) -> "RegistryEntry":
        if not isinstance(obj, dict):
            raise FormatError("registry entry JSON must be an object")
        missing = [k for k in ("pk", "revision", "data", "signature") if k not in obj]
        if missing:
            raise FormatError(f"registry entry JSON lacks {', '.join(missing)}")
        return cls(b64url_decode(obj["pk"], "pk"), obj["revision"], b64url_decode(obj["data"], "data"),
                   b64url_decode(obj["signature"], "signature"))

    # -- meaning
    def verify(self) -> bool:
        return verify_entry(self)

    @property
    def pointer(self) -> str:
        return encode_pk(self.pk)

    def cid(self) -> str:
        """The manifest CID this entry points to (s5vec pointers hold a blob CID's bytes)."""
        try:
            return BlobId.from_bytes(self.data).to_string()
        except CIDError as e:
            raise FormatError(f"registry entry data is not a blob CID: {e}") from None


def verify_entry(entry: RegistryEntry) -> bool:
    """True if the entry's signature is its key's signature over type + revision + length + data."""
    return verify_ed25519(entry.pk[1:], signed_message(entry.revision, entry.data), entry.signature)


# ---------------------------------------------------------------- keys

class SigningKey:
    """An ed25519 key pair from a 32-byte seed (as s5.js ``newKeyPairEd25519(seed)``)."""

    def __init__(self, seed: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        seed = bytes(seed)
        if len(seed) != 32:
            raise InvalidArgumentError(f"an ed25519 seed is 32 bytes, got {len(seed)}")
        self._seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = bytes([MKEY_ED25519]) + self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> "SigningKey":
        return cls(seed)

    @property
    def pointer(self) -> str:
        """The public key as the pointer string readers open (base64url of the 33 bytes)."""
        return encode_pk(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(bytes(message))

    def save(self, path: str | os.PathLike) -> None:
        """Write the seed (64 hex characters) to a new file readable only by its owner (0600)."""
        p = Path(path)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._seed.hex() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SigningKey":
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise InvalidArgumentError(f"cannot read key file {path}: {e.strerror}") from None
        text = raw.strip()
        if len(text) == 64:
            try:
                return cls(bytes.fromhex(text.decode("ascii")))
            except (ValueError, UnicodeDecodeError):
                pass
        if len(raw) == 32:
            return cls(raw)
        raise InvalidArgumentError(f"key file {path} does not hold a 32-byte seed (64 hex characters)")


def create_entry(key: SigningKey, data: bytes, revision: int) -> RegistryEntry:
    """A signed entry for ``data`` at ``revision``."""
    data = bytes(data)
    if len(data) > MAX_DATA_LENGTH:
        raise InvalidArgumentError(f"entry data is {len(data)} bytes; at most {MAX_DATA_LENGTH}")
    if not 0 <= int(revision) <= MAX_REVISION:
        raise InvalidArgumentError(f"revision {revision} outside 0..2^64-1")
    return RegistryEntry(key.public_key, int(revision), data, key.sign(signed_message(int(revision), data)))


# ---------------------------------------------------------------- HTTP (CPython; the tab has its own)

def _portals_of(client_or_portals: Any) -> list[str]:
    if isinstance(client_or_portals, str):
        return [client_or_portals]
    portals = getattr(client_or_portals, "portals", client_or_portals)
    out = [str(p).rstrip("/") for p in portals]
    if not out:
        raise InvalidArgumentError("at least one portal URL is needed")
    return out


def _http(url: str, *, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
          timeout: float = 30.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise PortalError(f"{url}: unreachable ({getattr(e, 'reason', e)})") from None


def _err_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except Exception:  # noqa: BLE001 - any non-JSON answer is shown raw
        return body[:200].decode("utf-8", "replace")


def get_entry(portal: str, pk: bytes, *, timeout: float = 30.0) -> RegistryEntry | None:
    """The entry a portal holds for ``pk`` (not verified; ``None`` if it has none)."""
    url = f"{portal.rstrip('/')}/s5/registry?pk={encode_pk(pk)}"
    status, body = _http(url, timeout=timeout)
    if status == 404:
        return None
    if status != 200:
        raise PortalError(f"{url}: HTTP {status}: {_err_text(body)}")
    try:
        obj = json.loads(body)
    except ValueError:
        raise FormatError(f"{url}: registry answer is not JSON") from None
    entry = RegistryEntry.from_json(obj)
    if entry.pk != pk:
        raise IntegrityError(f"{url}: portal answered an entry for another key")
    return entry


def set_entry(portal: str, entry: RegistryEntry, *, auth_token: str | None = None, timeout: float = 30.0) -> None:
    """Store ``entry`` on a portal; :class:`PortalError` (with the HTTP status) if refused."""
    url = f"{portal.rstrip('/')}/s5/registry"
    headers = {"Content-Type": "application/json"}
    if auth_token:
        headers["Authorization"] = f"Bearer {auth_token}"
    status, body = _http(url, method="POST", body=json.dumps(entry.to_json()).encode(), headers=headers,
                         timeout=timeout)
    if status not in (200, 204):
        raise PortalError(f"{url}: HTTP {status}: {_err_text(body)}")


def _latest(portals: Sequence[str], pk: bytes, timeout: float) -> tuple[RegistryEntry | None, list[str]]:
    """The highest-revision entry whose signature verifies, and the problems seen on the way."""
    best: RegistryEntry | None = None
    problems: list[str] = []
    for portal in portals:
        try:
            entry = get_entry(portal, pk, timeout=timeout)
        except (PortalError, FormatError, IntegrityError) as e:
            problems.append(str(e))
            continue
        if entry is None:
            continue
        if not verify_entry(entry):
            problems.append(f"{portal}: entry revision {entry.revision} has a bad signature")
            continue
        if best is None or entry.revision > best.revision:
            best = entry
    return best, problems


def publish_pointer(client_or_portals: Any, key: SigningKey, cid: str, *, auth_token: str | None = None,
                    revision: int | None = None, timeout: float = 30.0) -> RegistryEntry:
    """Point ``key``'s registry entry at manifest ``cid`` on every portal.

    ``client_or_portals`` is a portal URL, a list of them, or a client with ``.portals`` (its
    ``auth_token`` is used unless one is given).  The revision is one above the highest verified
    revision any portal holds (or ``revision``).  Succeeds if at least one portal stored it."""
    portals = _portals_of(client_or_portals)
    token = auth_token if auth_token is not None else getattr(client_or_portals, "auth_token", None)
    data = BlobId.parse(cid).to_bytes()
    if revision is None:
        current, _ = _latest(portals, key.public_key, timeout)
        revision = 1 if current is None else current.revision + 1
    entry = create_entry(key, data, revision)
    errors = []
    for portal in portals:
        try:
            set_entry(portal, entry, auth_token=token, timeout=timeout)
        except PortalError as e:
            errors.append(str(e))
    if len(errors) == len(portals):
        raise PortalError("no portal stored the registry entry: " + "; ".join(errors))
    return entry


def resolve_pointer(portals: Iterable[str] | str, pointer: str | bytes, *, timeout: float = 30.0) -> str:
    """The manifest CID the pointer (public key) names: the highest verified revision across portals.

    :class:`NotFoundError` if no portal has an entry, :class:`IntegrityError` if every entry found
    fails its signature check."""
    pk = decode_pk(pointer) if isinstance(pointer, str) else _check_pk(pointer)
    urls = _portals_of(portals)
    best, problems = _latest(urls, pk, timeout)
    if best is None:
        if any("bad signature" in p for p in problems):
            raise IntegrityError("registry entry refused: " + "; ".join(problems))
        if problems and len(problems) == len(urls):
            raise PortalError("registry unreachable: " + "; ".join(problems))
        raise NotFoundError(f"no registry entry for {encode_pk(pk)} on {', '.join(urls)}")
    return best.cid()
