"""Fréchet distance: closed forms, scipy reference, robustness on singular covariances."""

import warnings

import numpy as np
import pytest
import scipy.linalg

from nnx_eval.errors import InputError
from nnx_eval.fid import fid_from_stats, frechet_distance, sqrtm_psd
from nnx_eval.stats import GaussianStats, RunningStats


def _random_spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d


def test_same_covariance_gives_squared_mean_distance():
    rng = np.random.default_rng(0)
    sigma = _random_spd(rng, 16)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(
        np.sum((mu1 - mu2) ** 2), rel=1e-9, abs=1e-9
    )


def test_identical_stats_give_zero_and_distance_is_symmetric():
    rng = np.random.default_rng(1)
    s1, s2 = _random_spd(rng, 32), _random_spd(rng, 32)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-9
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        frechet_distance(mu2, s2, mu1, s1), rel=1e-10
    )


def test_commuting_diagonal_covariances_closed_form():
    # Σ₁ = diag(a), Σ₂ = diag(b): tr(Σ₁Σ₂)^{1/2} = Σ √(a b), FD = Σ (√a − √b)².
    a, b = np.array([1.0, 4.0, 9.0, 0.0]), np.array([4.0, 1.0, 9.0, 2.0])
    fd = frechet_distance(np.zeros(4), np.diag(a), np.zeros(4), np.diag(b))
    assert fd == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-12)


def test_matches_direct_scipy_sqrtm_on_random_features():
    rng = np.random.default_rng(2)
    d, n = 64, 400
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    y = 0.3 + rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)


def test_rank_deficient_covariances_stay_real_and_finite():
    rng = np.random.default_rng(3)
    d = 128
    # Fewer samples than dimensions (rank 19) and an exactly-zero block.
    x, y = rng.standard_normal((20, d)), rng.standard_normal((20, d)) + 1.0
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    s2[:, :10] = s2[:10, :] = 0.0
    fd = frechet_distance(x.mean(0), s1, y.mean(0), s2)
    assert isinstance(fd, float) and np.isfinite(fd)
    # Lower bound: FD ≥ ‖Δμ‖² (the trace part is a squared Bures distance, ≥ 0).
    assert fd >= np.sum((x.mean(0) - y.mean(0)) ** 2) - 1e-9
    # sqrtm of a singular PSD matrix is real, symmetric, squares back.
    r = sqrtm_psd(s1)
    np.testing.assert_allclose(r @ r, s1, atol=1e-10)


def test_running_stats_warn_when_fewer_samples_than_dims():
    acc = RunningStats()
    acc.update(np.random.default_rng(4).standard_normal((10, 32)))
    with pytest.warns(UserWarning, match="only 10 samples"):
        acc.result()
    acc.update(np.random.default_rng(5).standard_normal((30, 32)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        acc.result()


def test_fid_from_stats_and_bad_shapes():
    rng = np.random.default_rng(6)
    a = GaussianStats(rng.standard_normal(8), np.eye(8))
    b = GaussianStats(rng.standard_normal(8), 4 * np.eye(8))
    assert fid_from_stats(a, b) == pytest.approx(np.sum((a.mu - b.mu) ** 2) + 8 * (2 - 1) ** 2)
    with pytest.raises(InputError, match="same features"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(InputError, match="NaN"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([np.nan, 0]), np.eye(2))
    with pytest.raises(InputError):
        GaussianStats(np.zeros(3), np.eye(2))
