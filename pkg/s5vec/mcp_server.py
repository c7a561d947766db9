"""``s5vec mcp``: an MCP server over one S5 index, so AI agents can search the catalogue.

Built on the official ``mcp`` SDK (``MCPServer``, formerly FastMCP) and on the same
:class:`~s5vec.serve.engine.Engine` the HTTP API uses, so both answer a query identically.
Named ``mcp_server`` so it never shadows the SDK's ``mcp`` package.

Tools (inputs are JSON-schema'd from the type hints; results are structured ``{hits: [{id,
score, metadata}]}`` plus a short text rendering): ``search_videos`` (text), ``similar_videos``,
``get_video``, ``index_info``; with ``--allow-writes`` and a token also ``add_videos``,
``delete_videos``, ``commit``. Resources: ``s5vec://index/manifest`` and ``s5vec://index/stats``.
A bad argument or an s5vec error comes back as an MCP tool error (``isError``), never a crash.

Writes and the token: over stdio the server is the caller's own child process, so holding the
token is checked when it starts (``--allow-writes`` refuses to start without one); over HTTP
every request must carry ``Authorization: Bearer <token>`` when writes are allowed.
"""
from __future__ import annotations

import hmac
import json
from typing import Annotated, Any, Awaitable, Sequence

from pydantic import BaseModel, Field

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent

from .errors import S5VecError
from .rpc import _json_default
from .serve.engine import Engine


class Hit(BaseModel):
    id: str
    score: float = Field(description="similarity, higher is better")
    metadata: dict[str, Any]


class SearchResult(BaseModel):
    hits: list[Hit]


class Video(BaseModel):
    id: str
    metadata: dict[str, Any]
    timestamp: float | None = Field(None, description="upload time, Unix seconds")


class IndexInfo(BaseModel):
    kind: str
    spec: str | None = None
    dim: int
    metric: str
    count: int
    manifest: str = Field(description="manifest CID of the open snapshot")
    parent: str | None = None


class WriteResult(BaseModel):
    count: int = Field(description="records in the index after the write")
    changed: int = Field(description="records added, replaced or deleted")


class CommitResult(BaseModel):
    manifest: str = Field(description="the new manifest CID")
    parent: str
    uploaded: int
    count: int


K = Annotated[int, Field(ge=1, le=100, description="how many results")]
FILTER = Annotated[dict[str, Any] | None, Field(
    description='metadata filter, e.g. {"channel": "cooking-hub"} or {"uploaded_ts": {"$gte": 1.7e9}}; '
                "operators $eq $ne $in $nin $gt $gte $lt $lte $and $or")]


def render_hits(hits: Sequence[dict[str, Any]]) -> str:
    """A few lines a person (or a model) can read: rank, id, score, title and channel if present."""
    if not hits:
        return "no results"
    lines = []
    for n, h in enumerate(hits, 1):
        m = h.get("metadata") or {}
        extra = " · ".join(str(m[key]) for key in ("title", "channel") if key in m)
        lines.append(f"{n}. {h['id']} ({h['score']:.3f}){' ' + extra if extra else ''}")
    return "\n".join(lines)


def _result(model: BaseModel, text: str) -> CallToolResult:
    data = json.loads(json.dumps(model.model_dump(mode="json"), default=_json_default))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _hits(raw: dict[str, Any]) -> SearchResult:
    return SearchResult(hits=[Hit(id=h["id"], score=h["score"], metadata=_plain(h.get("metadata") or {}))
                              for h in raw["hits"]])


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata as JSON types (CBOR allows bytes and datetimes)."""
    return json.loads(json.dumps(meta, default=_json_default))


def _tool_error(exc: S5VecError) -> ToolError:
    return ToolError(f"{exc.name}: {exc}")


async def _engine_call(pending: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Await one engine call; an s5vec error becomes the MCP tool error the client sees (no traceback)."""
    try:
        return await pending
    except S5VecError as exc:
        raise _tool_error(exc) from None


