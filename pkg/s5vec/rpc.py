"""The worker protocol, Python side: one ``handle(op, args)`` the worker awaits for every message.

It never raises: every outcome is a JSON string, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"name", "message"}}``, so a bad request can never kill the worker.
Errors raised on purpose keep their class name (``DimensionError``, ``IntegrityError``...);
anything else is reported as ``InternalError`` with its type and message.

The op names come from ``protocol.json`` (shipped in this package and copied into the browser
bundle, where the bridge and the worker read the same file); :data:`OPS` must serve exactly
those, which is checked when this module is imported. Only the *shape* of a request is checked
here (args is an object, handle is an int); the query itself (vector, k, filter, params) is
validated once, by :mod:`s5vec.api`. Before any op sees them, args are checked against
:func:`s5vec.limits.check_request` (depth and size; web/protocol.js applies the same rule page-side).
"""
from __future__ import annotations

import json
import platform
import sys
from importlib import resources
from typing import Any, Awaitable, Callable

from . import limits
from .errors import ClosedError, IntegrityError, InvalidArgumentError, S5VecError

PROTOCOL: dict[str, Any] = json.loads(resources.files(__package__).joinpath("protocol.json").read_text("utf-8"))

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
OPS: dict[str, Handler] = {}

_dbs: dict[int, Any] = {}
_closed: set[int] = set()  # tombstones: a call on a closed handle gets ClosedError, not "no such handle"
_stores: dict[Any, Any] = {}  # (portal list, token) -> ChunkStore shared by every database opened on it
_next_handle = 1


def op(name: str) -> Callable[[Handler], Handler]:
    """Register the handler of op ``name`` (which must be listed in protocol.json)."""
    if name not in PROTOCOL["ops"]:
        raise RuntimeError(f"rpc op {name!r} is not in protocol.json")

    def register(fn: Handler) -> Handler:
        OPS[name] = fn
        return fn
    return register


def _to_py(value: Any) -> Any:
    """Convert a JsProxy (Pyodide) into Python objects; plain Python passes through."""
    to_py = getattr(value, "to_py", None)
    return to_py() if callable(to_py) else value


