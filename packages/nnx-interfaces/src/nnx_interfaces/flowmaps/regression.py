"""Direct regression (flow-map spec, "regression"): the conditional mean in one network call.

    L = E ‖π_θ(I_0, t = 0) − x‖²,     I_0 = α(0)·n + β(0)·x  (= n for linear/trig)

Inference: x̂ = π_θ(n, 0) — one step, the mean of the data given the conditioning `y`, so it
collapses multimodal data. Network time input: 0 (and t ∈ [0, 1] if `denoise` is asked elsewhere).
"""

from typing import Any

import jax
import jax.numpy as jnp

from nnx_interfaces.flowmaps.data_prediction import DataPredictionInterface


class Regression(DataPredictionInterface):
    """Regression of the data from the t = 0 state; arguments as `InterpolantInterface`."""

    def loss(self, x: jax.Array, y: Any = None, *, step: Any = 0, return_aux: bool = False):
        """‖π(I_0, 0) − x‖², averaged; `x: [B, ...]`."""
        n = self.sample_n(x.shape)
        t0 = jnp.zeros((x.shape[0],))
        per = self.st.norm_fn(self.denoise(self.sample_x_t(x, n, t0), t0, y=y, train=True) - x)
        return self.finish(per, {"regression": per}, return_aux)
