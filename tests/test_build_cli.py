"""`s5vec publish` on streamed inputs (.npy + ids, Parquet, --dask) through the real CLI and portal."""
from __future__ import annotations

import json

import numpy as np
import pytest

import kit
from procs import free_port, portal_process, s5vec


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    with portal_process(tmp_path_factory.mktemp("portal")) as url:
        yield url


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    x = kit.clustered(4000, 16, 20, seed=9)
    np.save(d / "x.npy", x)
    with open(d / "ids.jsonl", "w") as fh:
        for i in range(len(x)):
            fh.write(json.dumps({"id": f"v{i}", "metadata": {"ch": f"c{i % 3}"}, "timestamp": 1.6e9 + i}) + "\n")
    with open(d / "q.jsonl", "w") as fh:
        for v in x[:3]:
            fh.write(json.dumps(v.tolist()) + "\n")
    return d, x


@pytest.mark.parametrize("extra", [[], ["--dask", "local"]])
def test_publish_npy_with_ids_then_search(portal, data, extra):
    d, x = data
    out = s5vec("publish", d / "x.npy", "--ids", d / "ids.jsonl", "--portal", portal, "--index", "ivf",
                "--param", "nlist=16", *extra)
    cid = out.stdout.strip().splitlines()[-1]
    assert "built IVF16,Flat over 4000 records" in out.stderr
    hits = [json.loads(l) for l in s5vec("search", cid, "--portal", portal, "--queries", d / "q.jsonl", "-k", "3",
                                         "--param", "nprobe=16").stdout.splitlines()]
    assert [h[0]["id"] for h in hits] == ["v0", "v1", "v2"]


def test_publish_bad_npy_is_one_typed_line(portal, tmp_path):
    np.save(tmp_path / "ints.npy", np.arange(12).reshape(3, 4))
    out = s5vec("publish", tmp_path / "ints.npy", "--portal", portal, check=False)
    assert out.returncode == 1 and "InvalidVectorError" in out.stderr and "Traceback" not in out.stderr
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.float32))
    out = s5vec("publish", tmp_path / "cube.npy", "--portal", portal, check=False)
    assert out.returncode == 1 and "expected a 2-d (n, dim) array" in out.stderr


def test_publish_unreachable_dask_is_one_typed_line(portal, data):
    d, _ = data
    out = s5vec("publish", d / "x.npy", "--portal", portal, "--index", "ivf", "--param", "nlist=16",
                "--dask", f"tcp://127.0.0.1:{free_port()}", check=False)
    assert out.returncode == 1 and "BuildError" in out.stderr and "Traceback" not in out.stderr
