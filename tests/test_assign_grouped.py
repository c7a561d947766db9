"""Two-level list assignment for large nlist (quantizers.assign_grouped, IVFIndex.assign): the same
lists as exact assignment for nearly every row, recall against the flat oracle unchanged, and a
pure function of the centroids (a loaded index, a build's workers and the trainer agree)."""
import numpy as np
import pytest

from s5vec import kernels
from s5vec import quantizers as qz
from s5vec.index.ivf import IVFIndex

import kit


@pytest.fixture(scope="module")
def data():
    x = kernels.prepare(kit.clustered(30_000, 48, 80, seed=2), "cosine")
    ids = [f"v{i}" for i in range(x.shape[0])]
    return ids, x, kit.queries_near(x, 80, seed=3)


@pytest.fixture(scope="module")
def cents(data):
    return qz.kmeans(data[1][:15_000], 512, metric="cosine", iters=5, seed=1)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_every_group_probed_is_exact(data, cents, metric):
    x = data[1][:5000]
    g = qz.group_centroids(cents, metric, probe=10**6)
    assert g.probe == g.count and sorted(g.order.tolist()) == list(range(len(cents)))
    want, wd = qz.assign(x, cents, metric, return_distances=True)
    got, gd = qz.assign(x, cents, metric, return_distances=True, groups=g)
    assert np.array_equal(got, want)
    np.testing.assert_allclose(gd, wd, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_few_groups_probed_give_nearly_the_exact_lists(data, cents, metric):
    x = data[1]
    g = qz.group_centroids(cents, metric, probe=4)
    assert g.count == 16 and g.probe == 4  # ~sqrt(512) groups, a quarter of them scored
    want = qz.assign(x, cents, metric)
    got, gd = qz.assign(x, cents, metric, return_distances=True, groups=g)
    assert (got == want).mean() >= 0.99
    # where they differ the row got a centroid of its probed groups, never a nearer one than exact
    _, wd = qz.assign(x, cents, metric, return_distances=True)
    assert (gd >= wd - 1e-5).all()
    np.testing.assert_allclose(gd, kernels.distance_matrix(x, cents, metric)[np.arange(len(x)), got], atol=1e-4)


def test_groups_are_a_pure_function_of_the_centroids(cents):
    a = qz.group_centroids(cents, "cosine", seed=3)
    b = qz.group_centroids(cents.copy(), "cosine", seed=3)
    assert np.array_equal(a.order, b.order) and np.array_equal(a.offsets, b.offsets)
    assert np.array_equal(a.centers, b.centers)


def test_only_large_nlist_uses_groups():
    assert not qz.grouped_pays(4096, "cosine") and qz.grouped_pays(16384, "cosine")
    assert qz.grouped_pays(qz.GROUPED_MIN_K, "l2") and not qz.grouped_pays(16384, "ip")


PARAMS = dict(nlist=256, nprobe=12, codec="pq", pq_m=12, refine="pq", refine_m=24, refine_rows=32)


def _ivf(ids, x, **kw):
    idx = IVFIndex(x.shape[1], "cosine", **{**PARAMS, **kw})
    idx.add(ids, x)
    assert idx.trained
    return idx


def test_ivf_with_groups_keeps_recall_and_lists(data, monkeypatch):
    ids, x, q = data
    oracle = kit.flat_oracle(ids, x, "cosine")
    exact = _ivf(ids, x)
    assert exact.centroid_groups() is None
    monkeypatch.setattr(qz, "GROUPED_MIN_K", 256)
    grouped = _ivf(ids, x)
    groups = grouped.centroid_groups()
    assert groups is not None and groups.count == 16
    assert np.array_equal(grouped.centroids, exact.centroids)  # training is unchanged (same seed)
    same = (grouped.assign(x) == exact.assign(x)).mean()
    assert same >= 0.99
    r_exact = kit.recall_at_k(exact, q, 10, oracle=oracle)
    r_grouped = kit.recall_at_k(grouped, q, 10, oracle=oracle)
    assert r_exact >= 0.85 and r_grouped >= r_exact - 0.01, (r_grouped, r_exact)
    # the lists are what assign says: every record sits in the list IVFIndex.assign gives it
    lab = grouped.assign(x)
    for l in range(0, 256, 37):
        lst = grouped._lists[l]
        assert all(lab[int(i[1:])] == l for i in lst.ids)
    # a loaded index makes the same groups from its (float16-exact) centroids: an add after a load
    # puts a record where the resident index puts it
    io = kit.MemChunks()
    desc = grouped.save(io)
    back = IVFIndex.load(desc, io.fresh())
    assert np.array_equal(back.assign(x[:3000]), grouped.assign(x[:3000]))
    assert np.array_equal(back.centroid_groups().order, groups.order)