def build_server(engine: Engine, *, allow_writes: bool = False) -> MCPServer:
    """The MCP server over ``engine`` (already open)."""
    info0 = engine.db.info()
    server = MCPServer(
        name="s5vec",
        instructions=(f"Semantic search over a catalogue of {info0['count']} videos stored on S5 "
                      f"({info0['kind']} index, {info0['dim']}-d). Use search_videos for a text query, "
                      "similar_videos for 'more like this video', get_video for one video's metadata."),
    )

    @server.tool(description="Search the videos by a text query; best matches first.")
    async def search_videos(query: Annotated[str, Field(min_length=1, description="what to look for")],
                            k: K = 10, filter: FILTER = None) -> Annotated[CallToolResult, SearchResult]:
        raw = await _engine_call(engine.search({"text": query, "k": k, "filter": filter}))
        res = _hits(raw)
        return _result(res, render_hits(raw["hits"]))

    @server.tool(description="Videos most similar to the video `id` (the video itself left out).")
    async def similar_videos(id: Annotated[str, Field(min_length=1, description="a video id")],
                             k: K = 10, filter: FILTER = None) -> Annotated[CallToolResult, SearchResult]:
        raw = await _engine_call(engine.similar(id, k, filter))
        return _result(_hits(raw), render_hits(raw["hits"]))

    @server.tool(description="One video's metadata and upload time.")
    async def get_video(id: Annotated[str, Field(min_length=1, description="a video id")]
                        ) -> Annotated[CallToolResult, Video]:
        rec = await _engine_call(engine.get(id))
        video = Video(id=rec["id"], metadata=_plain(rec["metadata"]), timestamp=rec.get("timestamp"))
        m = video.metadata
        text = f"{video.id}: " + ", ".join(f"{k}={v}" for k, v in list(m.items())[:8])
        return _result(video, text)

    @server.tool(description="What the index is: kind, dimension, metric, record count, manifest CID.")
    async def index_info() -> Annotated[CallToolResult, IndexInfo]:
        i = IndexInfo(**await engine.info())
        return _result(i, f"{i.count} records, {i.kind} ({i.spec}), {i.dim}-d {i.metric}; manifest {i.manifest}")

    @server.resource("s5vec://index/manifest", name="manifest", mime_type="application/json",
                     description="the decoded manifest of the open index snapshot")
    async def manifest_resource() -> str:
        return json.dumps(engine.manifest(), default=_json_default)

    @server.resource("s5vec://index/stats", name="stats", mime_type="application/json",
                     description="queries served, latency p50/p99, bytes fetched, cache use")
    async def stats_resource() -> str:
        return json.dumps(await engine.stats(), default=_json_default)

    if allow_writes:
        _add_write_tools(server, engine)
    return server


class NewVideo(BaseModel):
    id: str = Field(min_length=1)
    vector: list[float] = Field(description="embedding, as many numbers as the index dimension (index_info)")
    metadata: dict[str, Any] = Field(default_factory=dict)
    timestamp: float | None = Field(None, description="upload time, Unix seconds")


def _add_write_tools(server: MCPServer, engine: Engine) -> None:
    @server.tool(description="Add or replace videos (all or none). Publish with commit.")
    async def add_videos(videos: Annotated[list[NewVideo], Field(min_length=1)]
                         ) -> Annotated[CallToolResult, WriteResult]:
        records = [v.model_dump(exclude_none=True) for v in videos]
        res = await _engine_call(engine.upsert(records))
        out = WriteResult(count=res["count"], changed=res["upserted"])
        return _result(out, f"added or replaced {out.changed} videos; {out.count} in the index")

    @server.tool(description="Delete videos by id (all or none: an unknown id changes nothing). Publish with commit.")
    async def delete_videos(ids: Annotated[list[str], Field(min_length=1)]) -> Annotated[CallToolResult, WriteResult]:
        res = await _engine_call(engine.delete(ids))
        out = WriteResult(count=res["count"], changed=res["deleted"])
        return _result(out, f"deleted {out.changed} videos; {out.count} in the index")

    @server.tool(description="Publish the edits as a new snapshot on S5; returns its manifest CID.")
    async def commit() -> Annotated[CallToolResult, CommitResult]:
        res = await _engine_call(engine.commit())
        out = CommitResult(manifest=res["manifest"], parent=res["parent"], uploaded=res["uploaded"],
                           count=res["count"])
        return _result(out, f"committed {out.count} records as {out.manifest} (uploaded {out.uploaded} chunks)")


class BearerGate:
    """ASGI middleware: every request needs ``Authorization: Bearer <token>`` (constant-time compare)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            auth = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                body = json.dumps({"error": {"name": "UnauthorizedError",
                                             "message": "this MCP server allows writes: send the bearer token"}})
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


def run_mcp(cid: str | None, portals: Sequence[str], *, transport: str = "stdio", allow_writes: bool = False,
            token: str | None = None, host: str = "127.0.0.1", port: int = 8001,
            cache_bytes: int = 256 * 2**20, timeout: float = 30.0, pointer: str | None = None,
            pointer_key: str | None = None, portal_token: str | None = None) -> None:
    """Open the index, then serve MCP over stdio or streamable HTTP (at ``/mcp``) until stopped."""
    import sys

    import anyio

    from .errors import InvalidArgumentError

    if allow_writes and not token:
        raise InvalidArgumentError("--allow-writes needs a token")
    ptr = None
    if pointer or pointer_key:
        from .serve.pointer import Pointer

        ptr = Pointer(pointer, portals, key_path=pointer_key, auth_token=portal_token, timeout=timeout)
    if (cid is None) == (ptr is None):
        raise InvalidArgumentError("give either a manifest CID or --pointer/--pointer-key")

    async def main() -> None:
        engine = await Engine.open(cid, portals, cache_bytes=cache_bytes, timeout=timeout, pointer=ptr,
                                   portal_token=portal_token)
        try:
            server = build_server(engine, allow_writes=allow_writes)
            if transport == "stdio":
                await server.run_stdio_async()
                return
            import uvicorn

            app: Any = server.streamable_http_app(host=host)
            if allow_writes:
                app = BearerGate(app, token or "")
            config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
            userver = uvicorn.Server(config)
            print(f"s5vec mcp listening on http://{host}:{port}/mcp", file=sys.stderr, flush=True)
            await userver.serve()
        finally:
            engine.close()

    anyio.run(main)
