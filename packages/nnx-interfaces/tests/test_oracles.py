"""The Gaussian oracles checked against independent facts (densities, autodiff, Monte Carlo)."""

import jax
import jax.numpy as jnp
import numpy as np

from nnx_interfaces.oracles import GaussianOracle, linear_path, ve_path


def _oracle(path=linear_path):
    return GaussianOracle(jnp.array([0.7, -1.3]), 0.4, path)


def test_score_is_gradient_of_log_marginal_density():
    o = _oracle()
    t = jnp.array([0.3])

    def log_p(x):
        a, _ = linear_path(t)
        v = o.marginal_variance(t)
        return jnp.sum(-0.5 * (x - a * o.mean) ** 2 / v)

    x = jnp.array([[0.2, 0.5]])
    np.testing.assert_allclose(o.score(x, t), jax.grad(log_p)(x), rtol=1e-5)


def test_velocity_is_time_derivative_of_ode_map():
    for path, t0 in ((linear_path, 0.6), (ve_path, 2.0)):
        o = _oracle(path)
        x = jnp.array([[0.2, 0.5], [-1.0, 3.0]])
        t = jnp.full((2,), t0)
        _, dphi = jax.jvp(lambda u: o.ode_map(x, t, u), (t,), (jnp.ones_like(t),))
        np.testing.assert_allclose(dphi, o.velocity(x, t), rtol=1e-5, atol=1e-6)


def test_ode_map_composes_and_transports_the_marginals():
    o = _oracle()
    x = jnp.array([[0.2, 0.5]])
    s, u, t = jnp.array([0.9]), jnp.array([0.5]), jnp.array([0.1])
    np.testing.assert_allclose(o.ode_map(o.ode_map(x, s, u), u, t), o.ode_map(x, s, t), rtol=1e-6)
    z = o.sample_marginal(jax.random.key(0), jnp.array([1.0]), (40_000, 2))
    x0 = o.ode_map(z, jnp.ones(40_000), jnp.zeros(40_000))
    np.testing.assert_allclose(x0.mean(0), o.mean, atol=0.02)
    np.testing.assert_allclose(x0.std(0), [0.4, 0.4], atol=0.01)


def test_posterior_means_match_monte_carlo_regression():
    o = _oracle()
    key_x, key_n = jax.random.split(jax.random.key(1))
    x = o.sample_data(key_x, (200_000, 2))
    n = jax.random.normal(key_n, x.shape)
    t = jnp.full((200_000,), 0.4)
    x_t = (1 - 0.4) * x + 0.4 * n
    # E[x | x_t] is linear in x_t: regress x on x_t coordinate-wise and compare.
    for d in range(2):
        slope, intercept = np.polyfit(np.asarray(x_t[:, d]), np.asarray(x[:, d]), 1)
        pred = o.posterior_mean_x(x_t[:2], t[:2])[:, d]
        np.testing.assert_allclose(pred, slope * x_t[:2, d] + intercept, atol=0.01)
    resid = x - o.posterior_mean_x(x_t, t)
    np.testing.assert_allclose(
        jnp.var(resid, axis=0), o.conditional_variance(1.0, 0.0, t[:1]).repeat(2), rtol=0.02
    )


def test_average_velocity_meanflow_identity():
    o = _oracle()
    x_t = jnp.array([[0.2, 0.5]])
    t, r = jnp.array([0.8]), jnp.array([0.3])
    u = o.average_velocity(x_t, t, r)
    np.testing.assert_allclose(x_t - (t - r)[:, None] * u, o.ode_map(x_t, t, r), rtol=1e-6)
    np.testing.assert_allclose(o.average_velocity(x_t, t, t), o.velocity(x_t, t), rtol=1e-6)
