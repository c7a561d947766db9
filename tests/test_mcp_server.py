"""The MCP server: the SDK's own client starts ``s5vec mcp`` over stdio, lists the tools, calls
them, and gets structured results equal to the HTTP API's (a real ``s5vec serve`` on the same
manifest); bad arguments come back as MCP tool errors and the server keeps answering."""
from __future__ import annotations

import subprocess
import sys

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters

from kit import assert_same_hits
from procs import portal  # noqa: F401 -- the shared module-scoped fixture
from servekit import DIM, ENV, TOKEN, holds, publish, serve_process, video_records

from s5vec import api

READ_TOOLS = {"search_videos", "similar_videos", "get_video", "index_info"}
WRITE_TOOLS = {"add_videos", "delete_videos", "commit"}


@pytest.fixture(scope="module")
def records():
    return video_records(800)


@pytest.fixture(scope="module")
def cid(portal, records):
    return publish(portal, records)


@pytest.fixture(scope="module")
def http(cid, portal, tmp_path_factory):
    with serve_process(cid, portal, tmp=tmp_path_factory.mktemp("srv")) as (url, _):
        yield url


def mcp_params(cid: str, portal: str, *extra: str, env: dict | None = None) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "s5vec", "mcp", cid, "--portal", portal, *extra],
                                 env={"PYTHONPATH": ENV["PYTHONPATH"], **(env or {})})


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "text", None))


def test_read_tools_equal_the_http_api(cid, portal, http, records):
    rec = records[42]
    flt = {"topic": rec["metadata"]["topic"]}

    async def main() -> None:
        async with Client(mcp_params(cid, portal)) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(tools) == READ_TOOLS  # no write tools without --allow-writes
            for t in tools.values():
                assert t.input_schema["type"] == "object" and t.output_schema is not None and t.description
            assert tools["similar_videos"].input_schema["properties"]["k"]["type"] == "integer"
            assert tools["search_videos"].input_schema["required"] == ["query"]

            r = await c.call_tool("similar_videos", {"id": rec["id"], "k": 5, "filter": flt})
            assert not r.is_error, text_of(r)
            want = httpx.post(f"{http}/v1/records/{rec['id']}/similar", json={"k": 5, "filter": flt}).json()["hits"]
            assert_same_hits(r.structured_content["hits"], want)
            assert text_of(r).startswith(f"1. {want[0]['id']} (")

            r = await c.call_tool("get_video", {"id": rec["id"]})
            assert not r.is_error
            assert r.structured_content == httpx.get(f"{http}/v1/records/{rec['id']}").json()

            r = await c.call_tool("index_info", {})
            assert r.structured_content == httpx.get(f"{http}/v1/info").json()

            r = await c.call_tool("search_videos", {"query": "space documentary", "k": 5})
            http_r = httpx.post(f"{http}/v1/search", json={"text": "space documentary", "k": 5})
            if http_r.status_code == 200:
                assert not r.is_error, text_of(r)
                assert_same_hits(r.structured_content["hits"], http_r.json()["hits"])
            else:  # text search is not in this build: the same typed error, as an MCP tool error
                assert http_r.json()["error"]["name"] == "NotSupportedError"
                assert r.is_error and "NotSupportedError" in text_of(r)

            # bad arguments: MCP tool errors, never a crash
            for name, args, needle in [
                ("similar_videos", {"id": rec["id"], "k": "abc"}, "k"),
                ("similar_videos", {"id": rec["id"], "k": 0}, "k"),
                ("similar_videos", {"k": 3}, "id"),
                ("similar_videos", {"id": "nope"}, "UnknownIdError"),
                ("similar_videos", {"id": rec["id"], "filter": {"topic": {"$regex": "x"}}}, "FilterError"),
                ("get_video", {"id": "nope"}, "UnknownIdError"),
                ("search_videos", {"query": ""}, "query"),
            ]:
                r = await c.call_tool(name, args)
                assert r.is_error, (name, args)
                assert needle in text_of(r), (needle, text_of(r))
            r = await c.call_tool("get_video", {"id": rec["id"]})  # still serving
            assert not r.is_error

            uris = {str(res.uri) for res in (await c.list_resources()).resources}
            assert uris == {"s5vec://index/manifest", "s5vec://index/stats"}
            import json
            manifest = json.loads((await c.read_resource("s5vec://index/manifest")).contents[0].text)
            assert manifest["kind"] == "hybrid" and manifest["dim"] == DIM
            stats = json.loads((await c.read_resource("s5vec://index/stats")).contents[0].text)
            assert stats["queries"] >= 1 and "latency_ms" in stats

    anyio.run(main)


def test_write_tools_need_allow_writes_and_a_token(cid, portal, tmp_path):
    p = subprocess.run([sys.executable, "-m", "s5vec", "mcp", cid, "--portal", portal, "--allow-writes"],
                       capture_output=True, text=True, env={k: v for k, v in ENV.items() if k != "S5VEC_SERVE_TOKEN"},
                       timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "token" in p.stderr

    new = video_records(3, seed=77, start=990000)

    async def main() -> str:
        async with Client(mcp_params(cid, portal, "--allow-writes", env={"S5VEC_SERVE_TOKEN": TOKEN})) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert names == READ_TOOLS | WRITE_TOOLS
            r = await c.call_tool("add_videos", {"videos": new})
            assert not r.is_error, text_of(r)
            assert r.structured_content["changed"] == 3
            r = await c.call_tool("add_videos", {"videos": [dict(new[0], vector=[1.0, 2.0])]})
            assert r.is_error and "DimensionError" in text_of(r)
            r = await c.call_tool("delete_videos", {"ids": [new[1]["id"], "nope"]})
            assert r.is_error and "UnknownIdError" in text_of(r)
            r = await c.call_tool("delete_videos", {"ids": [new[1]["id"]]})
            assert not r.is_error and r.structured_content["changed"] == 1
            r = await c.call_tool("commit", {})
            assert not r.is_error, text_of(r)
            assert r.structured_content["parent"] == cid
            return r.structured_content["manifest"]

    new_cid = anyio.run(main)
    db = api.Database.open(new_cid, [portal])
    base = api.Database.open(cid, [portal]).info()["count"]
    assert db.info()["count"] == base + 2
    assert holds(db, new[0]["id"]) and holds(db, new[2]["id"]) and not holds(db, new[1]["id"])


def test_mcp_over_http_gates_every_request_when_writes_are_allowed(cid, portal):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "s5vec", "mcp", cid, "--portal", portal, "--transport", "http",
                             "--port", str(port), "--allow-writes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(ENV, S5VEC_SERVE_TOKEN=TOKEN))
    try:
        line = proc.stderr.readline()
        assert "listening" in line, line
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.post(url, json={})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 401 and r.json()["error"]["name"] == "UnauthorizedError"

        async def main() -> set[str]:
            import httpx2  # the HTTP client the mcp SDK's transport is built on
            from mcp.client.streamable_http import streamable_http_client

            http_client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
            async with http_client, Client(streamable_http_client(url, http_client=http_client)) as c:
                r = await c.call_tool("index_info", {})
                assert not r.is_error, text_of(r)
                return {t.name for t in (await c.list_tools()).tools}

        assert anyio.run(main) == READ_TOOLS | WRITE_TOOLS
    finally:
        proc.terminate()
        proc.wait(10)
