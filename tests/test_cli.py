"""The CLI contract other scripts rely on, against a real portal process on 127.0.0.1."""
import json
import os
import socket
import subprocess
import sys

import pytest


import kit
from conftest import ROOT
from kit import clustered

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "pkg"))


def s5vec(*args, check=True, stdin=None):
    p = subprocess.run([sys.executable, "-m", "s5vec", *args], capture_output=True, text=True, env=ENV,
                       input=stdin, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"s5vec {args} failed: {p.stderr}")
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    d = tmp_path_factory.mktemp("portal")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "s5vec", "portal", "--dir", str(d), "--port", str(port)],
                            stdout=subprocess.PIPE, text=True, env=ENV)
    line = proc.stdout.readline()
    assert "listening" in line, line
    yield f"http://127.0.0.1:{port}", d
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    x = clustered(800, 24, 10, seed=3)
    with open(d / "recs.jsonl", "w") as fh:
        for i, v in enumerate(x):
            fh.write(json.dumps({"id": f"d{i}", "vector": v.tolist(), "metadata": {"ch": f"c{i % 4}"},
                                 "timestamp": 1.6e9 + i}) + "\n")
    with open(d / "queries.jsonl", "w") as fh:
        for v in x[:5]:
            fh.write(json.dumps((v + 0.05).tolist()) + "\n")
    return d, x


def test_publish_then_search_flat_matches_oracle(portal, data):
    url, _ = portal
    d, x = data
    p = s5vec("publish", str(d / "recs.jsonl"), "--portal", url, "--index", "flat")
    cid = p.stdout.strip().splitlines()[-1]
    assert cid.startswith("b")
    out = s5vec("search", cid, "--portal", url, "--queries", str(d / "queries.jsonl"), "-k", "5").stdout
    lines = [json.loads(l) for l in out.strip().splitlines()]
    assert len(lines) == 5
    oracle = kit.flat_oracle([f"d{i}" for i in range(len(x))], x)
    for q, hits in zip(x[:5] + 0.05, lines):
        assert [h["id"] for h in hits] == [i for i, _ in kit.search(oracle, q, 5)]
        assert set(hits[0]) == {"id", "score"}
    out = s5vec("search", cid, "--portal", url, "--queries", str(d / "queries.jsonl"), "-k", "3",
                "--filter", '{"ch": "c2"}').stdout
    assert all(int(h["id"][1:]) % 4 == 2 for l in out.splitlines() for h in json.loads(l))


@pytest.mark.parametrize("args, needle", [
    (["search", "bnotacid", "--portal", "URL", "--queries", "Q"], "CIDError"),
    (["search", "CID", "--portal", "URL", "--queries", "Q", "--filter", '{"a": {"$regex": 1}}'], "FilterError"),
    (["search", "CID", "--portal", "http://127.0.0.1:9", "--queries", "Q"], "PortalError"),
    (["publish", "MISSING", "--portal", "URL"], "cannot read"),
    (["publish", "BADJSON", "--portal", "URL"], "not valid JSON"),
    (["publish", "RECS", "--portal", "URL", "--index", "annoy"], "unknown index kind"),
])
def test_bad_input_is_one_line_not_a_traceback(portal, data, args, needle, tmp_path):
    url, _ = portal
    d, _ = data
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "vector": [1, 2\n')
    cid = s5vec("publish", str(d / "recs.jsonl"), "--portal", url, "--index", "flat").stdout.split()[-1]
    subst = {"URL": url, "Q": str(d / "queries.jsonl"), "CID": cid, "MISSING": str(tmp_path / "none.jsonl"),
             "BADJSON": str(tmp_path / "bad.jsonl"), "RECS": str(d / "recs.jsonl")}
    p = s5vec(*[subst.get(a, a) for a in args], check=False)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_wrong_dimension_query_is_reported_with_its_line(portal, data, tmp_path):
    url, _ = portal
    d, _ = data
    cid = s5vec("publish", str(d / "recs.jsonl"), "--portal", url, "--index", "flat").stdout.split()[-1]
    (tmp_path / "q.jsonl").write_text("[1, 2, 3]\n")
    p = s5vec("search", cid, "--portal", url, "--queries", str(tmp_path / "q.jsonl"), check=False)
    assert p.returncode == 1 and "DimensionError" in p.stderr and "q.jsonl:1" in p.stderr


def test_migrate_hybrid_snapshot(portal, tmp_path):
    """A hybrid snapshot whose recent part has aged: migrate keeps every record, HNSW keeps only recent ones."""
    import time as _time

    from s5vec import api

    url, _ = portal
    now = _time.time()
    x = clustered(1500, 16, 6, seed=4)
    with open(tmp_path / "h.jsonl", "w") as fh:
        for i, v in enumerate(x):
            # all within 40 days; a 30-day window: ~3/4 recent today
            fh.write(json.dumps({"id": f"m{i}", "vector": v.tolist(), "timestamp": now - (i % 40) * 86400 - 60}) + "\n")
    cid = s5vec("publish", str(tmp_path / "h.jsonl"), "--portal", url, "--index", "hybrid",
                "--param", "recent_threshold=30d", "--param", "nlist=8").stdout.split()[-1]
    before = api.Database.open(cid, [url])
    n_recent = len(before.index.recent)
    # shrink the window to 20 days (as if 10 days had passed), migrate and commit through the API
    before.index.recent_threshold = 20 * 86400
    moved = before.migrate()
    new_cid, _ = before.commit()
    after = api.Database.open(new_cid, [url])
    assert moved > 0 and len(after.index.recent) == n_recent - moved and len(after.index) == 1500
    assert api.read_manifest(after.store, new_cid)["parent"] == cid
    # the CLI command runs and, with nothing aged, moves nothing but still prints a CID
    p = s5vec("migrate", new_cid, "--portal", url)
    assert "moved 0 aged records" in p.stderr and p.stdout.strip().startswith("b")
    flat = s5vec("publish", str(tmp_path / "h.jsonl"), "--portal", url, "--index", "flat").stdout.split()[-1]
    p = s5vec("migrate", flat, "--portal", url, check=False)
    assert p.returncode == 1 and "InvalidArgumentError" in p.stderr
