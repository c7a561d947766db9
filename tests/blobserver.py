"""A tiny S5 blob server for transport tests: serves blobs from memory and misbehaves on demand.

Not the product's portal (``s5vec portal``): a test double whose only job is to be slow,
hang, trickle or count, so the client's deadline, health, hedging and single-flight can be
measured against a real socket.  Both CPython tests and e2e tests (with CORS) use it.

Modes (``server.mode``, changeable while running):
  "ok"        answer at once
  "hang"      accept the request, never answer (until the server stops)
  "trickle"   send the headers, then one byte per ``trickle_every`` seconds
  "delay"     answer after ``delay`` seconds
  "error"     answer 503
  "reset"     close the connection with a TCP RST instead of answering
  "corrupt"   the right length, one byte flipped
  "truncate"  the full Content-Length announced, half the body sent, then close
  "flap"      good, error, good, error, ... (per request)
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from s5vec.s5.cid import BlobId, blob_cid


class _Handler(BaseHTTPRequestHandler):
    server: "BlobServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, *a) -> None:
        pass

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self.send_response(204)
        self._cors()
        self.send_header("Access-Control-Allow-Headers", "*")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        path = self.path.split("?", 1)[0]
        if not path.startswith("/s5/blob/"):
            self.send_error(404)
            return
        cid = path[len("/s5/blob/"):]
        try:
            key = BlobId.parse(cid).to_string()
        except Exception:
            self.send_error(400)
            return
        with srv.lock:
            srv.gets[key] += 1
        mode = srv.mode
        if mode == "flap":
            with srv.lock:
                srv.flips += 1
                mode = "error" if srv.flips % 2 == 0 else "ok"
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if mode == "hang":
            srv.stopping.wait()
            return
        if mode == "delay":
            if srv.stopping.wait(srv.delay):
                return
        if mode == "error":
            self.send_response(503)
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = srv.blobs.get(key)
        if data is None:
            self.send_response(404)
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self._cors()
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "corrupt" and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if mode == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        if mode == "trickle":
            for i in range(len(data)):
                if srv.stopping.wait(srv.trickle_every):
                    return
                try:
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                except OSError:
                    return
            return
        try:
            self.wfile.write(data)
        except OSError:
            pass


class BlobServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, blobs: dict[str, bytes] | None = None, mode: str = "ok") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.blobs: dict[str, bytes] = {}
        for data in (blobs or {}).values():
            self.add(data)
        self.mode = mode
        self.delay = 1.0
        self.trickle_every = 1.0
        self.gets: Counter[str] = Counter()
        self.flips = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, data: bytes) -> str:
        cid = blob_cid(data)
        self.blobs[cid] = bytes(data)
        return cid

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()

    def __enter__(self) -> "BlobServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class MirrorClient:
    """A blob client that uploads into a BlobServer's memory (publishing without HTTP uploads)."""

    def __init__(self, *servers: BlobServer) -> None:
        self.servers = servers

    def upload(self, data: bytes) -> str:
        for s in self.servers:
            cid = s.add(data)
        return cid

    def download(self, cid: str) -> bytes:
        return self.servers[0].blobs[BlobId.parse(cid).to_string()]

    async def download_many(self, cids):
        return {c: self.download(c) for c in cids}


def wait_until(pred, timeout: float = 5.0) -> bool:
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if pred():
            return True
        time.sleep(0.01)
    return pred()
