"""Closed-form Gaussian models as `Interfaces`: exact test doubles for distillation objectives.

On the linear path x_t = (1 − t)·x + t·n (data at t = 0, noise at t = 1), with learnable
parameters:

    GaussianScore(m, s)     the exact denoiser of data N(m, diag(s²)) (log s stored):
                                x̂(x_t, t) = m + α s² / (α² s² + σ²) · (x_t − α m),  α = 1 − t, σ = t
                            loss: the x-prediction denoising loss mean‖x̂(x_t, t) − x‖², t ~ U[0.02,
                            0.98], minimised over (m, s) by the mean and std of the data it sees
    AffineGenerator(a, b)   "denoises" the noise end into G(z) = a·z + b (x̂(x_t, t) = a·x_t + b),
                            the affine generator of the DMD closed-form tests

Scores and velocities follow from the denoiser (Tweedie): s = (α x̂ − x_t)/σ², v = (x_t − x̂)/t.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.base import Interfaces, TimeDomain


class _Holder(nnx.Module):
    """The parameters (and the `nnx.Rngs`) of a closed-form model, in place of a backbone."""

    def __init__(self, rngs: nnx.Rngs, **params: Any):
        for name, value in params.items():
            setattr(self, name, nnx.Param(jnp.asarray(value, jnp.float32)))
        self.rngs = rngs


class _LinearPath(Interfaces):
    """x_t = (1 − t)·x + t·n; everything derived from `denoise`."""

    @property
    def time_domain(self) -> TimeDomain:
        return TimeDomain(noise=1.0, data=0.0)

    def alpha_sigma(self, t):
        return 1.0 - t, t

    def c_in(self, t):
        return jnp.ones_like(t)

    def c_out(self, t):
        return jnp.ones_like(t)

    def c_skip(self, t):
        return jnp.zeros_like(t)

    def c_noise(self, t):
        return t

    def sample_t(self, shape):
        return jax.random.uniform(self.rngs.time(), shape, minval=0.02, maxval=0.98)

    def sample_n(self, shape):
        return jax.random.normal(self.rngs.noise(), shape)

    def sample_x_t(self, x, n, t):
        return self.bcast_right(1.0 - t, x) * x + self.bcast_right(t, x) * n

    def target(self, x, n, t, *args, **kwargs):
        return x

    def pred(self, x_t, t, *args, **kwargs):
        return (x_t - self.denoise(x_t, t, *args, **kwargs)) / self.bcast_right(t, x_t)

    def score(self, x_t, t, *args, **kwargs):
        b = self.bcast_right
        return (b(1.0 - t, x_t) * self.denoise(x_t, t, *args, **kwargs) - x_t) / b(t**2, x_t)

    def loss(self, x, *args, return_aux: bool = False, y: Any = None, **kwargs):
        """mean‖x̂(x_t, t) − x‖² (x-prediction denoising loss)."""
        t = self.sample_t((x.shape[0],))
        x_t = self.sample_x_t(x, self.sample_n(x.shape), t)
        loss = jnp.mean(self.mean_flat((self.denoise(x_t, t) - x) ** 2))
        return (loss, {"loss": loss}) if return_aux else loss


class GaussianScore(_LinearPath):
    """Exact denoiser of N(mean, diag(std²)) with learnable mean and log std (`[D]` or scalars).

    Args:
      mean, std: initial values (arrays of one example's shape, or scalars).
      rngs: streams `time`, `noise`.
    """

    def __init__(self, mean: Any, std: Any, *, rngs: nnx.Rngs):
        holder = _Holder(rngs, mean=mean, log_std=jnp.log(jnp.asarray(std, jnp.float32)))
        super().__init__(holder, "uniform", rngs=rngs)

    def denoise(self, x_t, t, *args, **kwargs):
        b = self.bcast_right
        alpha, sigma = b(1.0 - t, x_t), b(t, x_t)
        m, var = self.network.mean[...], jnp.exp(2.0 * self.network.log_std[...])
        return m + alpha * var / (alpha**2 * var + sigma**2) * (x_t - alpha * m)


class AffineGenerator(_LinearPath):
    """x̂(x_t, t) = a·x_t + b: at the noise end (x_1 = z) the generator G(z) = a·z + b.

    Args:
      a, b: initial scale and shift (arrays of one example's shape, or scalars).
      rngs: streams `time`, `noise`.
    """

    def __init__(self, a: Any, b: Any, *, rngs: nnx.Rngs):
        super().__init__(_Holder(rngs, a=a, b=b), "uniform", rngs=rngs)

    def denoise(self, x_t, t, *args, **kwargs):
        return self.network.a[...] * x_t + self.network.b[...]
