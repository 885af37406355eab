"""SiT against the Gaussian oracle: exact pred/score/denoiser, irreducible loss, shift, training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.mlp import MLP
from nnx_interfaces import InterfaceConfigError
from nnx_interfaces.oracles import GaussianOracle, linear_path
from nnx_interfaces.sit import SiTInterface

MEAN, STD = jnp.array([0.3, -0.5]), 0.5
ORACLE = GaussianOracle(MEAN, STD, linear_path)


def _oracle_sit(oracle_net, delta=0.0, **kw):
    # SiT: c_in = 1, c_noise = t, F* = E[n − x | x_t] = the exact velocity.
    net = oracle_net(lambda x, c, r, y: ORACLE.velocity(x, c), rngs=nnx.Rngs(0), delta=delta)
    return SiTInterface(
        net, kw.pop("dist", "uniform"), t_shift_base=None, rngs=nnx.Rngs(0, time=1, noise=2), **kw
    )


def test_oracle_network_gives_exact_velocity_score_and_denoiser(oracle_net):
    itf = _oracle_sit(oracle_net)
    k1, k2 = jax.random.split(jax.random.key(0))
    t = jax.random.uniform(k1, (64,), minval=0.05, maxval=0.95)
    x_t = ORACLE.sample_marginal(k2, t, (64, 2))
    np.testing.assert_allclose(itf.pred(x_t, t), ORACLE.velocity(x_t, t), atol=1e-5)
    np.testing.assert_allclose(itf.score(x_t, t), ORACLE.score(x_t, t), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(itf.denoise(x_t, t), ORACLE.posterior_mean_x(x_t, t), atol=1e-5)
    # The path the interface trains on is the affine path it declares.
    x, n = jnp.ones((64, 2)), -jnp.ones((64, 2))
    a, s = itf.alpha_sigma(t)
    np.testing.assert_allclose(itf.sample_x_t(x, n, t), a[:, None] * x + s[:, None] * n)
    assert itf.time_domain.noise == 1.0 and itf.time_domain.data == 0.0


@pytest.mark.parametrize("dist", ["uniform", "logitnormal", "lognormal"])
def test_loss_at_oracle_is_the_irreducible_loss_and_perturbations_cost_more(oracle_net, dist):
    x = ORACLE.sample_data(jax.random.key(3), (40_000, 2))
    loss, aux = _oracle_sit(oracle_net, dist=dist, t_mu=-0.3, t_sigma=0.8).loss(x, return_aux=True)
    # Irreducible loss of target n − x given x_t: Var(n − x | x_t), averaged over the drawn t.
    expected = jnp.mean(ORACLE.conditional_variance(-1.0, 1.0, aux["t"]))
    np.testing.assert_allclose(loss, expected, rtol=0.02)
    for delta in (0.1, -0.3):
        worse = _oracle_sit(oracle_net, delta=delta, dist=dist, t_mu=-0.3, t_sigma=0.8).loss(x)
        assert float(worse) > float(loss)
        np.testing.assert_allclose(worse - loss, delta**2, rtol=0.15)


def test_resolution_shift_multiplies_the_odds():
    # logit(t_shifted) = logit(t) + log s, so a logit-normal (mu, 1) becomes (mu + log s, 1).
    itf = SiTInterface(
        MLP((2,), width=16, depth=2, rngs=nnx.Rngs(0)),
        "logitnormal",
        t_mu=0.2,
        t_sigma=1.0,
        t_shift_base=1024,
        rngs=nnx.Rngs(time=5),
    )
    t = itf.sample_t((100_000,), data_shape=(64, 64, 4))  # s = sqrt(16384 / 1024) = 4
    logit = jnp.log(t) - jnp.log1p(-t)
    np.testing.assert_allclose(jnp.mean(logit), 0.2 + np.log(4.0), atol=0.02)
    np.testing.assert_allclose(jnp.std(logit), 1.0, atol=0.02)


def test_bad_configuration_raises():
    net = MLP((2,), width=16, depth=2, rngs=nnx.Rngs(0))
    with pytest.raises(InterfaceConfigError, match="expected one of"):
        SiTInterface(net, "cosine")
    with pytest.raises(InterfaceConfigError, match="t_shift_base"):
        SiTInterface(net, "uniform", t_shift_base=0)
    with pytest.raises(InterfaceConfigError, match="sigma > 0"):
        SiTInterface(net, "logitnormal", t_sigma=-1.0)
