"""Storage layout: the only module that knows CBOR, the chunk schemas and the format version.

A published index is a *manifest* plus *chunks*, each one S5 blob addressed by its
blake3 CID (see ``docs/FORMAT.md``). Chunk bodies are plain dicts; NumPy arrays in them
are written as RFC 8746 typed arrays (little-endian, tag 85 = float32 etc., wrapped in
tag 40 with the shape when they have more than one dimension), so any CBOR decoder can
read them and ours maps them back with ``numpy.frombuffer`` without copying.

Indexes hand chunk bodies as plain lists and arrays; a chunk *schema* (:data:`SCHEMAS`) may
re-shape a kind's body for storage and back (an ``ivf_list`` packs its ids and metadata into
columns). The format version (:data:`FORMAT_VERSION`) is the only one: it covers the manifest,
every chunk and the index descriptors inside the manifest. Version 2 changed the keyword index
(``kw_*`` chunks: term frequencies instead of BM25 weights, a ``kw_ids`` chunk kind, segments);
readers accept version 1 manifests and chunks (a version 1 keyword index is refused with a
``FormatError`` by :mod:`s5vec.keyword`, everything else reads as before).

Encoding is canonical (sorted keys, shortest floats), so the same content always gives
the same bytes and therefore the same CID: an incremental save re-uploads only the
chunks whose content changed.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Iterator, Mapping, Sequence, TypeVar, overload

import cbor2
import numpy as np

from .errors import FormatError
from .s5.cid import blob_cid

FORMAT_NAME = "s5vec"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)

# RFC 8746 typed-array tags (little-endian variants) and the multi-dimensional array tag.
_TAG_BY_DTYPE = {
    "|u1": 64, "<u2": 69, "<u4": 70, "<u8": 71,
    "|i1": 72, "<i2": 77, "<i4": 78, "<i8": 79,
    "<f2": 84, "<f4": 85, "<f8": 86,
}
_DTYPE_BY_TAG = {tag: np.dtype(dt) for dt, tag in _TAG_BY_DTYPE.items()}
_TAG_NDARRAY = 40


def _default(encoder: cbor2.CBOREncoder, value: Any) -> None:
    if isinstance(value, np.ndarray):
        arr = value.astype(value.dtype.newbyteorder("<"), copy=False) if value.dtype.byteorder == ">" else value
        tag = _TAG_BY_DTYPE.get(arr.dtype.str)
        if tag is None:
            raise FormatError(f"cannot store arrays of dtype {value.dtype}")
        payload = cbor2.CBORTag(tag, np.ascontiguousarray(arr).tobytes())
        if arr.ndim == 1:
            encoder.encode(payload)
        else:
            encoder.encode(cbor2.CBORTag(_TAG_NDARRAY, [list(arr.shape), payload]))
    elif isinstance(value, np.integer):
        encoder.encode(int(value))
    elif isinstance(value, np.floating):
        encoder.encode(float(value))
    elif isinstance(value, np.bool_):
        encoder.encode(bool(value))
    else:
        raise FormatError(f"cannot store a value of type {type(value).__name__}")


def _tag_hook(decoder: cbor2.CBORDecoder, tag: cbor2.CBORTag) -> Any:
    dtype = _DTYPE_BY_TAG.get(tag.tag)
    if dtype is not None:
        if not isinstance(tag.value, bytes) or len(tag.value) % dtype.itemsize:
            raise FormatError(f"typed array (tag {tag.tag}) has a bad payload")
        return np.frombuffer(tag.value, dtype=dtype)
    if tag.tag == _TAG_NDARRAY:
        try:
            shape, flat = tag.value
            return flat.reshape([int(s) for s in shape])
        except (TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"bad multi-dimensional array: {exc}") from None
    return tag


def dumps(obj: Any) -> bytes:
    """Canonical CBOR with NumPy arrays as typed arrays."""
    return cbor2.dumps(obj, default=_default, canonical=True)


def loads(data: bytes) -> Any:
    """Decode CBOR; any malformed or truncated input becomes a :class:`FormatError`."""
    try:
        return cbor2.loads(data, tag_hook=_tag_hook)
    except FormatError:
        raise
    except Exception as exc:  # cbor2 raises CBORDecodeError, but also ValueError/TypeError/... on junk
        raise FormatError(f"malformed CBOR: {exc}") from None


# -- packed columns -----------------------------------------------------------------------
# A chunk that is fetched at query time (an IVF list) holds hundreds of ids and metadata maps.
# Decoding them as CBOR arrays costs one pure-Python cbor2 call per value in the browser, for
# records most queries never look at. So they are packed: ids as one text string plus offsets,
# metadata as one byte string of concatenated per-record CBOR items plus offsets, decoded per
# record only when a filter or a hit needs it.

def _cum_offsets(lengths: Sequence[int], compact: bool) -> np.ndarray:
    """Cumulative offsets (uint32; with ``compact`` uint16 when the last one fits: readers read
    any unsigned typed array)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.uint32)
    if lengths:
        np.cumsum(lengths, out=offsets[1:])
    if compact and offsets[-1] < 1 << 16:
        return offsets.astype(np.uint16)
    return offsets


