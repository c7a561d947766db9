"""Input limits: how deep and how big a filter, a record's metadata, an id or a request may be.

Each check walks its input *iteratively* (an explicit stack, never recursion), so a document
nested 100,000 deep is measured and rejected with a typed error instead of exhausting the
Python stack -- which in Pyodide is the browser's stack and would take the worker down with it.
Every check runs before anything is changed.

The limits are generous for real data and tight enough that a hostile input cannot make one
request expensive:

=====================  ==========  =====================================================
limit                  value       error
=====================  ==========  =====================================================
filter depth           32          :class:`FilterError` (nested objects, e.g. ``$and`` levels)
filter nodes           1,000       :class:`FilterError` (every dict, list and scalar)
metadata depth         16          :class:`InvalidArgumentError` naming record and key
metadata size          64 KiB      :class:`InvalidArgumentError` (its CBOR size, per record)
metadata numbers       finite      :class:`InvalidArgumentError` (NaN and +-Infinity)
id                     1..512      :class:`InvalidArgumentError` (bytes of UTF-8, a ``str``)
request depth          64          :class:`InvalidArgumentError` (worker protocol ``args``)
request size           64 MiB      :class:`InvalidArgumentError` (worker protocol ``args``)
=====================  ==========  =====================================================
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from .errors import FilterError, InvalidArgumentError

MAX_FILTER_DEPTH = 32
MAX_FILTER_NODES = 1_000
MAX_METADATA_DEPTH = 16
MAX_METADATA_BYTES = 64 * 1024
MAX_ID_BYTES = 512
MAX_REQUEST_DEPTH = 64
MAX_REQUEST_BYTES = 64 * 2**20

__all__ = [
    "MAX_FILTER_DEPTH", "MAX_FILTER_NODES", "MAX_METADATA_DEPTH", "MAX_METADATA_BYTES", "MAX_ID_BYTES",
    "MAX_REQUEST_DEPTH", "MAX_REQUEST_BYTES", "check_filter_shape", "check_metadata", "check_id",
    "check_request",
]


def _head(n: int) -> int:
    """Bytes of a CBOR item head carrying the number ``n``."""
    return 1 if n < 24 else 2 if n < 256 else 3 if n < 65536 else 5 if n < 2**32 else 9


def check_filter_shape(doc: Any) -> None:
    """Raise :class:`FilterError` if a filter document nests deeper or has more nodes than allowed."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_FILTER_NODES:
            raise FilterError(f"filter too large: more than {MAX_FILTER_NODES} nodes")
        if isinstance(value, (Mapping, list, tuple)):
            if depth > MAX_FILTER_DEPTH:
                raise FilterError(f"filter nested too deeply (more than {MAX_FILTER_DEPTH} levels)")
            if isinstance(value, Mapping):  # a level is an object; the list of an $and is not one
                stack.extend((v, depth + 1) for v in value.values())
            else:
                stack.extend((v, depth) for v in value)


