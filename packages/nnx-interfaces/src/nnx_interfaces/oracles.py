"""Closed-form Gaussian oracles for testing objectives and samplers.

Data x ~ N(μ, s²·I) and noise n ~ N(0, I) on an affine path x_t = α(t)·x + σ(t)·n. Then x_t is
Gaussian with mean α·μ and variance v(t) = α²s² + σ², and (x, n) given x_t is Gaussian:

    E[x | x_t] = μ + α s² / v · (x_t − α μ)          (the exact denoiser)
    E[n | x_t] = σ / v · (x_t − α μ)
    ∇ log p_t(x_t) = −(x_t − α μ) / v = −E[n | x_t] / σ
    velocity   b(x_t, t) = α'·E[x | x_t] + σ'·E[n | x_t]
    ODE map    Φ(x, t → u) = α(u) μ + sqrt(v(u) / v(t)) · (x − α(t) μ)
    average velocity (MeanFlow) u(x_t, t, r) = (x_t − Φ(x_t, t → r)) / (t − r)

`alpha_sigma` is any callable t ↦ (α(t), σ(t)); an interface's own `alpha_sigma` plugs in directly,
whatever its time convention (SiT: noise at 1; EDM: α = 1, σ = t; flow maps: noise at 0).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

AlphaSigma = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def _right(a: jax.Array, x: jax.Array) -> jax.Array:
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


class GaussianOracle:
    """Exact answers for Gaussian data N(mean, std²·I) on the path given by `alpha_sigma`.

    Args:
      mean: data mean, a scalar or an array of one example's shape.
      std: isotropic data standard deviation s > 0.
      alpha_sigma: t ↦ (α(t), σ(t)), vectorised over `[B]` times.
    """

    def __init__(self, mean: float | jax.Array, std: float, alpha_sigma: AlphaSigma):
        self.mean = jnp.asarray(mean, jnp.float32)
        self.std = float(std)
        self.alpha_sigma = alpha_sigma

    def coefficients(self, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(α, σ, α', σ') at `t: [B]`."""
        (a, s), (da, ds) = jax.jvp(self.alpha_sigma, (t,), (jnp.ones_like(t),))
        return a, s, da, ds

    def marginal_variance(self, t: jax.Array) -> jax.Array:
        """v(t) = α²s² + σ² per coordinate, `[B]`."""
        a, s = self.alpha_sigma(t)
        return a**2 * self.std**2 + s**2

    def sample_data(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Draw `shape` samples of the data distribution (`shape[0]` is the batch)."""
        return self.mean + self.std * jax.random.normal(key, shape)

    def sample_marginal(self, key: jax.Array, t: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Draw x_t ~ p_t exactly."""
        a, _ = self.alpha_sigma(t)
        z = jax.random.normal(key, shape)
        return _right(a, z) * self.mean + jnp.sqrt(_right(self.marginal_variance(t), z)) * z

    def posterior_mean_x(self, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """E[x | x_t], the exact denoiser."""
        a, _ = self.alpha_sigma(t)
        v = self.marginal_variance(t)
        return self.mean + _right(a * self.std**2 / v, x_t) * (x_t - _right(a, x_t) * self.mean)

    def posterior_mean_n(self, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """E[n | x_t]."""
        a, s = self.alpha_sigma(t)
        v = self.marginal_variance(t)
        return _right(s / v, x_t) * (x_t - _right(a, x_t) * self.mean)

    def score(self, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """∇ log p_t(x_t) = −(x_t − α μ) / v."""
        a, _ = self.alpha_sigma(t)
        return -(x_t - _right(a, x_t) * self.mean) / _right(self.marginal_variance(t), x_t)

    def velocity(self, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """Probability-flow ODE velocity dx_t/dt = α'·E[x|x_t] + σ'·E[n|x_t]."""
        _, _, da, ds = self.coefficients(t)
        return _right(da, x_t) * self.posterior_mean_x(x_t, t) + _right(
            ds, x_t
        ) * self.posterior_mean_n(x_t, t)

    def conditional_variance(self, c_x: jax.Array, c_n: jax.Array, t: jax.Array) -> jax.Array:
        """Var(c_x·x + c_n·n | x_t) per coordinate, `[B]`: the irreducible L2 loss of that target.

        = c_x² s² + c_n² − (c_x α s² + c_n σ)² / v.
        """
        a, s = self.alpha_sigma(t)
        v = self.marginal_variance(t)
        return c_x**2 * self.std**2 + c_n**2 - (c_x * a * self.std**2 + c_n * s) ** 2 / v

    def ode_map(self, x: jax.Array, t_from: jax.Array, t_to: jax.Array) -> jax.Array:
        """Exact probability-flow ODE map Φ(x, t_from → t_to)."""
        a_from, _ = self.alpha_sigma(t_from)
        a_to, _ = self.alpha_sigma(t_to)
        ratio = jnp.sqrt(self.marginal_variance(t_to) / self.marginal_variance(t_from))
        return _right(a_to, x) * self.mean + _right(ratio, x) * (x - _right(a_from, x) * self.mean)

    def average_velocity(self, x_t: jax.Array, t: jax.Array, r: jax.Array) -> jax.Array:
        """MeanFlow's u(x_t, t, r) = (x_t − Φ(x_t, t → r)) / (t − r); the velocity when r = t."""
        same = jnp.abs(t - r) < 1e-12
        safe_r = jnp.where(same, t - 1e-3, r)
        u = (x_t - self.ode_map(x_t, t, safe_r)) / _right(t - safe_r, x_t)
        return jnp.where(_right(same, x_t), self.velocity(x_t, t), u)


def linear_path(t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """SiT / rectified flow: x_t = (1 − t)·x + t·n (noise at t = 1)."""
    return 1.0 - t, t


def ve_path(sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """EDM / variance exploding: x_σ = x + σ·n."""
    return jnp.ones_like(sigma), sigma
