import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pkg"))


def clustered(n: int, dim: int, clusters: int = 50, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """Gaussian clusters: the shape real embeddings have, and where ANN indexes can fail."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    return (centres[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
