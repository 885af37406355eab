"""Few-step samplers for two-time and denoising models: jumps and denoise-and-renoise.

Jump (MeanFlow / flow maps / shortcut models): with the average velocity u = pred(x, t, r) of a
two-time model, one jump over [t_i, t_{i+1}] is exact for an exact model:

    x_{i+1} = x_i + (t_{i+1} − t_i)·u(x_i, t_i, t_{i+1})      (MeanFlow: x_r = x_t − (t − r)·u)

Denoise-and-renoise (multistep consistency sampling, and the two-step TSD / MIP samplers):

    x̂ = denoise(x_i, t_i),   x_{i+1} = α(t_{i+1})·x̂ + σ(t_{i+1})·n

with n fresh noise ("fresh", consistency models), the initial noise x_init ("initial", TSD) or
zero ("zero", MIP: then x_init is zeros too). At the data end α = 1, σ = 0, so the last step
returns x̂. Both use one network call per step: NFE = N.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from nnx_samplers.base import Sampler, time_array, with_initial
from nnx_samplers.errors import SamplerConfigError

RENOISE = ("fresh", "initial", "zero")


@dataclasses.dataclass(frozen=True)
class Jump(Sampler):
    """x ← x + (t_{i+1} − t_i)·pred(x, t_i, t_{i+1}) for two-time models. Default: 1 step."""

    num_steps: int = 1

    def check(self, info):
        if not info.two_time:
            raise SamplerConfigError(
                "Jump sampling needs a two-time model (pred(x, t, r) = average velocity; "
                "interface.two_time = True, or FunctionModel(..., two_time=True)). For a "
                "one-time model use Euler or Heun."
            )

    def integrate(self, f, key, x_init, grid, info, trajectory):
        def step(x, tt):
            t, r = tt
            u = f.pred(x, time_array(t, x), time_array(r, x))
            x = x + (r - t).astype(x.dtype) * u
            return x, (x if trajectory else None)

        f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        x, states = jax.lax.scan(step, x_init, (f32(grid[:-1]), f32(grid[1:])))
        return x, with_initial(x_init, states)

    def count_nfe(self, grid, info):
        return grid.size - 1


@dataclasses.dataclass(frozen=True)
class DenoiseRenoise(Sampler):
    """Multistep denoise-and-renoise with `renoise` in ("fresh", "initial", "zero")."""

    num_steps: int = 2
    renoise: str = "fresh"
    needs_velocity: ClassVar[bool] = False  # only denoise and the path: consistency models too

    def __post_init__(self):
        super().__post_init__()
        if self.renoise not in RENOISE:
            raise SamplerConfigError(f"renoise must be one of {RENOISE}; got {self.renoise!r}.")

    def check(self, info):
        if not info.has_alpha_sigma:
            raise SamplerConfigError(
                "DenoiseRenoise needs the path α(t), σ(t) to renoise: use a model with alpha_sigma."
            )

    def integrate(self, f, key, x_init, grid, info, trajectory):
        a, s = f.alpha_sigma(jnp.asarray(grid, jnp.float32))
        keys = jax.random.split(key, grid.size - 1)

        def step(x, inp):
            t, a1, s1, k = inp
            x_hat = f.denoise(x, time_array(t, x))
            if self.renoise == "fresh":
                n = jax.random.normal(k, x.shape, x.dtype)
            elif self.renoise == "initial":
                n = x_init
            else:
                n = jnp.zeros_like(x)
            x = a1 * x_hat + s1 * n
            return x, (x if trajectory else None)

        xs = (
            jnp.asarray(grid[:-1], jnp.float32),
            jnp.asarray(a[1:], jnp.float32),
            jnp.asarray(s[1:], jnp.float32),
            keys,
        )
        x, states = jax.lax.scan(step, x_init, xs)
        return x, with_initial(x_init, states)

    def count_nfe(self, grid, info):
        return grid.size - 1
