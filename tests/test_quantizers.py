import numpy as np
import pytest

from s5vec import kernels
from s5vec import quantizers as qz
from s5vec.errors import FormatError, InvalidArgumentError


def blobs(n, d, c, seed=0, spread=0.1, scale=1.0):
    rng = np.random.default_rng(seed)
    centers = (scale * rng.normal(size=(c, d))).astype(np.float32)
    labels = rng.integers(c, size=n)
    return (centers[labels] + spread * rng.normal(size=(n, d))).astype(np.float32), centers, labels


def test_kmeanspp_init_picks_data_points():
    x, _, _ = blobs(500, 8, 5, seed=1)
    rng = np.random.default_rng(0)
    c = qz._kmeanspp(x, 10, rng, "l2")
    # every seed is a row of x, and no two seeds coincide
    d = _all_distances(c, x, "l2")
    assert np.allclose(d.min(axis=1), 0.0, atol=1e-4)
    assert len({tuple(r) for r in c}) == 10


def test_kmeans_recovers_separated_blobs():
    x, centers, labels = blobs(3000, 16, 12, seed=2, spread=0.05, scale=3.0)
    c = qz.kmeans(x, 12, seed=0)
    assert c.shape == (12, 16) and c.dtype == np.float32
    # each true centre has a found centroid very close to it (++ init spreads the seeds)
    d = _all_distances(centers, c, "l2")
    assert d.min(axis=1).max() < 0.05


def test_kmeans_no_empty_clusters_and_progress():
    x, _, _ = blobs(4000, 8, 30, seed=3)
    calls = []
    c = qz.kmeans(x, 64, iters=10, progress=lambda done, total: calls.append((done, total)))
    counts = np.bincount(qz.assign(x, c), minlength=64)
    assert counts.min() > 0
    assert calls and calls[-1][0] <= 10 and calls[0] == (1, 10)


def test_kmeans_reseeds_empty_clusters_with_duplicates():
    # Most rows coincide: naive Lloyd leaves clusters empty; re-seeding keeps every cluster used.
    rng = np.random.default_rng(4)
    x = np.concatenate([np.zeros((900, 4), np.float32), rng.normal(size=(100, 4)).astype(np.float32)])
    c = qz.kmeans(x, 20, seed=1)
    counts = np.bincount(qz.assign(x, c), minlength=20)
    assert counts.min() > 0


def test_minibatch_close_to_full_kmeans():
    x, _, _ = blobs(60_000, 32, 50, seed=5, spread=0.5)
    full = qz._lloyd(x, qz._kmeanspp(x[:10_000], 64, np.random.default_rng(0), "l2"), 20, "l2", 1e-4, None)
    mb = qz.kmeans(x, 64, seed=0, batch_size=2048)
    i_full, i_mb = qz.inertia(x, full), qz.inertia(x, mb)
    assert i_mb <= 1.05 * i_full, (i_mb, i_full)
    assert np.bincount(qz.assign(x, mb), minlength=64).min() > 0


def test_minibatch_automatic_for_large_inputs(monkeypatch):
    x, _, _ = blobs(3000, 8, 10, seed=6)
    seen = {}
    real = qz._minibatch

    def spy(*a, **k):
        seen["mb"] = True
        return real(*a, **k)

    monkeypatch.setattr(qz, "_minibatch", spy)
    monkeypatch.setattr(qz, "MINIBATCH_THRESHOLD", 1000)
    c = qz.kmeans(x, 10)
    assert seen.get("mb") and c.shape == (10, 8)


def test_spherical_kmeans_unit_centroids():
    x, _, _ = blobs(2000, 16, 10, seed=7, spread=0.2, scale=2.0)
    c = qz.kmeans(x, 10, metric="cosine")
    assert np.allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    u = kernels.prepare(x, "cosine")
    assert np.bincount(qz.assign(u, c, "cosine"), minlength=10).min() > 0


