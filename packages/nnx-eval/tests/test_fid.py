"""Fréchet distance: closed forms, scipy reference, robustness on singular covariances."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from nnx_eval.errors import InputError
from nnx_eval.fid import fid_from_stats, frechet_distance, sqrtm_psd, trace_sqrt_product
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


# --- pytorch-fid's value (tools/fixtures/fid_value.py) and FD(P, P) = 0 when n < d -------------
FIXTURE = np.load(Path(__file__).parent / "fixtures" / "fid_value.npz")


def _stats(x):
    acc = RunningStats()
    acc.update(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "only n samples" when n < d
        return acc.result()


@pytest.mark.parametrize("name", ["full", "n_lt_d"])
def test_matches_pytorch_fid_calculate_frechet_distance(name):
    a = _stats(FIXTURE[f"{name}/x1"])
    b = _stats(FIXTURE[f"{name}/x2"])
    if name == "full":  # pytorch-fid's statistics: np.mean, np.cov(rowvar=False)
        np.testing.assert_allclose(a.mu, FIXTURE["full/mu1"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a.sigma, FIXTURE["full/sigma1"], rtol=1e-10, atol=1e-12)
    # n < d: scipy's sqrtm of the singular Σ₁Σ₂ is itself off by a few 1e-6 (it gives −2.9e-6
    # for FD(P, P) in the "self_n_lt_d" case), so the value agrees to that, not to rel 1e-9
    tol = dict(rel=1e-9) if name == "full" else dict(rel=0, abs=1e-5)
    assert fid_from_stats(a, b) == pytest.approx(float(FIXTURE[f"{name}/fd"]), **tol)


def test_fd_of_a_distribution_with_itself_is_zero_when_n_lt_d():
    x = FIXTURE["self_n_lt_d/x1"]  # n = 40 < d = 96; pytorch-fid gives −2.9e-6 here
    assert float(FIXTURE["self_n_lt_d/fd"]) < 0
    s = _stats(x)
    fd = fid_from_stats(s, s)
    assert 0.0 <= fd < 1e-9 * np.trace(s.sigma), fd
    # larger d and n < d, as FD-DINOv2 / FID on a small sample: still ≥ 0 and tiny
    y = np.random.default_rng(8).standard_normal((300, 512)) @ np.diag(np.linspace(0.1, 3, 512))
    s = _stats(y)
    assert 0.0 <= fid_from_stats(s, s) < 1e-9 * np.trace(s.sigma)
    assert trace_sqrt_product(s.sigma, s.sigma) == pytest.approx(np.trace(s.sigma), rel=1e-12)
