import numpy as np
import pytest

from s5vec import kernels
from s5vec.errors import DimensionError, InvalidArgumentError, InvalidVectorError


def brute(q, x, metric):
    if metric == "l2":
        return ((x - q) ** 2).sum(1)
    if metric == "ip":
        return -(x @ q)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    return 1 - xn @ (q / np.linalg.norm(q))


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_distances_match_definition(metric, rng):
    x = rng.standard_normal((200, 16)).astype(np.float32)
    q = rng.standard_normal(16).astype(np.float32)
    xp = kernels.prepare(x, metric)
    qp = kernels.prepare(q[None], metric)[0]
    d = kernels.distances(qp, xp, metric)
    np.testing.assert_allclose(d, brute(q, x, metric), rtol=1e-4, atol=1e-4)
    idx, nd = kernels.nearest(np.stack([qp, qp]), xp, metric)
    assert idx.tolist() == [int(d.argmin())] * 2
    np.testing.assert_allclose(nd, [d.min()] * 2, rtol=1e-4, atol=1e-4)


def test_scores_and_direction():
    assert kernels.to_score(0.25, "cosine") == 0.75
    assert kernels.to_score(-3.0, "ip") == 3.0
    assert kernels.to_score(4.0, "l2") == 2.0


def test_top_k_sorted_and_stable():
    d = np.array([3, 1, 2, 1, 0, 5], np.float32)
    assert kernels.top_k(d, 3).tolist() == [4, 1, 3]
    assert kernels.top_k(d, 10).tolist() == [4, 1, 3, 2, 0, 5]
    assert kernels.top_k(d[:0], 3).tolist() == []


def test_validation_errors():
    with pytest.raises(DimensionError):
        kernels.as_vector([1.0, 2.0], 3)
    with pytest.raises(InvalidVectorError):
        kernels.as_vector([1.0, float("nan"), 2.0], 3)
    with pytest.raises(InvalidVectorError):
        kernels.as_vector(["a", "b"], 2)
    with pytest.raises(InvalidVectorError):
        kernels.as_vector([[1.0, 2.0]], 2)
    with pytest.raises(InvalidArgumentError):
        kernels.check_metric("hamming")
    for bad in (0, -1, 1.5, True, "3", 10_001):
        with pytest.raises(InvalidArgumentError):
            kernels.check_k(bad)


def test_zero_vector_cosine_is_safe():
    x = kernels.prepare(np.zeros((2, 4), np.float32), "cosine")
    assert np.isfinite(x).all()