def check_metadata(meta: Mapping[str, Any], record: Any) -> None:
    """Raise :class:`InvalidArgumentError` unless ``meta`` is storable and bounded.

    Checks nesting depth, encoded size (CBOR, as the chunk will hold it), finite numbers and
    string map keys at every level.  Messages name the record and the key path."""
    size = _head(len(meta))
    stack: list[tuple[Any, int, str]] = [(v, 1, str(k)) for k, v in meta.items()]
    for k in meta:
        if not isinstance(k, str):
            raise InvalidArgumentError(f"record {record!r}: metadata keys must be strings, got {k!r:.60}")
        size += _head(len(k)) + len(k.encode("utf-8", "surrogatepass"))
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, bool) or value is None:
            size += 1
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidArgumentError(
                    f"record {record!r}: metadata key {path!r} is {value!r}; NaN and infinity cannot be "
                    "stored (use null, or leave the key out)")
            size += 9
        elif isinstance(value, int):
            size += 9
        elif isinstance(value, str):
            size += _head(len(value)) + len(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, (bytes, bytearray, memoryview)):
            size += _head(len(value)) + len(value)
        elif isinstance(value, (Mapping, list, tuple)):
            if depth >= MAX_METADATA_DEPTH:
                raise InvalidArgumentError(
                    f"record {record!r}: metadata key {path!r} nested too deeply "
                    f"(more than {MAX_METADATA_DEPTH} levels)")
            size += _head(len(value))
            if isinstance(value, Mapping):
                for k, v in value.items():
                    if not isinstance(k, str):
                        raise InvalidArgumentError(
                            f"record {record!r}: metadata key {path!r} holds a map with a non-string key {k!r:.60}")
                    size += _head(len(k)) + len(k.encode("utf-8", "surrogatepass"))
                    stack.append((v, depth + 1, f"{path}.{k}"))
            else:
                stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value))
        else:
            # NumPy scalars and arrays are stored through their values; anything else is left to
            # the encoder (a datetime is CBOR-able; an unknown type fails there with FormatError)
            item = getattr(value, "item", None)
            if callable(item) and getattr(value, "ndim", None) == 0:
                stack.append((item(), depth, path))
                continue
            if getattr(value, "dtype", None) is not None and hasattr(value, "nbytes"):
                if value.dtype.kind in "fc" and not bool(__import__("numpy").isfinite(value).all()):
                    raise InvalidArgumentError(
                        f"record {record!r}: metadata key {path!r} holds NaN or infinity, which cannot be stored")
                size += 9 + int(value.nbytes)
            else:
                size += 16
        if size > MAX_METADATA_BYTES:
            raise InvalidArgumentError(
                f"record {record!r}: metadata larger than {MAX_METADATA_BYTES // 1024} KiB encoded")


def check_id(value: Any) -> str:
    """An id is a non-empty ``str`` of at most 512 bytes of UTF-8."""
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"ids must be non-empty strings, got {value!r:.80}")
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"id {value!r:.80} is not valid Unicode (lone surrogate)") from None
    if n > MAX_ID_BYTES:
        raise InvalidArgumentError(f"id {value[:40]!r}... is {n} bytes of UTF-8 (at most {MAX_ID_BYTES})")
    return value


def check_request(args: Any) -> None:
    """Raise :class:`InvalidArgumentError` if worker-protocol ``args`` nest too deep or are too big.

    A too-deep ``args["filter"]`` is reported as the :class:`FilterError` that parsing it would
    give, so a caller sees the same error on every runtime.  Sizes are estimates of the JSON size
    (buffers by their byte length); the walk stops at the first limit crossed, so its cost is
    bounded by the limits, not by the input."""
    stack: list[tuple[Any, int, bool]] = [(args, 1, False)]
    size = 0
    while stack:
        value, depth, in_filter = stack.pop()
        if isinstance(value, str):
            size += len(value) + 2
        elif isinstance(value, (bytes, bytearray)):
            size += len(value)
        elif isinstance(value, memoryview):
            size += value.nbytes
        elif isinstance(value, (Mapping, list, tuple)):
            if depth > MAX_REQUEST_DEPTH:
                if in_filter:
                    raise FilterError(f"filter nested too deeply (more than {MAX_FILTER_DEPTH} levels)")
                raise InvalidArgumentError(f"request nested too deeply (more than {MAX_REQUEST_DEPTH} levels)")
            size += 2 + len(value)
            if isinstance(value, Mapping):
                for k, v in value.items():
                    size += len(k) + 3 if isinstance(k, str) else 8
                    stack.append((v, depth + 1, in_filter or (depth == 1 and k == "filter")))
            else:
                stack.extend((v, depth + 1, in_filter) for v in value)
        else:
            size += 8
        if size > MAX_REQUEST_BYTES:
            raise InvalidArgumentError(f"request too large (more than {MAX_REQUEST_BYTES // 2**20} MiB)")
