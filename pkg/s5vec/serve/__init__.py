"""``s5vec serve``: the HTTP API over one S5 index (Starlette on uvicorn).

:mod:`.engine` owns the opened index (one index thread, a write lock, counters) and is shared
with the MCP server; :mod:`.app` holds the routes, errors, auth and limits; :mod:`.openapi` the
description served at ``/v1/openapi.json``.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from typing import Awaitable, Callable, Sequence

from .app import DEFAULT_MAX_BODY, create_app
from .engine import Engine

__all__ = ["Engine", "create_app", "run_server", "DEFAULT_MAX_BODY"]


def run_server(cid: str | None, portals: Sequence[str], *, host: str = "127.0.0.1", port: int = 8000,
               token: str | None = None, cors_origins: Sequence[str] = (), max_body: int = DEFAULT_MAX_BODY,
               cache_bytes: int = 64 * 2**20, timeout: float = 15.0, log_level: str = "warning",
               workers: int = 1, pointer: str | None = None, pointer_key: str | None = None,
               portal_token: str | None = None) -> None:
    """Serve until interrupted. Prints ``s5vec serve listening on URL`` once the socket is bound
    (port 0 picks a free one); ``GET /v1/health`` turns ready when the index is open.

    ``workers > 1`` forks that many processes that share the listening socket, each with its own
    copy of the index, so searches use every core; it serves reads only (a write would reach one
    copy), and the line is printed once every worker has opened the index.

    ``pointer`` (a registry public key) opens the manifest it names instead of ``cid``; with
    ``pointer_key`` (its signing key file) every commit also moves the pointer."""
    from ..api import make_store
    from ..errors import InvalidArgumentError

    make_store(portals)  # bad portal URLs fail here, before anything listens
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError(f"workers must be a positive integer, got {workers!r}")
    if workers > 1 and token:
        raise InvalidArgumentError("--workers > 1 serves reads only (each worker holds its own copy of the "
                                   "index, so a write would reach one of them); start it without a token")
    # many workers: one socket each on the same port (SO_REUSEPORT), so the kernel spreads the
    # connections over them; one shared socket would hand most of them to whichever accepts first
    ptr = None
    if pointer or pointer_key:
        from .pointer import Pointer

        ptr = Pointer(pointer, portals, key_path=pointer_key, auth_token=portal_token, timeout=timeout)
    if (cid is None) == (ptr is None):
        raise InvalidArgumentError("give either a manifest CID or --pointer/--pointer-key")
    sock = _listen(host, port, reuse_port=workers > 1, listen=workers == 1)
    shown = f"[{host}]" if ":" in host else host
    bound = sock.getsockname()[1]
    url = f"http://{shown}:{bound}"

    def make_opener(on_open: Callable[[bool], None] | None) -> Callable[[], Awaitable[Engine]]:
        async def opener() -> Engine:
            try:
                engine = await Engine.open(cid, portals, cache_bytes=cache_bytes, timeout=timeout, pointer=ptr,
                                           portal_token=portal_token)
            except BaseException:
                if on_open:
                    on_open(False)
                raise
            if on_open:
                on_open(True)
            return engine
        return opener

    def serve(on_open: Callable[[bool], None] | None) -> None:
        import uvicorn

        app = create_app(make_opener(on_open), token=token, max_body=max_body, cors_origins=cors_origins)
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5, backlog=2048)
        own = sock if workers == 1 else _listen(host, bound, reuse_port=True)
        try:
            asyncio.run(uvicorn.Server(config).serve(sockets=[own]))
        except KeyboardInterrupt:
            pass

    try:
        if workers == 1:
            print(f"s5vec serve listening on {url}", flush=True)
            serve(None)
        else:
            _fork_workers(workers, serve, url)
    finally:
        sock.close()
        sys.stdout.flush()


def _listen(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # uvicorn writes a response's head and body separately: without TCP_NODELAY (inherited by
    # accepted sockets on Linux) Nagle holds the body back for the client's delayed ACK, ~40 ms
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    if listen:  # the parent of many workers only holds the port: it must not take connections
        sock.listen(2048)
    return sock


def _fork_workers(n: int, serve: Callable[[Callable[[bool], None] | None], None], url: str) -> None:
    """Fork ``n`` children running ``serve``; print the URL once each reports its index open."""
    rfd, wfd = os.pipe()
    children = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:  # child
            os.close(rfd)
            code = 0
            try:
                serve(lambda ok: os.write(wfd, b"1" if ok else b"0"))
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    os.close(wfd)
    got = b""
    while len(got) < n:
        chunk = os.read(rfd, n - len(got))
        if not chunk:  # every child exited
            break
        got += chunk
    os.close(rfd)
    print(f"s5vec serve listening on {url} ({n} workers, {got.count(b'1')} with the index open)", flush=True)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
