"""A static file server for the browser bundle (``web/dist``) with the MIME types Pyodide needs.

``loadPyodide`` hangs forever when ``.wasm`` is not served as ``application/wasm``, and module
workers refuse ``.mjs``/``.js`` served as anything but JavaScript, so the types are set explicitly
instead of trusting the platform's ``mimetypes`` database.  Every response carries
``Cache-Control: no-cache`` (browsers revalidate, so a rebuilt bundle is picked up) and
``Access-Control-Allow-Origin: *`` (the bundle is public; apps on other origins may load it).
"""
from __future__ import annotations

import functools
import http.server
import os
import sys
import threading

__all__ = ["MIME_TYPES", "make_handler", "serve_web", "run_web"]

MIME_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".whl": "application/octet-stream",
    ".zip": "application/zip",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    "": "application/octet-stream",
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = MIME_TYPES
    mime_overrides: dict[str, str] = {}

    def guess_type(self, path: str) -> str:  # type: ignore[override]
        ext = os.path.splitext(str(path))[1].lower()
        if ext in self.mime_overrides:
            return self.mime_overrides[ext]
        return MIME_TYPES.get(ext) or super().guess_type(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        # static public files: let pages on other origins use this bundle (e.g. as pyodideIndexUrl)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # quiet by default
        if os.environ.get("S5VEC_WEB_LOG"):
            super().log_message(format, *args)


def make_handler(directory: str, mime_overrides: dict[str, str] | None = None) -> type:
    """A request-handler class serving ``directory``; ``mime_overrides`` (ext -> type) is for tests."""
    cls = type("S5VecWebHandler", (_Handler,), {"mime_overrides": dict(mime_overrides or {})})
    return functools.partial(cls, directory=os.fspath(directory))  # type: ignore[return-value]


def _server(directory: str, host: str, port: int, mime_overrides: dict[str, str] | None) -> http.server.ThreadingHTTPServer:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such directory: {directory} (run build_wheel.sh to create web/dist)")
    server = http.server.ThreadingHTTPServer((host, port), make_handler(directory, mime_overrides))
    server.daemon_threads = True
    return server


def serve_web(directory: str, host: str = "127.0.0.1", port: int = 0,
              mime_overrides: dict[str, str] | None = None) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    """Serve ``directory`` in a background thread; ``port=0`` picks a free port (``server.server_address``).

    Stop with ``server.shutdown(); server.server_close()``.
    """
    server = _server(directory, host, port, mime_overrides)
    thread = threading.Thread(target=server.serve_forever, name="s5vec-web", daemon=True)
    thread.start()
    return server, thread


def run_web(directory: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve ``directory`` until interrupted (blocks)."""
    server = _server(directory, host, port, None)
    h, p = server.server_address[:2]
    print(f"s5vec web serving {directory} at http://{h}:{p}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":  # python -m s5vec.webserver DIR [PORT]
    run_web(sys.argv[1] if len(sys.argv) > 1 else "web/dist", port=int(sys.argv[2]) if len(sys.argv) > 2 else 8080)