def pack_strings(items: Sequence[str], compact: bool = False) -> dict[str, Any]:
    return {"text": "".join(items), "offsets": _cum_offsets([len(s) for s in items], compact)}


def unpack_strings(obj: Any, n: int | None = None) -> list[str]:
    """Inverse of :func:`pack_strings` (a plain list of strings is accepted too)."""
    try:
        if isinstance(obj, list):
            out = [str(i) for i in obj]
        else:
            text, off = obj["text"], obj["offsets"].tolist()
            if not isinstance(text, str) or not off or off[0] != 0 or off[-1] != len(text):
                raise ValueError("offsets do not cover the text")
            out = [text[a:b] for a, b in zip(off[:-1], off[1:])]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise FormatError(f"bad packed strings: {exc}") from None
    if n is not None and len(out) != n:
        raise FormatError(f"expected {n} strings, got {len(out)}")
    return out


def pack_records(items: Sequence[Mapping[str, Any]], compact: bool = False) -> dict[str, Any]:
    parts = [dumps(dict(m)) for m in items]
    return {"cbor": b"".join(parts), "offsets": _cum_offsets([len(p) for p in parts], compact)}


# Timestamps of a list chunk: float64 (8 bytes a record), or -- when every one is t0 plus a whole
# number of seconds below 2**32 (records stamped at one time, or integer Unix seconds) -- a base
# and the smallest unsigned deltas that hold them exactly ({"t0", "dt"}: 1, 2 or 4 bytes a record).
# An older reader meets a map where it expects an array and refuses the chunk (FormatError); it
# never misreads it.

def pack_timestamps(ts: Any) -> Any:
    t = np.ascontiguousarray(ts, dtype=np.float64)
    if t.size == 0 or not np.isfinite(t).all():
        return t
    t0 = float(t.min())
    dt = t - t0
    if float(dt.max()) >= 2.0 ** 32 or not np.array_equal(np.floor(dt), dt):
        return t
    for dtype in (np.uint8, np.uint16, np.uint32):
        if float(dt.max()) <= np.iinfo(dtype).max:
            small = dt.astype(dtype)
            break
    if not np.array_equal(t0 + small.astype(np.float64), t):  # exact round trip or nothing
        return t
    return {"t0": t0, "dt": small}


