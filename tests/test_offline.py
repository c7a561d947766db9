"""The CPython side of offline support: the precache manifest (web/precache.py) and the rpc op db.pin() uses."""
import asyncio
import base64
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from s5vec import api, rpc
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("precache", ROOT / "web" / "precache.py")
precache = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(precache)


@pytest.fixture
def bundle(tmp_path):
    d = tmp_path / "dist"
    for rel, body in {
        "index.html": "<html>", "s5vec.js": "export {}", "worker.js": "// worker", "chunk-cache.js": "// cc",
        "pyodide/pyodide.asm.wasm": "\0asm", "wheels/s5vec-0.1.0-py3-none-any.whl": "PK",
        "vendor/workbox/workbox-sw.js": "// wb", "vendor/hash-wasm/blake3.umd.min.js": "// b3",
        "vendor/hash-wasm/LICENSE": "MIT", "s5vec.d.ts": "", "demo-config.json": "{}", "harness.html": "<html>",
    }.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(body)
    (d / "wheels" / "manifest.json").write_text(json.dumps({"wheels": []}))
    template = tmp_path / "sw.js"
    template.write_text('const R = "__S5VEC_RELEASE__";\nprecacheAndRoute(self.__WB_MANIFEST, {});\n')
    return d, template


def _manifest(d: Path) -> list[dict]:
    src = (d / "sw.js").read_text()
    return json.loads(src.split("precacheAndRoute(", 1)[1].rsplit(", {}", 1)[0])


def test_precache_lists_runtime_files_with_sri_and_a_release(bundle):
    d, template = bundle
    release = precache.write(d, template)
    entries = _manifest(d)
    urls = [e["url"] for e in entries]
    assert urls == sorted(["index.html", "s5vec.js", "worker.js", "pyodide/pyodide.asm.wasm",
                           "wheels/s5vec-0.1.0-py3-none-any.whl", "wheels/manifest.json"])
    for e in entries:
        digest = hashlib.sha256((d / e["url"]).read_bytes()).digest()
        assert e["integrity"] == "sha256-" + base64.b64encode(digest).decode()
        assert e["revision"] == digest.hex()[:32]
    assert f'const R = "{release}";' in (d / "sw.js").read_text()
    assert json.loads((d / "wheels" / "manifest.json").read_text())["release"] == release


@pytest.mark.parametrize("changed", ["worker.js", "chunk-cache.js", "vendor/workbox/workbox-sw.js", "template"])
def test_any_runtime_or_service_worker_change_is_a_new_release(bundle, changed):
    d, template = bundle
    r1 = precache.write(d, template)
    assert precache.write(d, template) == r1, "deterministic"
    target = template if changed == "template" else d / changed
    target.write_text(target.read_text() + "// changed\n")
    assert precache.write(d, template) != r1


def test_data_and_test_pages_do_not_change_the_release(bundle):
    d, template = bundle
    r1 = precache.write(d, template)
    (d / "demo-config.json").write_text('{"manifest": "other"}')
    (d / "harness.html").write_text("<html>changed")
    assert precache.write(d, template) == r1


def test_template_must_have_its_placeholders(bundle):
    d, template = bundle
    template.write_text("no placeholders")
    with pytest.raises(SystemExit):
        precache.write(d, template)


def test_rpc_chunks_lists_every_blob_of_the_snapshot(monkeypatch):
    recs = [{"id": f"r{i}", "vector": [float(i % 7), 1.0, float(i % 3)], "metadata": {}} for i in range(200)]
    store = ChunkStore(MemoryClient())
    cid = api.publish(recs, store, kind="flat", params={"chunk_rows": 50})
    monkeypatch.setattr(api, "make_store", lambda portals, **kw: store)
    monkeypatch.setattr(rpc, "_stores", {})  # rpc shares one store per portal list for a worker's session

    def call(op, args=None):
        return json.loads(asyncio.run(rpc.handle(op, args)))

    h = call("open", {"manifest": cid, "portals": ["http://unused"]})["result"]["handle"]
    out = call("chunks", {"handle": h})
    assert out["ok"], out
    manifest = api.read_manifest(store, cid)
    assert out["result"]["manifest"] == cid
    assert out["result"]["chunks"] == [cid] + [c["cid"] for c in manifest["chunks"]]
    assert set(out["result"]["chunks"]) == set(store.client.blobs)   # every blob published, nothing else
    assert call("chunks", {"handle": 999})["error"]["name"] == "InvalidArgumentError"
