"""S5 registry entries: the s5.js format byte for byte, signatures, and the portal's registry endpoints."""
from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request

import pytest

from s5vec.errors import FormatError, IntegrityError, InvalidArgumentError, NotFoundError, PortalError
from s5vec.s5 import registry as reg
from s5vec.s5.cid import BlobId, blob_cid
from s5vec.s5.hashing import blake3
from s5vec.s5.portal import start_portal

# s5.js test/registry.test.ts: key pair from a seed of 32 zero bytes
ZERO_KEY_PK_HEX = "ed3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
SIG_VECTOR = ("b5c2efc79193b5495838aaa6e9c4500ae685ab7d1f790ece3cb7244a63305c6b"
              "072a7190a088a81cc203e24cbd2cc1cf318022bdce4883d4a37600b3675a290f")
SERIALIZED_VECTOR = (
    "07ed3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da292a00000000000000211eaf1349b9f5f9a1a6a04"
    "04dea36dcc9499bcb25c9adc112b7cc9a93cae41f326280e4e006ceb0da7934bf6308ca6b17ab5f98f1593dee44644ea252a82f77cf"
    "5dd43db1833f64c6461bc5cd20dee4e4dfcca051381021da89396693af5cfc3e0c")


def _req(url, *, method="GET", data=None, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _post(portal, entry_or_bytes, token=None, binary=False):
    if isinstance(entry_or_bytes, reg.RegistryEntry):
        body = entry_or_bytes.serialize() if binary else json.dumps(entry_or_bytes.to_json()).encode()
    else:
        body = entry_or_bytes
    h = {"Content-Type": "application/octet-stream" if binary else "application/json"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return _req(portal.url + "/s5/registry", method="POST", data=body, headers=h)


def _get(portal, pk: bytes):
    return _req(f"{portal.url}/s5/registry?pk={reg.encode_pk(pk)}")


@pytest.fixture
def portal(tmp_path):
    p = start_portal(tmp_path / "p")
    yield p
    p.stop()


@pytest.fixture
def key():
    return reg.SigningKey(bytes(32))


# ------------------------------------------------------------------ format (s5.js vectors)

def test_s5js_signature_vector(key):
    assert key.public_key.hex() == ZERO_KEY_PK_HEX
    e = reg.create_entry(key, bytes(33), 1)
    assert e.signature.hex() == SIG_VECTOR
    assert e.verify()


def test_s5js_serialization_vector(key):
    data = bytes([0x1E]) + blake3(b"")
    e = reg.create_entry(key, data, 42)
    assert e.serialize().hex() == SERIALIZED_VECTOR
    back = reg.RegistryEntry.deserialize(bytes.fromhex(SERIALIZED_VECTOR))
    assert back == e and back.revision == 42 and back.data == data and back.verify()


def test_signed_message_layout():
    assert reg.signed_message(0x0102, b"ab") == bytes([7, 2, 1, 0, 0, 0, 0, 0, 0, 2]) + b"ab"


def test_round_trip_json_and_pointer(key):
    cid = blob_cid(b"manifest")
    e = reg.create_entry(key, BlobId.parse(cid).to_bytes(), 2**40 + 7)
    j = e.to_json()
    assert set(j) == {"pk", "revision", "data", "signature"} and "=" not in j["pk"] + j["signature"]
    assert reg.RegistryEntry.from_json(j) == e
    assert e.cid() == cid
    assert reg.decode_pk(key.pointer) == key.public_key
    big = reg.create_entry(key, b"x", 2**64 - 1)  # the full u64 range
    assert reg.RegistryEntry.deserialize(big.serialize()).revision == 2**64 - 1 and big.verify()


def test_malformed_entries_are_format_errors(key):
    good = reg.create_entry(key, b"data", 1).serialize()
    for bad in (b"", good[:-1], good + b"x", b"\x08" + good[1:], good[:1] + b"\xee" + good[2:]):
        with pytest.raises(FormatError):
            reg.RegistryEntry.deserialize(bad)
    with pytest.raises(InvalidArgumentError):
        reg.create_entry(key, bytes(49), 1)
    with pytest.raises(FormatError):
        reg.decode_pk("AAAA")
    with pytest.raises(FormatError):
        reg.RegistryEntry.from_json({"pk": key.pointer, "revision": "1", "data": "", "signature": "A" * 86})
    with pytest.raises(FormatError):
        reg.RegistryEntry.from_json({"pk": key.pointer})


def test_forged_and_tampered_entries_do_not_verify(key):
    e = reg.create_entry(key, b"payload", 5)
    other = reg.SigningKey.generate()
    forged = reg.RegistryEntry(other.public_key, e.revision, e.data, e.signature)  # someone else's key
    assert not forged.verify()
    assert not reg.RegistryEntry(e.pk, 6, e.data, e.signature).verify()  # revision changed
    assert not reg.RegistryEntry(e.pk, 5, b"payloaD", e.signature).verify()  # data changed
    sig = bytearray(e.signature)
    sig[0] ^= 1
    assert not reg.RegistryEntry(e.pk, 5, e.data, bytes(sig)).verify()


def test_pluggable_verifier(key):
    e = reg.create_entry(key, b"x", 1)
    seen = []
    reg.set_verifier(lambda pk, msg, sig: seen.append((pk, msg, sig)) or False)
    try:
        assert not e.verify()
        assert seen == [(key.public_key[1:], reg.signed_message(1, b"x"), e.signature)]
    finally:
        reg.set_verifier(None)
    assert e.verify()


def test_key_file_round_trip(tmp_path):
    k = reg.SigningKey.generate()
    path = tmp_path / "k.key"
    k.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert reg.SigningKey.load(path).public_key == k.public_key
    with pytest.raises(FileExistsError):
        k.save(path)  # never overwrite a key
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(InvalidArgumentError):
        reg.SigningKey.load(tmp_path / "bad.key")


# ------------------------------------------------------------------ portal endpoints

def test_portal_get_set_json_and_binary(portal, key):
    assert _get(portal, key.public_key)[0] == 404
    e1 = reg.create_entry(key, b"one", 1)
    st, h, _ = _post(portal, e1)
    assert st == 204
    st, h, body = _get(portal, key.public_key)
    assert st == 200 and json.loads(body) == e1.to_json()
    assert h["Access-Control-Allow-Origin"] == "*" and h["Cache-Control"] == "no-store"
    e2 = reg.create_entry(key, b"two", 2)
    assert _post(portal, e2, binary=True)[0] == 204
    assert reg.RegistryEntry.from_json(json.loads(_get(portal, key.public_key)[2])) == e2
    assert (portal.registry_dir / key.public_key.hex()).read_bytes() == e2.serialize()


def test_portal_refuses_bad_signature_forged_key_and_stale_revision(portal, key):
    e5 = reg.create_entry(key, b"five", 5)
    assert _post(portal, e5)[0] == 204
    forged = reg.RegistryEntry(reg.SigningKey.generate().public_key, 9, b"evil", e5.signature)
    st, _, body = _post(portal, forged)
    assert st == 400 and "signature" in json.loads(body)["error"]
    tampered = reg.RegistryEntry(key.public_key, 9, b"evil", e5.signature)
    assert _post(portal, tampered)[0] == 400
    for rev in (5, 4, 0):  # equal and lower revisions
        st, _, body = _post(portal, reg.create_entry(key, b"old", rev))
        assert st == 409 and json.loads(body)["revision"] == 5
    assert reg.RegistryEntry.from_json(json.loads(_get(portal, key.public_key)[2])) == e5
    assert not list(portal.registry_dir.glob(".tmp-*"))


def test_portal_refuses_malformed_bodies(portal, key):
    for body in (b"", b"{", b"[]", b"\x07short", json.dumps({"pk": key.pointer}).encode(), b"x" * 20000):
        st, _, _ = _post(portal, body)
        assert st in (400, 413), body[:20]
    assert _req(portal.url + "/s5/registry")[0] == 400
    assert _req(portal.url + "/s5/registry?pk=notakey")[0] == 400
    assert not os.listdir(portal.registry_dir)


def test_entry_persists_across_restart(tmp_path, key):
    d = tmp_path / "persist"
    p1 = start_portal(d)
    e = reg.create_entry(key, b"kept", 3)
    assert _post(p1, e)[0] == 204
    p1.stop()
    (d / "registry" / ".tmp-leftover").write_bytes(b"half")
    p2 = start_portal(d)
    try:
        assert reg.RegistryEntry.from_json(json.loads(_get(p2, key.public_key)[2])) == e
        assert _post(p2, reg.create_entry(key, b"stale", 3))[0] == 409  # the stored revision survived too
        assert not (d / "registry" / ".tmp-leftover").exists()
    finally:
        p2.stop()


def test_registry_write_needs_token_and_allowed_origin(tmp_path, key):
    p = start_portal(tmp_path / "t", tokens=["s3cret"], cors_origins=["http://app.example"])
    try:
        e = reg.create_entry(key, b"x", 1)
        assert _post(p, e)[0] == 401
        assert _post(p, e, token="wrong")[0] == 401
        st, h, _ = _req(p.url + "/s5/registry", method="POST", data=json.dumps(e.to_json()).encode(),
                        headers={"Authorization": "Bearer s3cret", "Origin": "http://evil.example"})
        assert st == 403 and "Access-Control-Allow-Origin" not in h
        assert not os.listdir(p.registry_dir)
        st, h, _ = _req(p.url + "/s5/registry", method="POST", data=json.dumps(e.to_json()).encode(),
                        headers={"Authorization": "Bearer s3cret", "Origin": "http://app.example"})
        assert st == 204 and h["Access-Control-Allow-Origin"] == "http://app.example"
        assert _get(p, key.public_key)[0] == 200  # reads stay anonymous
    finally:
        p.stop()


# ------------------------------------------------------------------ publish / resolve

def test_publish_and_resolve_pointer(tmp_path, key):
    a, b = start_portal(tmp_path / "a"), start_portal(tmp_path / "b")
    try:
        c1, c2 = blob_cid(b"manifest 1"), blob_cid(b"manifest 2")
        e1 = reg.publish_pointer([a.url, b.url], key, c1)
        assert e1.revision == 1
        assert reg.resolve_pointer([a.url, b.url], key.pointer) == c1
        e2 = reg.publish_pointer([a.url], key, c2)  # only a learns of revision 2
        assert e2.revision == 2
        assert reg.resolve_pointer([b.url, a.url], key.pointer) == c2  # the highest revision wins
        # a portal serving a tampered entry is skipped; all tampered -> IntegrityError
        raw = bytearray((tmp_path / "b" / "registry" / key.public_key.hex()).read_bytes())
        raw[-1] ^= 1
        (tmp_path / "b" / "registry" / key.public_key.hex()).write_bytes(bytes(raw))
        assert reg.resolve_pointer([b.url, a.url], key.pointer) == c2
        with pytest.raises(IntegrityError):
            reg.resolve_pointer([b.url], key.pointer)
        with pytest.raises(NotFoundError):
            reg.resolve_pointer([a.url], reg.SigningKey.generate().pointer)
    finally:
        a.stop()
        b.stop()


def test_publish_with_token(tmp_path, key):
    p = start_portal(tmp_path / "t", tokens=["tok"])
    try:
        with pytest.raises(PortalError, match="401"):
            reg.publish_pointer(p.url, key, blob_cid(b"m"))

        class Client:  # anything with .portals and .auth_token, like PortalClient
            portals = [p.url]
            auth_token = "tok"

        reg.publish_pointer(Client(), key, blob_cid(b"m"))
        assert reg.resolve_pointer(p.url, key.pointer) == blob_cid(b"m")
    finally:
        p.stop()


def test_cli_keygen_pointer_resolve(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "pkg")}
    env.pop("S5VEC_AUTH_TOKEN", None)

    def s5vec(*args, check=True):
        p = subprocess.run([sys.executable, "-m", "s5vec", *args], capture_output=True, text=True, env=env, timeout=60)
        assert not check or p.returncode == 0, p.stderr
        return p

    p = start_portal(tmp_path / "cli", tokens=["tok"])
    try:
        pointer = s5vec("keygen", "--out", str(tmp_path / "k.key")).stdout.strip()
        assert reg.SigningKey.load(tmp_path / "k.key").pointer == pointer
        cid = blob_cid(b"manifest via cli")
        bad = s5vec("pointer", str(tmp_path / "k.key"), cid, "--portal", p.url, check=False)
        assert bad.returncode == 1 and "401" in bad.stderr and "Traceback" not in bad.stderr
        assert s5vec("pointer", str(tmp_path / "k.key"), cid, "--portal", p.url, "--auth-token", "tok").stdout.strip() == pointer
        assert s5vec("resolve", pointer, "--portal", p.url).stdout.strip() == cid
        missing = s5vec("resolve", reg.SigningKey.generate().pointer, "--portal", p.url, check=False)
        assert missing.returncode == 1 and "NotFoundError" in missing.stderr
        assert "FormatError" in s5vec("resolve", "garbage", "--portal", p.url, check=False).stderr
    finally:
        p.stop()