def unpack_timestamps(obj: Any, n: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack_timestamps` (a plain float64 array passes through)."""
    try:
        if isinstance(obj, dict):
            dt = np.asarray(obj["dt"])
            if dt.dtype.kind != "u":
                raise ValueError("timestamp deltas must be unsigned integers")
            out = float(obj["t0"]) + dt.astype(np.float64)
        else:
            out = np.asarray(obj, dtype=np.float64)
        if out.ndim != 1 or (n is not None and out.shape[0] != n):
            raise ValueError(f"expected {n} timestamps")
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"bad timestamps column: {exc}") from None
    return out


def _offsets(off: Any, size: int, what: str) -> np.ndarray:
    """Packed-column offsets as an int64 array, checked to cover ``size`` items of data in order."""
    try:
        o = np.asarray(off)
        if o.ndim != 1 or o.dtype.kind not in "ui":
            raise ValueError("not a 1-d integer array")
    except (TypeError, ValueError) as exc:
        raise FormatError(f"bad packed {what}: {exc}") from None
    if o.shape[0] == 0 or int(o[0]) != 0 or int(o[-1]) != size or bool((o[1:] < o[:-1]).any()):
        raise FormatError(f"bad packed {what}: offsets do not cover the data")
    return o


_T = TypeVar("_T")


class _Packed(Sequence[_T]):
    """A packed column read item by item: ``_off`` (checked offsets, see :func:`_offsets`) cuts
    its data; subclasses say how one item is made (``_at``)."""

    __slots__ = ()
    _off: np.ndarray
    _what = "item"

    def __len__(self) -> int:
        return self._off.shape[0] - 1

    def _at(self, i: int) -> _T:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> _T: ...
    @overload
    def __getitem__(self, i: slice) -> list[_T]: ...

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._at(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self._what} index out of range")
        return self._at(i)


class LazyRecords(_Packed[dict]):
    """Metadata maps decoded one by one on first access (see :func:`pack_records`).

    Holds the packed bytes and the offsets array as decoded (no per-record Python objects until a
    record is read): a list chunk's metadata costs its bytes in the chunk cache, not 40 B per record."""

    __slots__ = ("_blob", "_off", "_cache")
    _what = "record"

    def __init__(self, blob: bytes, offsets: Any) -> None:
        self._off = _offsets(offsets, len(blob), "records")
        self._blob = blob
        self._cache: dict[int, dict] = {}

    def _at(self, i: int) -> dict:
        v = self._cache.get(i)
        if v is None:
            off = self._off
            v = loads(self._blob[off.item(i): off.item(i + 1)])
            if not isinstance(v, dict):
                raise FormatError("packed metadata item is not a map")
            self._cache[i] = v
        return v

    def __iter__(self) -> Iterator[dict]:
        return (self._at(i) for i in range(len(self)))


class LazyStrings(_Packed[str]):
    """Ids of a packed column (see :func:`pack_strings`), cut out of the text on access: the
    hundreds of ids of a list chunk stay one string and one offsets array (as decoded) instead of
    a list of str objects (~60 B each: more than the chunk's codes at 48 B per vector)."""

    __slots__ = ("_text", "_off")
    _what = "string"

    def __init__(self, text: str, offsets: Any) -> None:
        if not isinstance(text, str):
            raise FormatError("bad packed strings: the text is not a string")
        self._off = _offsets(offsets, len(text), "strings")
        self._text = text

    def _at(self, i: int) -> str:
        off = self._off
        return self._text[off.item(i): off.item(i + 1)]

    def __iter__(self) -> Iterator[str]:
        t, off = self._text, self._off.tolist()
        return (t[a:b] for a, b in zip(off[:-1], off[1:]))


def unpack_records(obj: Any, n: int | None = None) -> Sequence[dict]:
    """Inverse of :func:`pack_records`, lazily (a plain list of maps is accepted too)."""
    if isinstance(obj, list):
        out: Sequence[dict] = [dict(m) for m in obj]
    else:
        try:
            out = LazyRecords(obj["cbor"], obj["offsets"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"bad packed records: {exc}") from None
    if n is not None and len(out) != n:
        raise FormatError(f"expected {n} metadata maps, got {len(out)}")
    return out


# -- chunk schemas -------------------------------------------------------------------------

def _encode_ivf_list(body: Mapping[str, Any]) -> dict[str, Any]:
    """Pack every list's ids and metadata into columns (see :func:`pack_records`), with uint16
    offsets where they fit, and its timestamps (:func:`pack_timestamps`)."""
    out = dict(body)
    out["lists"] = [dict(e, ids=pack_strings(list(e["ids"]), compact=True),
                         metadata=pack_records(e["metadata"], compact=True),
                         timestamps=pack_timestamps(e["timestamps"]))
                    for e in body["lists"]]
    return out


def _decode_ivf_list(body: dict[str, Any]) -> dict[str, Any]:
    """Ids and metadata stay packed, read per record on access (:class:`LazyStrings`,
    :class:`LazyRecords`); arrays stay views on the decoded byte strings. The decoded body is what
    the chunk cache holds (one copy per chunk), so it costs about the chunk's own bytes."""
    try:
        entries = body["lists"]
        out = []
        for e in entries:
            packed = e["ids"]
            ids = LazyStrings(packed["text"], packed["offsets"]) if isinstance(packed, dict) else unpack_strings(packed)
            out.append(dict(e, ids=ids, metadata=unpack_records(e["metadata"], len(ids)),
                            timestamps=unpack_timestamps(e["timestamps"], len(ids))))
    except (KeyError, TypeError) as exc:
        raise FormatError(f"bad ivf_list chunk: {exc}") from None
    return dict(body, lists=out)


#: kind -> (encode, decode) of chunk bodies whose stored form differs from what indexes hand over
SCHEMAS: dict[str, tuple[Any, Any]] = {
    "ivf_list": (_encode_ivf_list, _decode_ivf_list),
}


def encode_chunk(kind: str, body: Mapping[str, Any]) -> bytes:
    schema = SCHEMAS.get(kind)
    stored = schema[0](body) if schema else dict(body)
    return dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, "chunk": kind, "body": stored})


def decode_chunk(data: bytes, kind: str | None = None) -> dict[str, Any]:
    obj = loads(data)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME or "chunk" not in obj:
        raise FormatError("not an s5vec chunk")
    _check_version(obj.get("version"))
    if kind is not None and obj["chunk"] != kind:
        raise FormatError(f"expected a {kind!r} chunk, got {obj['chunk']!r}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise FormatError("chunk body is not a map")
    schema = SCHEMAS.get(obj["chunk"])
    return schema[1](body) if schema else body


def _check_version(version: Any) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"unsupported s5vec format version {version!r} (this reader knows {SUPPORTED_VERSIONS})")


MANIFEST_FIELDS = ("kind", "dim", "metric", "count", "index", "chunks")


def encode_manifest(
    *, kind: str, dim: int, metric: str, count: int, index: Mapping[str, Any],
    chunks: list[dict[str, Any]], parent: str | None = None, spec: str | None = None,
    extra: Mapping[str, Any] | None = None, created: float | None = None,
) -> bytes:
    """The manifest's bytes; ``created`` (Unix seconds, default now) is fixed by reproducible builds."""
    doc: dict[str, Any] = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "type": "manifest",
        "kind": kind, "spec": spec or kind, "dim": int(dim), "metric": metric, "count": int(count),
        "created": round(time.time() if created is None else float(created), 3), "parent": parent, "index": dict(index), "chunks": chunks,
    }
    if extra:
        doc["extra"] = dict(extra)
    return dumps(doc)


def decode_manifest(data: bytes) -> dict[str, Any]:
    doc = loads(data)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME or doc.get("type") != "manifest":
        raise FormatError("not an s5vec manifest")
    _check_version(doc.get("version"))
    missing = [f for f in MANIFEST_FIELDS if f not in doc]
    if missing:
        raise FormatError(f"manifest lacks {', '.join(missing)}")
    if not isinstance(doc["dim"], int) or doc["dim"] <= 0 or not isinstance(doc["count"], int):
        raise FormatError("manifest has a bad dim or count")
    if not isinstance(doc["chunks"], list) or not isinstance(doc["index"], dict):
        raise FormatError("manifest has bad chunks or index entries")
    for n, c in enumerate(doc["chunks"]):
        # every reader keys chunks by cid and kind: check both once, here, not at each use
        if not isinstance(c, dict) or not isinstance(c.get("cid"), str) or not isinstance(c.get("kind"), str):
            raise FormatError(f"manifest chunk entry {n} needs a string cid and kind")
    return doc


class StoreWriter:
    """ChunkWriter over a chunk store: encodes, uploads only unknown CIDs, lists what it wrote.

    ``known`` holds CIDs already on the portal (e.g. every chunk of the parent manifest):
    a chunk whose CID is known is not uploaded again.
    """

    def __init__(self, store: Any, known: Iterable[str] = ()) -> None:
        self.store = store
        self.known = set(known)
        self.chunks: list[dict[str, Any]] = []
        self.uploaded = 0
        self.skipped = 0

    def put(self, kind: str, body: Mapping[str, Any]) -> str:
        data = encode_chunk(kind, body)
        cid = blob_cid(data)
        if cid in self.known:
            self.skipped += 1
        else:
            self._write(cid, data)
            self.known.add(cid)
            self.uploaded += 1
        self.chunks.append({"cid": cid, "kind": kind, "size": len(data)})
        return cid

    def _write(self, cid: str, data: bytes) -> None:
        got = self.store.put(data)
        if got != cid:
            raise FormatError(f"portal stored the chunk under {got}, expected {cid}")


class StagingWriter(StoreWriter):
    """A StoreWriter that uploads nothing: the new chunks wait in ``staged`` (CID -> bytes), so the
    caller can upload them together, in parallel, and the manifest only after all of them (an
    interrupted commit then never names a chunk the portal lacks). ``uploaded`` counts staged chunks."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        super().__init__(None, known)
        self.staged: dict[str, bytes] = {}

    def _write(self, cid: str, data: bytes) -> None:
        self.staged[cid] = data


class StoreReader:
    """ChunkReader over a chunk store: fetch (verified by the store), decode, check the kind.

    Decoded bodies are cached by the store next to their bytes (one byte budget, see
    :meth:`s5vec.store.ChunkStore.get_decoded`), so a chunk read again is not decoded again.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def get(self, cid: str, kind: str | None = None) -> dict[str, Any]:
        return self.store.get_decoded(cid, kind, lambda data: decode_chunk(data, kind))

    def peek(self, cid: str, kind: str | None = None) -> dict[str, Any] | None:
        """The decoded body if the store already holds it decoded (as ``get`` with this ``kind``
        left it), else None; never fetches (see :meth:`s5vec.store.ChunkStore.peek_decoded`)."""
        return self.store.peek_decoded(cid, kind)

    def get_many(self, cids: Sequence[str], kinds: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """``{cid: get(cid, kinds.get(cid))}`` for every CID (a search round's chunks)."""
        many = getattr(self.store, "get_decoded_many", None)
        if many is None:
            return {c: self.get(c, kinds.get(c)) for c in cids}
        cids = list(cids)
        return dict(zip(cids, many(cids, [kinds.get(c) for c in cids], decode_chunk)))
