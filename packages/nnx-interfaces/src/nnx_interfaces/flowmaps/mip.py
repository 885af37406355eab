"""Minimum iterative policy (flow-map spec, "mip"): two deterministic steps, no input noise.

    L = w_0‖π(0, t = 0) − x‖² + w_1‖π(I_{t_fix}, t_fix) − x‖²

Inference: â_0 = π(0, 0) (the conditional mean), â = π(β(t_fix)·â_0, t_fix) (the spec's
t_fix·â_0 for the linear interpolant): the intermediate state is re-noised with *zero* noise.
Network time inputs: 0 and t_fix. Sampler: `initial_state(n)` = 0, `denoise`,
`renoise(x̂, n, t)` = β(t)·x̂ (n ignored).
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.flowmaps.data_prediction import DataPredictionInterface


class MinimumIterativePolicy(DataPredictionInterface):
    """MIP; `t_fix` ∈ (0, 1) is the second-step time, `weights` = (w_0, w_1)."""

    def __init__(
        self,
        network: nnx.Module,
        interpolant="linear",
        *,
        t_fix: float = 0.9,
        weights: tuple[float, float] = (1.0, 1.0),
        **kwargs,
    ):
        super().__init__(network, interpolant, **kwargs)
        if not 0.0 < t_fix < 1.0:
            raise InterfaceConfigError(f"t_fix must lie in (0, 1); got {t_fix}.")
        self.t_fix = float(t_fix)
        self.weights = tuple(float(w) for w in weights)

    def initial_state(self, n: jax.Array) -> jax.Array:
        """MIP starts from zero, not from noise."""
        return jnp.zeros_like(n)

    def renoise(self, x_hat: jax.Array, n: jax.Array, t: jax.Array) -> jax.Array:
        """β(t)·x̂: the interpolant with zero noise."""
        return self.interpolant.interpolate(jnp.zeros_like(x_hat), x_hat, t)

    def loss(self, x: jax.Array, y: Any = None, *, step: Any = 0, return_aux: bool = False):
        """The two terms above, averaged; `x: [B, ...]`."""
        n = self.sample_n(x.shape)
        t0, t_fix = jnp.zeros((x.shape[0],)), jnp.full((x.shape[0],), self.t_fix)
        first = self.st.norm_fn(self.denoise(jnp.zeros_like(x), t0, y=y, train=True) - x)
        x_fix = self.sample_x_t(x, n, t_fix)
        second = self.st.norm_fn(self.denoise(x_fix, t_fix, y=y, train=True) - x)
        per = self.weights[0] * first + self.weights[1] * second
        return self.finish(per, {"step0": first, "step1": second}, return_aux)
