"""Helpers the serve/MCP tests share: a published demo index on a real portal, a real
``s5vec serve`` subprocess on a free port, and clean shutdown."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from conftest import ROOT

from s5vec import api
from s5vec.demo import demo_records

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "pkg"))
TOKEN = "t0ps3cret-token"
DIM = 48


def video_records(count: int, seed: int = 7, start: int = 0) -> list[dict]:
    """Demo videos (title, channel, topic...) with DIM-d vectors; ids ``v{n:06d}`` from ``start``."""
    out = []
    for n, r in enumerate(demo_records(count, dim=DIM, seed=seed)):
        r["id"] = f"v{start + n:06d}"
        out.append(r)
    return out


def text_search_available() -> bool:
    """Whether this build has text search (``Database.search_text``, ``publish(text_field=)``)."""
    import inspect

    return hasattr(api.Database, "search_text") and "text_field" in inspect.signature(api.publish).parameters


def publish(portal_url: str, records: list[dict]) -> str:
    """A hybrid index with both parts populated (recent window of a year); with text search in
    the build, the titles are indexed for keyword search too."""
    store = api.make_store([portal_url])
    extra = {"text_field": "title"} if text_search_available() else {}
    return api.publish(records, store, kind="hybrid",
                       params={"recent_threshold": "365d", "nlist": 16, "nprobe": 16}, **extra)


def holds(db: api.Database, id: str) -> bool:
    """Whether a (reopened, lazily loaded) Database holds ``id``: through ``Database.get``."""
    from s5vec.errors import UnknownIdError

    try:
        db.get(id)
        return True
    except UnknownIdError:
        return False


@contextmanager
def serve_process(cid: str | None, portal_url: str, *extra: str, token: str | None = TOKEN,
                  tmp: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``s5vec serve`` on a free port; yields (base URL, process) once /v1/health says ready."""
    from s5vec.client import Client

    args = [sys.executable, "-m", "s5vec", "serve", *([cid] if cid else []), "--portal", portal_url, "--port", "0",
            *extra]
    if token is not None:
        assert tmp is not None
        f = tmp / "token.txt"
        f.write_text(token + "\n")
        args += ["--auth-token-file", str(f)]
    env = dict(ENV)
    env.pop("S5VEC_SERVE_TOKEN", None)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split("listening on", 1)[1].split()[0]
        t0 = time.monotonic()
        with Client(url) as c:
            c.wait_ready(60)
        proc.ready_s = time.monotonic() - t0  # type: ignore[attr-defined]
        yield url, proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
