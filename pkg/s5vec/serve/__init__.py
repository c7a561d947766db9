"""``s5vec serve``: the HTTP API over one S5 index (Starlette on uvicorn).

:mod:`.engine` owns the opened index (one index thread, a write lock, counters) and is shared
with the MCP server; :mod:`.app` holds the routes, errors, auth and limits; :mod:`.openapi` the
description served at ``/v1/openapi.json``.
"""
from __future__ import annotations

import asyncio
import socket
import sys
from typing import Sequence

from .app import DEFAULT_MAX_BODY, create_app
from .engine import Engine

__all__ = ["Engine", "create_app", "run_server", "DEFAULT_MAX_BODY"]


def run_server(cid: str, portals: Sequence[str], *, host: str = "127.0.0.1", port: int = 8000,
               token: str | None = None, cors_origins: Sequence[str] = (), max_body: int = DEFAULT_MAX_BODY,
               cache_bytes: int = 64 * 2**20, timeout: float = 15.0, log_level: str = "warning") -> None:
    """Serve until interrupted. Prints ``s5vec serve listening on URL`` once the socket is bound
    (port 0 picks a free one); ``GET /v1/health`` turns ready when the index is open."""
    import uvicorn

    from ..api import make_store

    make_store(portals)  # bad portal URLs fail here, before anything listens

    async def opener() -> Engine:
        return await Engine.open(cid, portals, cache_bytes=cache_bytes, timeout=timeout)

    app = create_app(opener, token=token, max_body=max_body, cors_origins=cors_origins)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn writes a response's head and body separately: without TCP_NODELAY (inherited by
    # accepted sockets on Linux) Nagle holds the body back for the client's delayed ACK, ~40 ms
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, backlog=2048)
    server = uvicorn.Server(config)
    print(f"s5vec serve listening on http://{shown}:{bound}", flush=True)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        sys.stdout.flush()
