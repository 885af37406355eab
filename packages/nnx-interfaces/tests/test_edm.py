"""EDM against the Gaussian oracle: exact denoiser/pred/score through the preconditioning,
irreducible weighted loss, EDM's unit effective weight, and the σ training distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.mlp import MLP
from nnx_interfaces import InterfaceConfigError
from nnx_interfaces.edm import EDMInterface
from nnx_interfaces.oracles import GaussianOracle, ve_path

MEAN, STD, SD = jnp.array([0.3, -0.5]), 0.5, 0.5
ORACLE = GaussianOracle(MEAN, STD, ve_path)


def _f_star(x_in, c_noise, r, y):
    # Invert EDM's input preconditioning by hand: σ = exp(4·c_noise), x_σ = x_in·sqrt(σ² + σ_d²);
    # then the optimal raw output is F* = (D* − c_skip·x_σ) / c_out with D* = E[x | x_σ].
    sigma = jnp.exp(4.0 * c_noise)
    s = sigma[:, None]
    x_t = x_in * jnp.sqrt(s**2 + SD**2)
    c_skip = SD**2 / (s**2 + SD**2)
    c_out = s * SD / jnp.sqrt(s**2 + SD**2)
    return (ORACLE.posterior_mean_x(x_t, sigma) - c_skip * x_t) / c_out


def _oracle_edm(oracle_net, delta=0.0, **kw):
    net = oracle_net(_f_star, rngs=nnx.Rngs(0), delta=delta)
    return EDMInterface(
        net, kw.pop("dist", "lognormal"), x_sigma=SD, rngs=nnx.Rngs(0, time=1, noise=2), **kw
    )


def test_oracle_network_gives_exact_denoiser_velocity_and_score(oracle_net):
    itf = _oracle_edm(oracle_net)
    k1, k2 = jax.random.split(jax.random.key(0))
    sigma = jnp.exp(jax.random.uniform(k1, (64,), minval=np.log(0.01), maxval=np.log(50.0)))
    x_t = ORACLE.sample_marginal(k2, sigma, (64, 2))
    np.testing.assert_allclose(
        itf.denoise(x_t, sigma), ORACLE.posterior_mean_x(x_t, sigma), atol=1e-5, rtol=1e-5
    )
    # dx/dσ of the probability-flow ODE in σ, and the score, both scaled to O(1) before compare.
    np.testing.assert_allclose(
        itf.pred(x_t, sigma), ORACLE.velocity(x_t, sigma), atol=1e-4, rtol=1e-4
    )
    s2 = sigma[:, None] ** 2
    np.testing.assert_allclose(
        s2 * itf.score(x_t, sigma), s2 * ORACLE.score(x_t, sigma), atol=1e-4, rtol=1e-4
    )
    dom = itf.time_domain
    assert (dom.noise, dom.data, dom.variable, dom.eps) == (80.0, 0.0, "sigma", 0.002)


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "logitnormal"])
def test_loss_at_oracle_is_the_irreducible_loss_and_perturbations_cost_more(oracle_net, dist):
    kw = {"t_mu": -1.2, "t_sigma": 1.2} if dist == "lognormal" else {"sigma_max": 5.0}
    x = ORACLE.sample_data(jax.random.key(3), (40_000, 2))
    loss, aux = _oracle_edm(oracle_net, dist=dist, **kw).loss(x, return_aux=True)
    sigma = aux["t"]
    lam = (sigma**2 + SD**2) / (sigma * SD) ** 2
    np.testing.assert_allclose(aux["weight"], lam, rtol=1e-6)
    # Irreducible loss of target x given x_σ: λ(σ)·Var(x | x_σ), averaged over the drawn σ.
    expected = jnp.mean(lam * ORACLE.conditional_variance(1.0, 0.0, sigma))
    np.testing.assert_allclose(loss, expected, rtol=0.02)
    for delta in (0.1, -0.3):
        worse = _oracle_edm(oracle_net, delta=delta, dist=dist, **kw).loss(x)
        assert float(worse) > float(loss)
        # λ·c_out² = 1: a constant offset δ in F costs exactly δ² on average.
        np.testing.assert_allclose(worse - loss, delta**2, rtol=0.15)


def test_lognormal_sigma_matches_edm_p_mean_p_std():
    itf = EDMInterface(MLP((2,), width=16, depth=2, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(time=4))
    log_sigma = jnp.log(itf.sample_t((100_000,)))
    # Truncation to [0.002, 80] is ≥ 4 standard deviations away: moments of N(−1.2, 1.2²).
    np.testing.assert_allclose(jnp.mean(log_sigma), -1.2, atol=0.02)
    np.testing.assert_allclose(jnp.std(log_sigma), 1.2, atol=0.02)


def test_bad_configuration_raises():
    net = MLP((2,), width=16, depth=2, rngs=nnx.Rngs(0))
    with pytest.raises(InterfaceConfigError, match="sigma_min < sigma_max"):
        EDMInterface(net, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(InterfaceConfigError, match="x_sigma"):
        EDMInterface(net, x_sigma=0.0)