def _arg(args: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    """A protocol-level argument of the right JSON type (bool is not an int here)."""
    if args.get(name) is None:
        if default is ...:
            raise InvalidArgumentError(f"missing argument {name!r}")
        return default
    value = args[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidArgumentError(f"argument {name!r} has the wrong type ({type(value).__name__})")
    return value


def _db(args: dict[str, Any]) -> Any:
    handle = _arg(args, "handle", int)
    if handle in _closed:
        raise ClosedError(f"database {handle} is closed")
    if handle not in _dbs:
        raise InvalidArgumentError(f"no open database with handle {handle}")
    return _dbs[handle]


@op("version")
async def _version(args: dict[str, Any]) -> dict[str, Any]:
    import numpy

    from . import __version__

    return {"s5vec": __version__, "numpy": numpy.__version__, "python": platform.python_version(),
            "platform": sys.platform, "ops": list(OPS)}


@op("open")
async def _open(args: dict[str, Any]) -> dict[str, Any]:
    global _next_handle
    from .api import Database, make_store

    cid = _arg(args, "manifest", str)
    portals = _arg(args, "portals", list)
    cache = _arg(args, "cacheBytes", int, None)  # None: sized from the manifest (api.cache_bytes_for)
    token = _arg(args, "authToken", str, None)
    # one verified-chunk cache per portal list (and upload token) for the whole worker session: opening
    # an index again (or another index sharing chunks, e.g. the same model) downloads nothing already verified
    key = (tuple(portals), token) if all(isinstance(p, str) for p in portals) else None
    store = _stores.get(key) if key is not None else None
    if store is None:
        store = make_store(portals, cache_bytes=cache or 64 * 2**20, timeout=_timeout(args), auth_token=token)
        _stores[key] = store
    before = store.snapshot()
    try:
        db = await Database.open_async(cid, store=store, cache_bytes=cache)
    except IntegrityError:
        # the store's client remembers which portal served bad bytes for which blob; forget it so
        # that a later open, after the portal is repaired, starts clean (verified bytes are refetched)
        _stores.pop(key, None)
        raise
    if cache is None:
        from .api import cache_bytes_for

        # the session store serves every open index: big enough for the biggest, plus what every
        # open index keeps (their decoded eager chunks, counted as the store holds them)
        store.cache_limit = max(store.cache_limit, cache_bytes_for(db.manifest, store.stats()["resident_bytes"]))
    # what this open fetched: the store (and its counters) is shared by every index opened on these
    # portals in this worker, so stats() after a second open counts the first one's traffic too
    fetched = store.diff(before)
    handle, _next_handle = _next_handle, _next_handle + 1
    _dbs[handle] = db
    opened = {"bytesFetched": fetched["bytes_fetched"], "chunksFetched": fetched["chunks_fetched"]}
    return {"handle": handle, "info": db.info(), "opened": opened}


def _timeout(args: dict[str, Any]) -> float:
    """The per-blob deadline in seconds: ``timeoutMs`` (as the bridge sends it) or ``timeout`` (s)."""
    ms = _arg(args, "timeoutMs", (int, float), None)
    sec = float(ms) / 1000 if ms is not None else float(_arg(args, "timeout", (int, float), 15.0))
    if not 0 < sec <= 3600:  # also rejects NaN
        raise InvalidArgumentError(f"timeout must be between 1 ms and 1 hour, got {ms if ms is not None else sec!r}")
    return sec


@op("search")
async def _search(args: dict[str, Any]) -> dict[str, Any]:
    db = _db(args)
    if "vector" not in args:
        raise InvalidArgumentError("missing argument 'vector'")
    k = args.get("k")
    return await db.search_async(args["vector"], 10 if k is None else k, args.get("filter"), args.get("params"))


@op("searchBatch")
async def _search_batch(args: dict[str, Any]) -> dict[str, Any]:
    """``{handle, vectors, count?, k?, filter?, params?} -> {results: [hits per query], stats}``.

    ``vectors``: a list of vectors (arrays of numbers or Float32Arrays), or one flat
    Float32Array of ``count`` vectors back to back (the bridge's form: one transfer)."""
    import numpy as np

    db = _db(args)
    if "vectors" not in args:
        raise InvalidArgumentError("missing argument 'vectors'")
    vectors = args["vectors"]
    if isinstance(vectors, (memoryview, bytes, bytearray)):
        count = _arg(args, "count", int)
        flat = np.frombuffer(vectors, dtype=np.float32) if not isinstance(vectors, memoryview) or \
            vectors.format in ("f", "<f") else np.asarray(vectors, dtype=np.float32)
        if count < 1 or flat.shape[0] != count * db.index.dim:
            raise InvalidArgumentError(f"vectors holds {flat.shape[0]} numbers, expected count x dim = "
                                       f"{count} x {db.index.dim}")
        vectors = flat.reshape(count, db.index.dim)
    k = args.get("k")
    return await db.search_batch_async(vectors, 10 if k is None else k, args.get("filter"), args.get("params"))


@op("searchText")
async def _search_text(args: dict[str, Any]) -> dict[str, Any]:
    db = _db(args)
    if "text" not in args:
        raise InvalidArgumentError("missing argument 'text'")
    k, mode = args.get("k"), args.get("mode")
    return await db.search_text_async(args["text"], 10 if k is None else k, args.get("filter"),
                                      "hybrid" if mode is None else mode, args.get("params"))


@op("get")
async def _get(args: dict[str, Any]) -> dict[str, Any]:
    db = _db(args)
    if "id" not in args:
        raise InvalidArgumentError("missing argument 'id'")
    return await db.get_async(args["id"])


@op("stats")
async def _stats(args: dict[str, Any]) -> dict[str, Any]:
    out = _db(args).stats()
    mem = _wasm_memory_bytes()
    if mem is not None:  # the tab's memory for this worker (Pyodide's wasm heap; it only grows)
        out["wasmMemoryBytes"] = mem
    stack = _wasm_stack_free_bytes()
    if stack is not None:  # the C stack left below this call: constant from call to call unless it leaks
        out["wasmStackFreeBytes"] = stack
    return out


def _wasm_memory_bytes() -> int | None:
    """Size of Pyodide's WebAssembly memory (None outside Pyodide): what the worker holds, as
    ``performance.measureUserAgentSpecificMemory`` needs cross-origin isolation."""
    try:
        import pyodide_js  # type: ignore[import-not-found]

        return int(pyodide_js._module.HEAPU8.buffer.byteLength)
    except Exception:
        return None


def _wasm_stack_free_bytes() -> int | None:
    """Bytes of Pyodide's C stack (5 MiB in 0.27) still free at this point of a call (None outside
    Pyodide). Measured at the same call depth every time, it must not shrink from one request to
    the next: a drift is a stack-pointer leak, and when the stack runs into the static data below
    it the worker dies ("table index is out of bounds"; see worker.js, which turns off JSPI)."""
    try:
        import pyodide_js  # type: ignore[import-not-found]

        return int(pyodide_js._module._emscripten_stack_get_free())
    except Exception:
        return None


@op("close")
async def _close(args: dict[str, Any]) -> dict[str, Any]:
    handle = _arg(args, "handle", int)
    if handle in _closed:
        return {}  # closing twice is harmless
    _db(args).close()
    del _dbs[handle]
    _closed.add(handle)
    return {}


@op("upsert")
async def _upsert(args: dict[str, Any]) -> dict[str, Any]:
    db = _db(args)
    records = _arg(args, "records", list)
    count = await db.upsert_async(records)
    return {"count": count, "info": db.info()}


@op("delete")
async def _delete(args: dict[str, Any]) -> dict[str, Any]:
    db = _db(args)
    ids = _arg(args, "ids", list)
    count = await db.delete_async(ids)
    return {"count": count, "info": db.info()}


@op("commit")
async def _commit(args: dict[str, Any]) -> dict[str, Any]:
    """Commit the edits as a new snapshot; ``progress`` (a JS function the worker adds) gets
    upload progress as JSON; ``authToken`` replaces the token given at open."""
    db = _db(args)
    token = _arg(args, "authToken", str, None)
    if token is not None:
        db.store.client.auth_token = token
    progress = args.get("progress")
    report = (lambda ev: progress(json.dumps(ev))) if callable(progress) else None
    result = await db.commit_async(progress=report)
    return {**result, "info": db.info()}


@op("chunks")
async def _chunks(args: dict[str, Any]) -> dict[str, Any]:
    """Every blob of the open snapshot (manifest first): what ``db.pin()`` keeps offline.

    With a text model (named in the manifest's extra, not in its chunk list) its model, vocabulary
    and row chunks are listed too: text search offline embeds with any of them; so are the chunks
    the index names itself and has not made resident (``plan_all``: the lazy HNSW base layer)."""
    db = _db(args)
    blobs = [db.cid] + [c["cid"] for c in db.manifest["chunks"]]
    plan_all = getattr(db.index, "plan_all", None)  # chunks not in the manifest (a lazy HNSW base layer)
    if plan_all is not None:
        blobs += plan_all()
    model = getattr(db, "model", None)
    if model is not None:
        blobs += [model.cid, str(model.head["vocab"])] + [model.row_cid(c) for c in range(model.row_count)]
    return {"manifest": db.cid, "chunks": list(dict.fromkeys(blobs))}


if set(OPS) != set(PROTOCOL["ops"]):
    raise RuntimeError(f"protocol.json lists ops {sorted(PROTOCOL['ops'])} but rpc serves {sorted(OPS)}")


async def handle(op: Any, args: Any = None) -> str:
    try:
        op = _to_py(op)
        args = _to_py(args) if args is not None else {}
        if not isinstance(args, dict):
            raise InvalidArgumentError("request arguments must be an object")
        limits.check_request(args)
        fn = OPS.get(op) if isinstance(op, str) else None
        if fn is None:
            raise InvalidArgumentError(f"unknown op {op!r}; the accepted ops are {', '.join(OPS)}")
        result = await fn(args)
        try:
            return json.dumps({"ok": True, "result": result}, default=_json_default, allow_nan=False)
        except ValueError:  # NaN/Infinity (metadata published before they were rejected): JSON null
            return json.dumps({"ok": True, "result": _finite(result)}, default=_json_default, allow_nan=False)
    except S5VecError as exc:
        return _error(exc.name, str(exc))
    except Exception as exc:  # the worker must survive anything
        return _error("InternalError", f"{type(exc).__name__}: {exc}")


def _error(name: str, message: str) -> str:
    return json.dumps({"ok": False, "error": {"name": name, "message": message}})


def _finite(value: Any) -> Any:
    """``value`` with every NaN/Infinity float replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    """Metadata is CBOR-able, which is wider than JSON: bytes as hex, datetimes as ISO, NumPy as lists."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
