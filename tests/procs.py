"""Real processes and real HTTP on 127.0.0.1, shared by the CLI, portal, serve and MCP tests.

- :data:`ENV` -- the environment that makes a child ``python -m s5vec`` import this tree;
- :func:`free_port` -- a port nobody listens on (bind 0, close);
- :func:`s5vec` -- run the CLI to completion, failing the test on a non-zero exit;
- :func:`portal_process` -- a real ``s5vec portal`` subprocess, up once it says "listening";
- :func:`portal_thread` -- the in-process portal server (cheaper when the CLI is not under test);
- :func:`http_request` -- (status, headers, body) without raising on HTTP errors;
- :func:`portal` -- a module-scoped fixture: an in-process portal's URL (import it into a test module).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "pkg"))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a child that needs a port number up front)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s5vec(*args, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python -m s5vec ARGS`` to completion (text output); ``check`` fails the test with its stderr."""
    p = subprocess.run([sys.executable, "-m", "s5vec", *map(str, args)], capture_output=True, text=True, env=ENV,
                       input=stdin, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"s5vec {args} failed: {p.stderr}")
    return p


@contextmanager
def portal_process(directory: Path) -> Iterator[str]:
    """A real ``s5vec portal`` serving ``directory`` on a free port; yields its URL, terminates it after."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "s5vec", "portal", "--dir", str(directory), "--port", str(port)],
                            stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        line = proc.stdout.readline()
        assert "listening" in line, line
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def portal_thread(directory: Path) -> Iterator[str]:
    """The portal server in this process (a thread) on a free port; yields its URL, stops it after."""
    from s5vec.s5.portal import serve

    server, _ = serve(directory)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def portal(tmp_path_factory) -> Iterator[str]:
    """One portal per test module (``from procs import portal``): the URL of :func:`portal_thread`."""
    with portal_thread(tmp_path_factory.mktemp("portal")) as url:
        yield url


def http_request(url: str, *, method: str = "GET", data: bytes | None = None, headers: dict | None = None,
                 timeout: float = 5):
    """(status, headers, body) of one request; an HTTP error status is an answer, not an exception."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
