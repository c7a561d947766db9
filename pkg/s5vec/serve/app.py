"""The HTTP API (``s5vec serve``): Starlette routes over one :class:`~.engine.Engine`, under ``/v1``.

Contract: reads are open, writes need ``Authorization: Bearer <token>`` (compared in constant
time); every error is ``{"error": {"name", "message"}}`` with the status of :data:`STATUS`,
names as in :mod:`s5vec.errors` (the bridge uses the same); a body over ``max_body`` bytes is
refused with 413 while it streams in, before any parsing; long operations (commit, migrate,
big upserts) stream progress as server-sent events when asked (``Accept: text/event-stream``
or ``?stream=1``). The OpenAPI description is built from the same route table (:mod:`.openapi`).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import errors
from ..errors import (ForbiddenError, InvalidArgumentError, PayloadTooLargeError, S5VecError,
                      UnauthorizedError)
from ..rpc import _json_default
from . import openapi
from .engine import Engine

log = logging.getLogger("s5vec.serve")

#: default request body limit; a batch of ~4,000 384-d records in JSON fits
DEFAULT_MAX_BODY = 32 * 2**20
#: a refused body is still read (and dropped) up to this many bytes, so the client gets its 413
#: instead of a reset connection; beyond it the connection is closed
DRAIN_LIMIT = 256 * 2**20

#: HTTP status per error name (by name, so errors other branches add map without an import)
STATUS: dict[str, int] = {
    "InvalidArgumentError": 400, "InvalidVectorError": 400, "DimensionError": 400, "FilterError": 400,
    "CIDError": 400, "NotSupportedError": 400,
    "UnauthorizedError": 401, "ForbiddenError": 403,
    "UnknownIdError": 404, "NotFoundError": 404, "RouteNotFoundError": 404,
    "MethodNotAllowedError": 405,
    "StaleRevisionError": 409, "RevisionError": 409, "ConflictError": 409,
    "PayloadTooLargeError": 413,
    "PortalError": 502, "IntegrityError": 502, "FormatError": 502,
    "ClosedError": 503, "NotReadyError": 503,
}


def status_of(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls.__name__ in STATUS:
            return STATUS[cls.__name__]
    return 500


def error_response(name: str, message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"name": name, "message": message}}, status_code=status, headers=headers)


class JSON(JSONResponse):
    """JSON that tolerates what CBOR metadata may hold (bytes as hex, datetimes as ISO strings)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_json_default, separators=(",", ":"), ensure_ascii=False).encode()


class ServerState:
    """What the routes share: the engine (None until the index is open), the token, the limits."""

    def __init__(self, token: str | None, max_body: int) -> None:
        self.engine: Engine | None = None
        self.open_error: BaseException | None = None
        self.token = token
        self.max_body = max_body

    def ready(self) -> Engine:
        if self.engine is None:
            if self.open_error is not None:
                raise errors.ClosedError(f"the index could not be opened: {self.open_error}")
            raise NotReadyError("the index is still opening")
        return self.engine


class NotReadyError(S5VecError):
    """The server is up but its index is not open yet (readiness)."""


