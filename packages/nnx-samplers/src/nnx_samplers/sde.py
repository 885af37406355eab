"""Euler–Maruyama on the reverse-time SDE that shares the probability-flow marginals.

For any diffusion coefficient g(t) ≥ 0, the SDE run from the noise end to the data end

    dx = [v(x, t) ∓ ½·g(t)²·∇log p_t(x)] dt + g(t) dW

(minus sign when time decreases towards data, as in SiT/EDM; plus when it increases, as for flow
maps) has the same marginals p_t as the ODE dx/dt = v (Fokker–Planck). With h_i = t_{i+1} − t_i
and z ~ N(0, I), the Euler–Maruyama step is direction-free:

    x_{i+1} = x_i + h_i·v + |h_i|·½·g²·s + g·sqrt(|h_i|)·z.

g² is `scale` times a profile of τ = (t − data)/(noise − data) ∈ [0, 1] (τ = 1 at noise):
  constant: 1      linear: τ      cosine: sin²(πτ/2)      increasing-decreasing: sin²(πτ)
  sigma: σ(t) (SiT's "sigma" form)
All are finite at the noise end, and the score is only evaluated at t_0 … t_{N−1}, so starting at
t = 1 or σ_max gives no NaN. With an affine path the score comes from the same network call as v
(s = −(x − α·x̂)/σ²), so NFE = N; otherwise pred and score are two calls (NFE = 2N).
`last_step_mean=True` drops the noise of the final step (SiT's "Mean" last step).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from nnx_samplers.base import Sampler, time_array, with_initial
from nnx_samplers.errors import SamplerConfigError

DIFFUSIONS = ("constant", "linear", "cosine", "increasing-decreasing", "sigma")


def diffusion_g2(name: str, scale: float, tau: np.ndarray, sigma: jax.Array | None) -> jax.Array:
    """g(t)² on the grid points with normalized distance `tau` to the data end (`[n]`)."""
    tau = jnp.asarray(tau, jnp.float32)
    if name == "constant":
        g2 = jnp.ones_like(tau)
    elif name == "linear":
        g2 = tau
    elif name == "cosine":
        g2 = jnp.sin(0.5 * jnp.pi * tau) ** 2
    elif name == "increasing-decreasing":
        g2 = jnp.sin(jnp.pi * tau) ** 2
    else:  # sigma
        g2 = sigma
    return scale * g2


@dataclasses.dataclass(frozen=True)
class EulerMaruyama(Sampler):
    """Euler–Maruyama for the reverse SDE with diffusion g² = `diffusion_scale`·profile."""

    diffusion: str = "constant"
    diffusion_scale: float = 1.0
    last_step_mean: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.diffusion not in DIFFUSIONS:
            raise SamplerConfigError(
                f"Unknown diffusion {self.diffusion!r}; expected one of {DIFFUSIONS}."
            )
        if not self.diffusion_scale >= 0:
            raise SamplerConfigError(f"diffusion_scale must be >= 0; got {self.diffusion_scale}.")

    def check(self, info):
        if self.diffusion == "sigma" and not info.has_alpha_sigma:
            raise SamplerConfigError(
                "diffusion='sigma' needs the path's σ(t): use a model with alpha_sigma."
            )

    def integrate(self, f, key, x_init, grid, info, trajectory):
        td = info.time_domain
        ts, hs = grid[:-1], np.diff(grid)
        tau = (ts - td.data) / (td.noise - td.data)
        sigma = None
        if self.diffusion == "sigma":
            sigma = f.alpha_sigma(jnp.asarray(ts, jnp.float32))[1]
        g2 = diffusion_g2(self.diffusion, self.diffusion_scale, tau, sigma)
        noise_on = np.ones(ts.size, np.float32)
        if self.last_step_mean:
            noise_on[-1] = 0.0
        keys = jax.random.split(key, ts.size)
        use_path = info.has_alpha_sigma

        def step(x, inp):
            t, h, g2_i, on, k = inp
            v, s = f.pred_and_score(x, time_array(t, x), use_path)
            z = jax.random.normal(k, x.shape, x.dtype)
            x = x + h * v + jnp.abs(h) * 0.5 * g2_i * s + on * jnp.sqrt(g2_i * jnp.abs(h)) * z
            return x, (x if trajectory else None)

        xs = (
            jnp.asarray(ts, jnp.float32),
            jnp.asarray(hs, jnp.float32),
            g2,
            jnp.asarray(noise_on),
            keys,
        )
        x, states = jax.lax.scan(step, x_init, xs)
        return x, with_initial(x_init, states)

    def count_nfe(self, grid, info):
        return (grid.size - 1) * (1 if info.has_alpha_sigma else 2)
