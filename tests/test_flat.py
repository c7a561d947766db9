import numpy as np
import pytest

from s5vec import kernels
from s5vec.errors import DimensionError, InvalidArgumentError, InvalidVectorError, UnknownIdError
from s5vec.filters import parse
from s5vec.index.flat import FlatIndex

import kit
from kit import clustered


def make(n=500, dim=16, metric="cosine", seed=0):
    x = clustered(n, dim, 10, seed)
    idx = FlatIndex(dim, metric, chunk_rows=128)
    idx.add([f"id{i}" for i in range(n)], x, [{"g": i % 5, "name": f"n{i}"} for i in range(n)],
            [1000.0 + i for i in range(n)])
    return idx, x


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_search_is_exact(metric):
    idx, x = make(metric=metric)
    q = x[3] + 0.01
    qp = kernels.prepare(q[None], metric)[0]
    d = kernels.distances(qp, kernels.prepare(x, metric), metric)
    want = [f"id{i}" for i in kernels.top_k(d, 10)]
    got = kit.search(idx, q, 10)
    assert [i for i, _ in got] == want
    assert got[0][1] <= got[-1][1]


def test_filter_delete_upsert():
    idx, x = make()
    hits = kit.search(idx, x[0], 20, parse({"g": 2, "_timestamp": {"$lt": 1300}}))
    assert len(hits) == 20
    for i, _ in hits:
        n = int(i[2:])
        assert n % 5 == 2 and n < 300
    assert idx.delete(["id0", "id1"]) == 2
    assert "id0" not in idx and len(idx) == 498
    assert all(i not in ("id0", "id1") for i, _ in kit.search(idx, x[0], 50))
    with pytest.raises(UnknownIdError):
        idx.delete(["id2", "nope"])
    assert "id2" in idx and len(idx) == 498  # nothing changed
    idx.add(["id5"], x[100:101], [{"g": 9}])
    assert len(idx) == 498 and idx.metadata("id5") == {"g": 9}
    assert kit.search(idx, x[100], 2)[0][0] in ("id5", "id100")


def test_bad_input_changes_nothing():
    idx, x = make(n=50)
    before = kit.search(idx, x[0], 5)
    with pytest.raises(DimensionError):
        idx.add(["new"], np.ones((1, 3)))
    with pytest.raises(InvalidVectorError):
        idx.add(["new"], np.full((1, 16), np.nan))
    with pytest.raises(InvalidArgumentError):
        idx.add(["a", "a"], x[:2])
    with pytest.raises(InvalidArgumentError):
        idx.add(["a"], x[:1], ["not a dict"])
    with pytest.raises(DimensionError):
        kit.search(idx, np.ones(3), 5)
    assert len(idx) == 50 and kit.search(idx, x[0], 5) == before


def test_filter_with_few_matches_returns_all_matches():
    idx, x = make()
    hits = kit.search(idx, x[0], 10, parse({"name": {"$in": ["n7", "n400"]}}))
    assert sorted(i for i, _ in hits) == ["id400", "id7"]


def test_save_load_round_trip():
    idx, x = make()
    io = kit.MemChunks()
    desc = idx.save(io)
    assert len(desc["rows"]) == 4  # 500 rows in chunks of 128
    back = FlatIndex.load(desc, io.fresh())  # a new reader: every chunk through blake3 + CBOR
    for q in x[:10]:
        assert kit.search(back, q, 10) == kit.search(idx, q, 10)
    assert back.metadata("id3") == {"g": 3, "name": "n3"} and back.timestamp("id3") == 1003.0
    # appending changes only the last chunk
    idx.add(["extra"], x[:1])
    desc2 = idx.save(io)
    assert desc2["rows"][:3] == desc["rows"][:3] and desc2["rows"][3] != desc["rows"][3]
