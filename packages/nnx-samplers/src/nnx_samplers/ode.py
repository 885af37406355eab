"""Deterministic probability-flow ODE samplers: Euler and Heun.

With grid t_0 (noise) … t_N (data), step h_i = t_{i+1} − t_i and d(x, t) = pred(x, t) = dx/dt:

    Euler:  x_{i+1} = x_i + h_i·d(x_i, t_i)                                       (order 1)
    Heun:   x̃ = x_i + h_i·d_i,  x_{i+1} = x_i + h_i·(d_i + d(x̃, t_{i+1})) / 2       (order 2)

Heun's corrector evaluates the model at the new point (Karras et al. 2022, Algorithm 1). When the
time domain has eps > 0, the last step goes from `last_eval` to the data end, where the model may
not be evaluated, so it is an Euler step (as in EDM): NFE = 2N − 1; otherwise NFE = 2N.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from nnx_samplers.base import Sampler, time_array, with_initial
from nnx_samplers.model import ModelInfo


def heun_steps(grid: np.ndarray, info: ModelInfo) -> int:
    """How many leading steps get Heun's corrector (all but an eps > 0 final step)."""
    n = grid.size - 1
    return n - 1 if info.time_domain.eps > 0 else n


def euler_scan(f, x, ts: np.ndarray, hs: np.ndarray, trajectory: bool):
    """Euler steps over (t_i, h_i) as one scan; returns (x, states `[n, B, ...]` or None)."""

    def step(x, th):
        t, h = th
        x = x + h.astype(x.dtype) * f.pred(x, time_array(t, x))
        return x, (x if trajectory else None)

    return jax.lax.scan(step, x, (jnp.asarray(ts, jnp.float32), jnp.asarray(hs, jnp.float32)))


def heun_scan(f, x, ts: np.ndarray, ts_next: np.ndarray, trajectory: bool):
    """Heun steps from t_i to t_{i+1} as one scan."""

    def step(x, tt):
        t, t_next = tt
        h = (t_next - t).astype(x.dtype)
        d = f.pred(x, time_array(t, x))  # d_i = dx/dt at (x_i, t_i)
        x_euler = x + h * d
        d_new = f.pred(x_euler, time_array(t_next, x))  # corrector at the new point
        x = x + h * 0.5 * (d + d_new)
        return x, (x if trajectory else None)

    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return jax.lax.scan(step, x, (f32(ts), f32(ts_next)))


def _concat(*parts):
    parts = [p for p in parts if p is not None]
    return jnp.concatenate(parts, axis=0) if parts else None


@dataclasses.dataclass(frozen=True)
class Euler(Sampler):
    """First-order Euler on the probability-flow ODE. NFE = N."""

    def integrate(self, f, key, x_init, grid, info, trajectory):
        x, states = euler_scan(f, x_init, grid[:-1], np.diff(grid), trajectory)
        return x, with_initial(x_init, states)

    def count_nfe(self, grid, info):
        return grid.size - 1


@dataclasses.dataclass(frozen=True)
class Heun(Sampler):
    """Second-order Heun (predictor–corrector) on the probability-flow ODE. NFE = 2N (2N − 1
    when the time domain has eps > 0: the last step to the data end is Euler)."""

    def integrate(self, f, key, x_init, grid, info, trajectory):
        k = heun_steps(grid, info)
        hs = np.diff(grid)
        x, states = heun_scan(f, x_init, grid[:k], grid[1 : k + 1], trajectory)
        last = None
        if k < grid.size - 1:  # EDM: Euler step from last_eval to the data end
            x = x + jnp.asarray(hs[k], x.dtype) * f.pred(x, time_array(grid[k], x))
            last = x[None] if trajectory else None
        return x, with_initial(x_init, _concat(states, last)) if trajectory else None

    def count_nfe(self, grid, info):
        k = heun_steps(grid, info)
        return 2 * k + (grid.size - 1 - k)