# -- request helpers ---------------------------------------------------------------------
async def read_json(request: Request, state: ServerState) -> Any:
    """The JSON body, refused with 413 beyond ``max_body`` bytes while it streams in."""
    limit = state.max_body
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidArgumentError("bad Content-Length header")
        if int(declared) > limit:
            await _drain(request)
            raise PayloadTooLargeError(f"request body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await _drain(request, size)
            raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise InvalidArgumentError("request body is empty; expected a JSON object")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgumentError("request body is nested too deeply") from None


async def _drain(request: Request, seen: int = 0) -> None:
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                return
    except Exception:  # the client went away: nothing left to drain
        return


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgumentError(f"{what} body must be a JSON object")
    return body


def require_writer(request: Request, state: ServerState) -> None:
    """Writes need the configured bearer token; compared with :func:`hmac.compare_digest`."""
    if state.token is None:
        raise ForbiddenError("this server is read-only: start it with --auth-token-file to allow writes")
    auth = request.headers.get("authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError("writes need an 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(given.strip().encode(), state.token.encode()):
        raise UnauthorizedError("the bearer token is not valid")


def wants_stream(request: Request) -> bool:
    return (request.query_params.get("stream") in ("1", "true", "yes")
            or "text/event-stream" in request.headers.get("accept", ""))


def stream_job(job: Callable[[Callable[[dict[str, Any]], None]], Awaitable[Any]]) -> Response:
    """Run ``job(progress)`` and answer as server-sent events: ``progress`` events, then one
    ``result`` (the JSON a non-streaming call returns) or ``error`` (``{"error": {...}}``)."""
    from sse_starlette.sse import EventSourceResponse

    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def run() -> None:
        try:
            result = await job(lambda ev: queue.put_nowait(("progress", ev)))
            queue.put_nowait(("result", result))
        except Exception as exc:  # reported in-band: the 200 status is already sent
            queue.put_nowait(("error", _error_body(exc)))

    async def events() -> AsyncIterator[dict[str, str]]:
        # the job is its own task: a client that leaves does not cancel a write half-way
        task = asyncio.ensure_future(run())
        _RUNNING.add(task)
        task.add_done_callback(_RUNNING.discard)
        while True:
            kind, data = await queue.get()
            yield {"event": kind, "data": json.dumps(data, default=_json_default)}
            if kind != "progress":
                return

    return EventSourceResponse(events(), ping=10)


_RUNNING: set[asyncio.Future[Any]] = set()


def _error_body(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, S5VecError):
        return {"error": {"name": exc.name, "message": str(exc)}}
    return {"error": {"name": "InternalError", "message": f"{type(exc).__name__}: {exc}"}}


# -- routes ---------------------------------------------------------------------------------
def _state(request: Request) -> ServerState:
    return request.app.state.s5vec


async def health(request: Request) -> Response:
    state = _state(request)
    if state.engine is not None:
        return JSON({"status": "ready", "manifest": state.engine.db.cid})
    if state.open_error is not None:
        return JSON({"status": "failed", "error": _error_body(state.open_error)["error"]}, status_code=503)
    return JSON({"status": "starting"}, status_code=503)


async def info(request: Request) -> Response:
    return JSON(await _state(request).ready().info())


async def stats(request: Request) -> Response:
    return JSON(await _state(request).ready().stats())


async def search(request: Request) -> Response:
    state = _state(request)
    engine = state.ready()
    body = _object(await read_json(request, state), "search")
    return JSON(await engine.search(body))


async def search_batch(request: Request) -> Response:
    state = _state(request)
    engine = state.ready()
    body = _object(await read_json(request, state), "batch search")
    return JSON(await engine.search_batch(body))


async def get_record(request: Request) -> Response:
    engine = _state(request).ready()
    want_vec = request.query_params.get("vector") in ("1", "true", "yes")
    return JSON(await engine.get(request.path_params["id"], vector=want_vec))


async def similar(request: Request) -> Response:
    state = _state(request)
    engine = state.ready()
    has_body = request.headers.get("content-length") not in (None, "0") or "transfer-encoding" in request.headers
    body = await read_json(request, state) if has_body else {}
    body = _object(body, "similar")
    unknown = set(body) - {"k", "filter", "params"}
    if unknown:
        raise InvalidArgumentError(f"unknown field(s) {sorted(unknown)}; accepted: k, filter, params")
    return JSON(await engine.similar(request.path_params["id"], body.get("k", 10), body.get("filter"),
                                     body.get("params")))


async def upsert(request: Request) -> Response:
    state = _state(request)
    engine = state.ready()
    require_writer(request, state)
    body = await read_json(request, state)
    records = body.get("records") if isinstance(body, dict) else body
    if wants_stream(request):
        # validate before the 200 of the stream is sent, so bad input still gets its status
        records = await engine._run(engine._check_records, records)
        return stream_job(lambda progress: engine.upsert(records, progress))
    return JSON(await engine.upsert(records))


async def delete_record(request: Request) -> Response:
    state = _state(request)
    engine = state.ready()
    require_writer(request, state)
    return JSON(await engine.delete([request.path_params["id"]]))


async def delete_records(request: Request) -> Response:
    state = _state(request)
    engine = state.ready()
    require_writer(request, state)
    body = _object(await read_json(request, state), "delete")
    return JSON(await engine.delete(body.get("ids")))


async def _writer_job(request: Request, job: Callable[[Engine], Callable[..., Awaitable[Any]]]) -> Response:
    """A writer's long job on the engine (commit, migrate): server-sent progress if the client
    asks for a stream, else one JSON answer when it is done."""
    state = _state(request)
    engine = state.ready()
    require_writer(request, state)
    if wants_stream(request):
        return stream_job(job(engine))
    return JSON(await job(engine)())


async def commit(request: Request) -> Response:
    return await _writer_job(request, lambda engine: engine.commit)


async def migrate(request: Request) -> Response:
    return await _writer_job(request, lambda engine: engine.migrate)


async def manifest(request: Request) -> Response:
    return JSON(_state(request).ready().manifest(), media_type="application/json")


async def openapi_json(request: Request) -> Response:
    return JSON(openapi.document(ROUTES))


#: (method, path, endpoint, operation id) -- the one route table; the OpenAPI document reads it too
ROUTES: list[tuple[str, str, Callable[[Request], Awaitable[Response]], str]] = [
    ("GET", "/v1/health", health, "health"),
    ("GET", "/v1/info", info, "info"),
    ("GET", "/v1/stats", stats, "stats"),
    ("GET", "/v1/manifest", manifest, "manifest"),
    ("POST", "/v1/search", search, "search"),
    ("POST", "/v1/search/batch", search_batch, "searchBatch"),
    ("GET", "/v1/records/{id:path}", get_record, "getRecord"),
    ("POST", "/v1/records/{id:path}/similar", similar, "similar"),
    ("POST", "/v1/records", upsert, "upsert"),
    ("DELETE", "/v1/records/{id:path}", delete_record, "deleteRecord"),
    ("POST", "/v1/records/delete", delete_records, "deleteRecords"),
    ("POST", "/v1/commit", commit, "commit"),
    ("POST", "/v1/migrate", migrate, "migrate"),
    ("GET", "/v1/openapi.json", openapi_json, "openapi"),
]


# -- errors ------------------------------------------------------------------------------------
async def _s5vec_error(request: Request, exc: Exception) -> Response:
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    name = exc.name if isinstance(exc, S5VecError) else type(exc).__name__
    return error_response(name, str(exc), status, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    name = {404: "RouteNotFoundError", 405: "MethodNotAllowedError"}.get(exc.status_code, "HTTPError")
    msg = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
    return error_response(name, msg, exc.status_code, getattr(exc, "headers", None))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return error_response("InternalError", f"{type(exc).__name__}: {exc}", 500)


# -- the application --------------------------------------------------------------------------
def create_app(opener: Callable[[], Awaitable[Engine]] | Engine, *, token: str | None = None,
               max_body: int = DEFAULT_MAX_BODY, cors_origins: Sequence[str] = ()) -> Starlette:
    """The ASGI app. ``opener`` opens the index at start-up (health turns ready when it has);
    an :class:`Engine` already open is used as is."""
    if token is not None and not token.strip():
        raise InvalidArgumentError("the auth token is empty")
    state = ServerState(token.strip() if token else None, max_body)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opening = None
        if isinstance(opener, Engine):
            state.engine = opener
        else:
            async def open_index() -> None:
                try:
                    state.engine = await opener()
                    log.info("index open: %s", state.engine.db.cid)
                except Exception as exc:  # reported by /v1/health and every route
                    state.open_error = exc
                    log.error("could not open the index: %s", exc)
            opening = asyncio.ensure_future(open_index())
        try:
            yield
        finally:
            if opening is not None and not opening.done():
                opening.cancel()
            if state.engine is not None:
                state.engine.close()

    middleware = []
    if cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors_origins),
                                     allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                                     allow_headers=["Authorization", "Content-Type", "Accept"]))
    app = Starlette(
        routes=[Route(path, fn, methods=[method], name=op) for method, path, fn, op in ROUTES],
        middleware=middleware,
        exception_handlers={S5VecError: _s5vec_error, HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.s5vec = state
    return app
