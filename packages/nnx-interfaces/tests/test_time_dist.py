"""Training-time samplers against closed-form moments (scipy quadrature / truncated lognormal)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from nnx_interfaces import InterfaceConfigError, Interfaces, TrainingTimeDistType
from nnx_interfaces.time_dist import sample_time

N = 200_000


def _check_moments(samples, mean, var):
    samples = np.asarray(samples, np.float64)
    se_mean = np.sqrt(var / N)
    assert abs(samples.mean() - mean) < 5 * se_mean, (samples.mean(), mean)
    np.testing.assert_allclose(samples.var(), var, rtol=0.03)


@pytest.mark.parametrize("low,high", [(0.0, 1.0), (0.002, 80.0)])
def test_uniform_moments(low, high):
    t = sample_time(jax.random.key(0), (N,), "uniform", low=low, high=high)
    assert float(t.min()) >= low and float(t.max()) <= high
    _check_moments(t, (low + high) / 2, (high - low) ** 2 / 12)


@pytest.mark.parametrize(
    "mu,sigma,low,high", [(0.0, 1.0, 0.0, 1.0), (-0.4, 1.3, 0.0, 1.0), (0.5, 0.8, 0.002, 80.0)]
)
def test_logitnormal_moments(mu, sigma, low, high):
    t = sample_time(
        jax.random.key(1),
        (N,),
        TrainingTimeDistType.LOGITNORMAL,
        mu=mu,
        sigma=sigma,
        low=low,
        high=high,
    )
    assert float(t.min()) >= low and float(t.max()) <= high

    def moment(k):
        def f(z):
            return (low + (high - low) * special.expit(mu + sigma * z)) ** k * stats.norm.pdf(z)

        return integrate.quad(f, -np.inf, np.inf)[0]

    m1, m2 = moment(1), moment(2)
    _check_moments(t, m1, m2 - m1**2)


@pytest.mark.parametrize("mu,sigma,low,high", [(-1.2, 1.2, 0.002, 80.0), (-0.5, 1.0, 0.0, 1.0)])
def test_truncated_lognormal_moments(mu, sigma, low, high):
    t = sample_time(jax.random.key(2), (N,), "LogNormal", mu=mu, sigma=sigma, low=low, high=high)
    assert float(t.min()) >= low and float(t.max()) <= high
    a = -np.inf if low == 0 else (np.log(low) - mu) / sigma
    b = (np.log(high) - mu) / sigma
    Z = stats.norm.cdf(b) - stats.norm.cdf(a)

    def moment(k):  # E[X^k] of a lognormal truncated to [low, high], closed form
        return (
            np.exp(k * mu + k**2 * sigma**2 / 2)
            * (stats.norm.cdf(b - k * sigma) - stats.norm.cdf(a - k * sigma))
            / Z
        )

    m1, m2 = moment(1), moment(2)
    _check_moments(t, m1, m2 - m1**2)


def test_bad_time_dist_raises_clear_errors():
    with pytest.raises(InterfaceConfigError, match="expected one of"):
        TrainingTimeDistType.parse("gaussian")
    with pytest.raises(InterfaceConfigError, match="sigma > 0"):
        sample_time(jax.random.key(0), (4,), "logitnormal", sigma=0.0)
    with pytest.raises(InterfaceConfigError, match="low < high"):
        sample_time(jax.random.key(0), (4,), "uniform", low=1.0, high=0.0)


@pytest.mark.parametrize("shift", [0.3, 1.0, 2.0, 5.0])
def test_t_shift_fixes_endpoints_and_is_monotone(shift):
    t = jnp.linspace(0.0, 1.0, 1001)
    s = Interfaces.t_shift(t, shift)
    np.testing.assert_allclose([s[0], s[-1]], [0.0, 1.0], atol=1e-6)
    assert bool(jnp.all(jnp.diff(s) > 0))
    # s·t/(1+(s−1)t) is the map that multiplies the odds t/(1−t) by s.
    mid = t[1:-1]
    np.testing.assert_allclose(s[1:-1] / (1 - s[1:-1]), shift * mid / (1 - mid), rtol=1e-3)
