"""A fault-injection portal: a real HTTP server on 127.0.0.1 that misbehaves on purpose.

Tests of the transport (CPython and the browser) need portals that are slow, hang, reset, corrupt,
truncate or flap -- the ways real networks fail.  ``FaultPortal`` is a small HTTP/1.1 proxy in front
of a *real* portal (a directory, for which it starts one, or a URL): good answers are the real
portal's, byte for byte, and the chosen fault is applied to the answers of matching requests::

    from s5vec.s5.faults import FaultPortal

    with FaultPortal(portal_dir_or_url, mode="hanging") as fp:   # listens on 127.0.0.1:<free port>
        client = PortalClient([fp.url, good.url])
        fp.set_mode("slow", rate=1)          # change the behaviour at any time
        fp.requests                          # [(method, path, mode applied), ...]

Modes (``mode=`` and ``set_mode``; parameters as keywords):

* ``good``: proxy faithfully.
* ``delay``: wait ``delay`` seconds (default 1), then answer well.
* ``slow``: send the whole answer at ``rate`` bytes/s (default 100).
* ``hanging``: read the request, never answer (the connection stays open until the client gives up).
* ``resetting``: read the request, then reset the connection (TCP RST).
* ``corrupting``: flip one byte of the body (at ``offset``, default the middle); length unchanged.
* ``truncating``: send the headers (full ``Content-Length``) and ``fraction`` (default 0.5) of the
  body, then close.
* ``flapping``: alternate good and ``bad`` (default ``"resetting"``) answers: good, bad, good, ...

Faults apply to requests whose path starts with ``match`` (default ``/s5/blob/``); other paths and
CORS preflights (``OPTIONS``) are proxied well, so a browser sees the fault on the real request.
One request per connection (answers say ``Connection: close``); request bodies need a
``Content-Length`` (browsers and ``PortalClient`` send one).  Importable by ``tests/`` and ``e2e/``
alike (it is part of the package, and needs nothing beyond the standard library and the portal).
"""
from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import urllib.parse
from pathlib import Path
from typing import Any

__all__ = ["FaultPortal", "MODES"]

MODES = ("good", "delay", "slow", "hanging", "resetting", "corrupting", "truncating", "flapping")
_MAX_HEAD = 64 << 10


class FaultPortal:
    """See the module docstring.  ``upstream`` is a portal directory or base URL."""

    def __init__(self, upstream: str | os.PathLike, mode: str = "good", *, match: str = "/s5/blob/",
                 host: str = "127.0.0.1", port: int = 0, **params: Any) -> None:
        self._own_portal = None
        up = str(upstream)
        if not up.startswith(("http://", "https://")):
            from .portal import start_portal

            self._own_portal = start_portal(Path(up))
            up = self._own_portal.url
        u = urllib.parse.urlsplit(up)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"upstream must be a directory or an http:// URL, not {upstream!r}")
        self.upstream = up.rstrip("/")
        self._up_host, self._up_port = u.hostname, u.port or 80
        self.match = match
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._flap = 0
        self._hung: set[asyncio.StreamWriter] = set()
        self.set_mode(mode, **params)
        self._loop = asyncio.new_event_loop()
        self._sock = socket.create_server((host, port), backlog=1024)
        self._sock.setblocking(False)
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-portal", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault portal did not start")

    # ---------------------------------------------------------------- control
    def set_mode(self, mode: str, **params: Any) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; one of {', '.join(MODES)}")
        bad = params.get("bad", "resetting")
        if mode == "flapping" and bad not in MODES[1:7]:
            raise ValueError(f"flapping needs a bad mode among {MODES[1:7]}, not {bad!r}")
        with self._lock:
            self.mode, self.params, self._flap = mode, dict(params), 0

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._shutdown_event.set)
            self._thread.join(timeout=5)
        if self._own_portal is not None:
            self._own_portal.stop()

    def __enter__(self) -> "FaultPortal":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------- server
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._shutdown_event = asyncio.Event()
        server = await asyncio.start_server(self._handle, sock=self._sock)
        self._ready.set()
        await self._shutdown_event.wait()
        server.close()
        for w in list(self._hung):
            w.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _pick(self, method: str, path: str) -> tuple[str, dict]:
        with self._lock:
            mode, params = self.mode, self.params
            if method == "OPTIONS" or not path.startswith(self.match):
                applied = "good"
            elif mode == "flapping":
                applied = "good" if self._flap % 2 == 0 else params.get("bad", "resetting")
                self._flap += 1
            else:
                applied = mode
            self.requests.append((method, path, applied))
        return applied, params

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _ = lines[0].split(" ", 2)
        except ValueError:
            writer.close()
            return
        headers = [ln.split(":", 1) for ln in lines[1:] if ":" in ln]
        length = next((int(v.strip()) for k, v in headers if k.strip().lower() == "content-length"), 0)
        body = await reader.readexactly(length) if length else b""
        path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
        mode, params = self._pick(method, path)
        try:
            if mode == "hanging":
                self._hung.add(writer)
                try:
                    await reader.read()  # until the client gives up (or stop())
                finally:
                    self._hung.discard(writer)
                writer.close()
                return
            if mode == "resetting":
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            if mode == "delay":
                await asyncio.sleep(float(params.get("delay", 1.0)))
            raw = await self._forward(method, target, headers, body)
            resp_head, _, resp_body = raw.partition(b"\r\n\r\n")
            if method == "HEAD":
                resp_body = b""
            if mode == "corrupting" and resp_body:
                i = int(params.get("offset", len(resp_body) // 2)) % len(resp_body)
                resp_body = resp_body[:i] + bytes([resp_body[i] ^ 0xFF]) + resp_body[i + 1:]
            if mode == "truncating":
                keep = int(len(resp_body) * float(params.get("fraction", 0.5)))
                writer.write(resp_head + b"\r\n\r\n" + resp_body[:keep])
                await writer.drain()
                writer.close()
                return
            out = resp_head + b"\r\n\r\n" + resp_body
            if mode == "slow":
                rate = max(1.0, float(params.get("rate", 100)))
                step = max(1, int(rate / 10))
                for i in range(0, len(out), step):
                    writer.write(out[i:i + step])
                    await writer.drain()
                    await asyncio.sleep(step / rate)
            else:
                writer.write(out)
                await writer.drain()
            writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()

    async def _forward(self, method: str, target: str, headers: list[list[str]], body: bytes) -> bytes:
        """The upstream's raw answer (head + body), re-headed ``Connection: close``."""
        r, w = await asyncio.open_connection(self._up_host, self._up_port)
        keep = [(k.strip(), v.strip()) for k, v in headers if k.strip().lower() not in ("connection", "host",
                                                                                        "keep-alive")]
        req = [f"{method} {target} HTTP/1.1", f"Host: {self._up_host}:{self._up_port}", "Connection: close"]
        req += [f"{k}: {v}" for k, v in keep]
        w.write(("\r\n".join(req) + "\r\n\r\n").encode("latin-1") + body)
        await w.drain()
        raw = await r.read()
        w.close()
        head, sep, rest = raw.partition(b"\r\n\r\n")
        lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith((b"connection:", b"keep-alive:"))]
        return b"\r\n".join(lines + [b"Connection: close"]) + sep + rest
