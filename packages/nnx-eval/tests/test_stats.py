"""Streaming statistics equal batch statistics for any batching, and merge across shards."""

import numpy as np
import pytest

from nnx_eval.errors import InputError
from nnx_eval.stats import RunningStats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_batch_for_random_batching(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((257, 12)) * rng.uniform(0.1, 3, 12) + rng.standard_normal(12)
    cuts = np.sort(rng.choice(np.arange(1, 257), size=rng.integers(1, 20), replace=False))
    acc = RunningStats()
    for part in np.split(x, cuts):
        acc.update(part.astype(np.float32) if seed == 2 else part)
    s = acc.result()
    ref = x.astype(np.float32).astype(np.float64) if seed == 2 else x
    np.testing.assert_allclose(s.mu, ref.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.sigma, np.cov(ref, rowvar=False), rtol=1e-10, atol=1e-12)
    assert s.n == 257


def test_single_rows_and_merge_of_shards():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 5))
    one_by_one, a, b = RunningStats(), RunningStats(), RunningStats()
    for row in x:
        one_by_one.update(row[None])
    a.update(x[:17])
    b.update(x[17:])
    a.merge(b)
    for acc in (one_by_one, a):
        np.testing.assert_allclose(acc.result().sigma, np.cov(x, rowvar=False), atol=1e-12)


def test_no_cancellation_with_large_mean():
    # |μ| = 1e6 ≫ σ = 1: Σxxᵀ − nμμᵀ in float64 would lose every digit of the variance.
    rng = np.random.default_rng(4)
    x = 1e6 + rng.standard_normal((1000, 3))
    acc = RunningStats()
    for part in np.array_split(x, 7):
        acc.update(part)
    np.testing.assert_allclose(acc.result().sigma, np.cov(x, rowvar=False), rtol=1e-6)


def test_errors():
    acc = RunningStats()
    with pytest.raises(InputError, match="at least 2"):
        acc.result()
    acc.update(np.zeros((3, 4)))
    with pytest.raises(InputError, match="dimension 4"):
        acc.update(np.zeros((3, 5)))
    with pytest.raises(InputError, match=r"\[B, D\]"):
        acc.update(np.zeros(4))