def test_assign_matches_brute_force():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1000, 12)).astype(np.float32)
    c = rng.normal(size=(37, 12)).astype(np.float32)
    for metric in ("l2", "ip", "cosine"):
        xp, cp = kernels.prepare(x, metric), kernels.prepare(c, metric)
        labels, dist = qz.assign(xp, cp, metric, return_distances=True)
        full = _all_distances(xp, cp, metric)
        assert np.array_equal(labels, full.argmin(axis=1))
        assert np.allclose(dist, full.min(axis=1), atol=1e-4)


def test_kmeans_validation():
    x = np.zeros((5, 3), np.float32)
    with pytest.raises(InvalidArgumentError):
        qz.kmeans(x, 6)
    with pytest.raises(InvalidArgumentError):
        qz.kmeans(x, 0)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidArgumentError):
        qz.kmeans(bad, 2)


def test_float32_codec_identity():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    c = qz.Float32Codec(8, "l2")
    assert isinstance(c, qz.Codec)
    codes = c.encode(x)
    assert np.array_equal(c.decode(codes), x)
    q = x[3]
    assert np.allclose(c.distances(q, codes), kernels.distances(q, x, "l2"))
    c2 = qz.codec_from_state(c.state())
    assert isinstance(c2, qz.Float32Codec) and c2.dim == 8


def test_sq8_codec_error_and_distances():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    c = qz.SQ8Codec(32, "l2")
    c.train(x)
    codes = c.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == x.shape
    err = np.abs(c.decode(codes) - x)
    assert (err <= c.scale / 2 + 1e-5).all()
    q = rng.normal(size=32).astype(np.float32)
    approx, exact = c.distances(q, codes), kernels.distances(q, x, "l2")
    assert np.corrcoef(approx, exact)[0, 1] > 0.999
    # out-of-range values clip instead of wrapping
    assert (c.encode(x * 10) <= 255).all()
    c2 = qz.codec_from_state(c.state())
    assert np.array_equal(c2.encode(x), codes)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_pq_adc_equals_distance_to_reconstruction(metric):
    rng = np.random.default_rng(11)
    x = kernels.prepare(rng.normal(size=(3000, 32)).astype(np.float32), metric)
    pq = qz.PQCodec(32, 8, metric=metric)
    pq.train(x)
    codes = pq.encode(x)
    assert codes.shape == (3000, 8) and codes.dtype == np.uint8
    rec = pq.decode(codes)
    q = kernels.prepare(rng.normal(size=(1, 32)).astype(np.float32), metric)[0]
    adc = pq.distances(q, codes)
    ref = kernels.distances(q, rec, metric)
    assert np.allclose(adc, ref, atol=1e-3)
    # the reconstruction is much closer than chance
    assert np.mean(np.sum((rec - x) ** 2, axis=1)) < 0.6 * np.mean(np.sum(x**2, axis=1))
    # state round trip gives identical codes and distances
    pq2 = qz.codec_from_state(pq.state())
    assert np.array_equal(pq2.encode(x[:100]), codes[:100])
    assert np.allclose(pq2.distances(q, codes), adc)


def test_pq_params_and_small_training_sets():
    assert qz.default_pq_m(128) == 16
    assert qz.default_pq_m(100) == 10
    assert qz.default_pq_m(7) == 1
    with pytest.raises(InvalidArgumentError):
        qz.PQCodec(30, 7)
    with pytest.raises(InvalidArgumentError):
        qz.PQCodec(32, 8, nbits=9)
    pq = qz.PQCodec(16, 4)
    with pytest.raises(InvalidArgumentError):
        pq.encode(np.zeros((1, 16), np.float32))
    x = np.random.default_rng(12).normal(size=(100, 16)).astype(np.float32)
    pq.train(x)  # fewer rows than 256: ksub shrinks to the row count
    assert pq.ksub == 100
    assert pq.encode(x).max() < 100


def test_codec_from_state_rejects_unknown():
    with pytest.raises(FormatError):
        qz.codec_from_state({"codec": "nope"})


