"""Discrete DDPM: schedules against the published definitions, and ε/v-prediction in continuous
time against the Gaussian oracle (pred, score, denoiser, irreducible loss)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.mlp import MLP
from nnx_interfaces import InterfaceConfigError
from nnx_interfaces.ddpm import DDPMInterface
from nnx_interfaces.oracles import GaussianOracle

MEAN, STD = jnp.array([0.3, -0.5]), 0.5


def _net():
    return MLP((2,), width=16, depth=2, rngs=nnx.Rngs(0))


def test_schedules_match_ho_and_nichol_definitions():
    t = jnp.arange(1001) / 1000.0
    # Ho et al.: β linear from 1e-4 to 0.02 over 1000 steps; ᾱ_T = 4.0358e-5.
    lin = DDPMInterface(_net(), beta_schedule="linear")
    a, s = lin.alpha_sigma(t)
    ab = np.concatenate([[1.0], np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))])
    np.testing.assert_allclose(a**2, ab, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(a[-1] ** 2, 4.0358e-5, rtol=1e-3)
    np.testing.assert_allclose(a**2 + s**2, 1.0, atol=1e-6)
    # Nichol & Dhariwal: ᾱ_i = f(i)/f(0) wherever the 0.999 clip is inactive.
    cos = DDPMInterface(_net(), beta_schedule="cosine")
    f = np.cos((np.arange(1001) / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2
    a, _ = cos.alpha_sigma(t[:990])
    np.testing.assert_allclose(a**2, f[:990] / f[0], rtol=1e-4, atol=1e-7)
    assert cos.time_domain.eps == 1e-3 and cos.time_domain.noise == 1.0


def _f_star(oracle, prediction, num_steps=1000):
    def f(x_in, c_noise, r, y):  # c_in = 1 and c_noise = t − 1/T: the network sees x_t directly
        t = c_noise + 1.0 / num_steps
        n_hat = oracle.posterior_mean_n(x_in, t)
        x_hat = oracle.posterior_mean_x(x_in, t)
        if prediction == "eps":
            return n_hat
        a, s = oracle.alpha_sigma(t)
        return a[:, None] * n_hat - s[:, None] * x_hat

    return f


def _oracle_ddpm(oracle_net, schedule, prediction, delta=0.0, **kw):
    itf = DDPMInterface(_net(), beta_schedule=schedule, prediction=prediction, **kw)
    oracle = GaussianOracle(MEAN, STD, itf.alpha_sigma)
    f_star = _f_star(oracle, prediction, kw.get("num_steps", 1000))
    net = oracle_net(f_star, rngs=nnx.Rngs(0), delta=delta)
    itf = DDPMInterface(
        net, beta_schedule=schedule, prediction=prediction, rngs=nnx.Rngs(0, time=1, noise=2), **kw
    )
    return itf, oracle


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_oracle_gives_exact_pred_score_and_denoiser(oracle_net, schedule, prediction):
    itf, oracle = _oracle_ddpm(oracle_net, schedule, prediction)
    k1, k2 = jax.random.split(jax.random.key(0))
    t = jax.random.uniform(k1, (64,), minval=0.02, maxval=0.95)
    x_t = oracle.sample_marginal(k2, t, (64, 2))
    np.testing.assert_allclose(
        itf.denoise(x_t, t), oracle.posterior_mean_x(x_t, t), atol=1e-5, rtol=1e-5
    )
    np.testing.assert_allclose(itf.pred(x_t, t), oracle.velocity(x_t, t), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(itf.score(x_t, t), oracle.score(x_t, t), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule,prediction", [("linear", "eps"), ("cosine", "v")])
def test_loss_at_oracle_is_irreducible_and_perturbations_cost_more(
    oracle_net, schedule, prediction
):
    itf, oracle = _oracle_ddpm(oracle_net, schedule, prediction)
    x = oracle.sample_data(jax.random.key(3), (40_000, 2))
    loss, aux = itf.loss(x, return_aux=True)
    t = aux["t"]
    if prediction == "eps":  # Var(n | x_t)
        irreducible = oracle.conditional_variance(0.0, 1.0, t)
    else:  # Var(α·n − σ·x | x_t)
        a, s = oracle.alpha_sigma(t)
        irreducible = oracle.conditional_variance(-s, a, t)
    np.testing.assert_allclose(loss, jnp.mean(irreducible), rtol=0.02)
    worse = _oracle_ddpm(oracle_net, schedule, prediction, delta=0.2)[0].loss(x)
    assert float(worse) > float(loss)
    np.testing.assert_allclose(worse - loss, 0.04, rtol=0.15)


def test_training_index_is_uniform_on_1_to_T():
    itf = DDPMInterface(_net(), "uniform", rngs=nnx.Rngs(time=3))
    i = np.asarray(itf.sample_t((200_000,))) * 1000
    np.testing.assert_allclose(i, np.round(i), atol=1e-3)
    assert i.min() >= 1 - 1e-3 and i.max() <= 1000 + 1e-3
    np.testing.assert_allclose(i.mean(), 500.5, atol=2.0)
    np.testing.assert_allclose(i.var(), (1000**2 - 1) / 12, rtol=0.02)


def test_network_sees_the_release_index_n_at_alphas_cumprod_n():
    """DiT/ADM feed the 0-based index n at the noise level alphas_cumprod[n] = ᾱ_{n+1}, which
    sits at t = (n + 1)/T here: the network must get n/T (n after DiT's ×1000 for T = 1000)."""
    seen = {}

    class Probe(nnx.Module):
        def __call__(self, x, t, **kw):
            seen["t"] = t
            return jnp.zeros_like(x)

    for num_steps in (1000, 250):
        itf = DDPMInterface(Probe(), num_steps=num_steps, rngs=nnx.Rngs(0))
        n = jnp.array([0, 1, 17, num_steps - 1])
        t = (n + 1) / num_steps
        alphas_cumprod = np.cumprod(1 - np.linspace(1e-4, 0.02, num_steps) * 1000 / num_steps)
        np.testing.assert_allclose(itf.alpha_sigma(t)[0] ** 2, alphas_cumprod[n], rtol=2e-5)
        itf.denoise(jnp.zeros((4, 2)), t)
        np.testing.assert_allclose(seen["t"] * num_steps, n, atol=1e-4)


def test_denoise_and_variance_needs_a_learn_sigma_network():
    itf = DDPMInterface(_net(), rngs=nnx.Rngs(0))
    assert not itf.learned_variance
    with pytest.raises(InterfaceConfigError, match="learn_sigma"):
        itf.denoise_and_variance(jnp.zeros((2, 2)), jnp.full((2,), 0.5))


def test_bad_configuration_raises():
    with pytest.raises(InterfaceConfigError, match="beta schedule"):
        DDPMInterface(_net(), beta_schedule="quadratic")
    with pytest.raises(InterfaceConfigError, match="prediction"):
        DDPMInterface(_net(), prediction="x0")
    with pytest.raises(InterfaceConfigError, match="num_steps"):
        DDPMInterface(_net(), num_steps=0)
