"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), for any affine path.

On the ρ-grid t_0 = σ_max … t_{N−1} = σ_min, t_N = 0, each step first raises the noise level
("churn"), then takes a Heun step (Euler on the last one):

    γ_i = min(S_churn / N, √2 − 1) if S_min ≤ t_i ≤ S_max else 0
    t̂_i = t_i + γ_i·t_i                                          (towards the noise end)
    x̂_i = x_i + sqrt(t̂_i² − t_i²)·ε,   ε ~ N(0, S_noise²·I)       (VE: x_t = x + t·n)
    x_{i+1} = Heun step of dx/dt = pred from (x̂_i, t̂_i) to t_{i+1}

For a general affine path x_t = α·x + σ·n the churn is x̂ = (α̂/α)·x + sqrt(σ̂² − (α̂/α)²σ²)·ε,
which reduces to the line above when α ≡ 1. "t_i" is the distance |t_i − data| in the model's own
time variable. With S_churn = 0 this is exactly the deterministic Heun sampler on the same grid.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from nnx_samplers.base import Sampler, time_array, with_initial
from nnx_samplers.errors import SamplerConfigError
from nnx_samplers.ode import heun_steps


@dataclasses.dataclass(frozen=True)
class EDMSampler(Sampler):
    """EDM stochastic sampler; default grid: the ρ = 7 schedule."""

    schedule: object = "edm"
    s_churn: float = 0.0
    s_min: float = 0.0
    s_max: float = float("inf")
    s_noise: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.s_churn < 0 or self.s_noise < 0 or self.s_min > self.s_max:
            raise SamplerConfigError(
                f"EDMSampler needs s_churn >= 0, s_noise >= 0, s_min <= s_max; got "
                f"s_churn={self.s_churn}, s_noise={self.s_noise}, s_min={self.s_min}, "
                f"s_max={self.s_max}."
            )

    def check(self, info):
        if self.s_churn > 0 and not info.has_alpha_sigma:
            raise SamplerConfigError(
                "EDMSampler with s_churn > 0 needs the path (alpha_sigma) to add noise."
            )

    def gammas(self, grid: np.ndarray, info) -> np.ndarray:
        """γ_i for the N steps (0 on the final step to the data end)."""
        td = info.time_domain
        n = grid.size - 1
        dist = np.abs(grid[:-1] - td.data)
        g = np.where(
            (dist >= self.s_min) & (dist <= self.s_max),
            min(self.s_churn / n, np.sqrt(2.0) - 1.0),
            0.0,
        )
        g[heun_steps(grid, info) :] = 0.0
        return g

    def integrate(self, f, key, x_init, grid, info, trajectory):
        td = info.time_domain
        k = heun_steps(grid, info)
        gam = self.gammas(grid, info)
        # t̂_i = t_i + γ_i·|t_i − data| towards the noise end, clipped to the domain
        t_hat = np.clip(
            grid[:-1] - td.direction * gam * np.abs(grid[:-1] - td.data), td.low, td.high
        )
        churn = bool(np.any(gam > 0))
        keys = jax.random.split(key, grid.size - 1)

        def raise_noise(x, t, th, kk):
            if not churn:
                return x
            a, s = f.alpha_sigma(jnp.stack([t, th]))
            ratio = a[1] / a[0]
            std = jnp.sqrt(jnp.maximum(s[1] ** 2 - (ratio * s[0]) ** 2, 0.0))
            return ratio * x + std * self.s_noise * jax.random.normal(kk, x.shape, x.dtype)

        def step(x, inp):
            t, th, t_next, kk = inp
            x_hat = raise_noise(x, t, th, kk)
            h = (t_next - th).astype(x.dtype)
            d = f.pred(x_hat, time_array(th, x))
            x_new = x_hat + h * d
            d_new = f.pred(x_new, time_array(t_next, x))  # Heun corrector
            x = x_hat + h * 0.5 * (d + d_new)
            return x, (x if trajectory else None)

        f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        x, states = jax.lax.scan(
            step, x_init, (f32(grid[:k]), f32(t_hat[:k]), f32(grid[1 : k + 1]), keys[:k])
        )
        if k < grid.size - 1:  # last step to the data end: Euler, no churn (γ = 0)
            x = x + jnp.asarray(grid[-1] - grid[k], x.dtype) * f.pred(x, time_array(grid[k], x))
            if trajectory:
                states = jnp.concatenate([states, x[None]], axis=0)
        return x, with_initial(x_init, states) if trajectory else None

    def count_nfe(self, grid, info):
        k = heun_steps(grid, info)
        return 2 * k + (grid.size - 1 - k)