def _all_distances(queries, data, metric):
    """Reference: one :func:`kernels.distances` call per query row."""
    return np.stack([kernels.distances(q, data, metric) for q in queries])


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_rotated_pq_adc_equals_distance_to_reconstruction_and_round_trips(metric):
    """PQ of a principal-axes rotation: ADC distances are still distances to decode(code) (the
    rotation is orthonormal), the state carries it, and on low-rank data it codes far better."""
    rng = np.random.default_rng(3)
    dim = 48
    x = (rng.standard_normal((4000, 6)) @ rng.standard_normal((6, dim))).astype(np.float32)
    x += 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    if metric == "cosine":
        x = kernels.prepare(x, "cosine")
    rot = qz.PQCodec(dim, 8, 8, metric, seed=1, rotate=True)
    rot.train(x)
    r = rot.rotation
    assert r is not None and np.allclose(r.T @ r, np.eye(dim), atol=1e-4)
    codes = rot.encode(x)
    q = x[7] + 0.1
    want = kernels.distances(q, rot.decode(codes), metric)
    assert np.allclose(rot.distances(q, codes), want, atol=2e-3 * max(1.0, float(np.abs(want).max())))
    back = qz.codec_from_state(rot.state())
    assert np.array_equal(back.encode(x[:100]), codes[:100]) and np.allclose(back.decode(codes[:5]), rot.decode(codes[:5]))
    plain = qz.PQCodec(dim, 8, 8, metric, seed=1)
    plain.train(x)
    assert "rotation" not in plain.state()
    err = lambda c: float(np.mean(np.sum((c.decode(c.encode(x)) - x) ** 2, axis=1)))  # noqa: E731
    assert err(rot) < 0.5 * err(plain)


def test_kmeans_work_rule_at_scale():
    # up to k = 4096 (a 1M index) the rule is the old one: 16 rows per centre
    for k in (16, 64, 1024, 4096):
        assert qz.seeding_rows(k) == max(10_000, 16 * k)
        assert qz.minibatch_rows(k) == max(4096, 16 * k)
    # beyond, seeding and a mini-batch step cost no more than at k = 4096 (10M: k = 16384)
    for k in (8192, 16384, 32768, 65536):
        assert qz.seeding_rows(k) >= k
        assert qz.seeding_rows(k) * k <= max(qz.KMEANS_WORK, k * k)
        assert qz.minibatch_rows(k) * k <= max(qz.KMEANS_WORK, 4096 * k)
    assert qz.seeding_rows(8192) == 32_768 and qz.minibatch_rows(8192) == 32_768
    assert qz.seeding_rows(16384) == 16_384 and qz.minibatch_rows(16384) == 16_384


def test_kmeans_many_centres_seeds_from_rows_without_empty_lists(monkeypatch):
    # k = 16384 (the 10M default nlist): seeding is a draw of k rows, batches are k rows
    rng = np.random.default_rng(3)
    x = rng.standard_normal((60_000, 4)).astype(np.float32)
    seen = {}
    monkeypatch.setattr(qz, "_kmeanspp", lambda *a, **k: seen.setdefault("pp", True) and None)
    real = qz._minibatch

    def spy(x_, centers, b, steps, *a, **k):
        seen["b"] = b
        seen["init"] = centers.copy()
        return real(x_, centers, b, steps, *a, **k)

    monkeypatch.setattr(qz, "_minibatch", spy)
    c = qz.kmeans(x, 16384, iters=1, seed=0)
    assert "pp" not in seen and seen["b"] == 16384
    # the seeds are distinct data points
    init = seen["init"]
    assert np.unique(init, axis=0).shape[0] == 16384
    assert np.isin(init.view([("", init.dtype)] * 4).ravel(), x.view([("", x.dtype)] * 4).ravel()).all()
    assert c.shape == (16384, 4) and np.isfinite(c).all()
    assert np.bincount(qz.assign(x, c), minlength=16384).min() > 0
    # and beats the seeds alone
    assert qz.inertia(x, c) < qz.inertia(x, init)
