"""Two-step denoising (flow-map spec, "tsd").

Spec: L = ‖π(I_0, 0) − I_fix‖² + ‖π(I_fix, t_fix) − x‖², inference â_0 = π(n, 0),
â = π(t_fix·â_0 + (1 − t_fix)·n, t_fix). Read together, the first output â_0 is a data prediction
that is re-noised with the *initial* noise before the second call, so the first term compares the
re-noised prediction with I_fix (same n):

    L = w_0‖(α(t_fix)·n + β(t_fix)·π(I_0, 0)) − I_fix‖² + w_1‖π(I_fix, t_fix) − x‖²
      = w_0·β(t_fix)²‖π(I_0, 0) − x‖² + w_1‖π(I_fix, t_fix) − x‖²     (l2 norm)

which makes training and the spec's inference agree. Network time inputs: 0 and t_fix.
Sampler: `initial_state(n)` = I_0 = α(0)·n, `denoise`, `renoise(x̂, n, t_fix)` with the initial n.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.flowmaps.data_prediction import DataPredictionInterface


class TwoStepDenoising(DataPredictionInterface):
    """TSD; `t_fix` ∈ (0, 1) is the intermediate time, `weights` = (w_0, w_1)."""

    def __init__(
        self,
        network: nnx.Module,
        interpolant="linear",
        *,
        t_fix: float = 0.5,
        weights: tuple[float, float] = (1.0, 1.0),
        **kwargs,
    ):
        super().__init__(network, interpolant, **kwargs)
        if not 0.0 < t_fix < 1.0:
            raise InterfaceConfigError(f"t_fix must lie in (0, 1); got {t_fix}.")
        self.t_fix = float(t_fix)
        self.weights = tuple(float(w) for w in weights)

    def loss(self, x: jax.Array, y: Any = None, *, step: Any = 0, return_aux: bool = False):
        """The two terms above, averaged; `x: [B, ...]`."""
        n = self.sample_n(x.shape)
        t0, t_fix = jnp.zeros((x.shape[0],)), jnp.full((x.shape[0],), self.t_fix)
        x_fix = self.sample_x_t(x, n, t_fix)
        # Step 1: predict x from I_0, re-noise with the same n, compare with I_fix.
        x_hat0 = self.denoise(self.sample_x_t(x, n, t0), t0, y=y, train=True)
        first = self.st.norm_fn(self.renoise(x_hat0, n, t_fix) - x_fix)
        # Step 2: predict x from I_fix.
        second = self.st.norm_fn(self.denoise(x_fix, t_fix, y=y, train=True) - x)
        per = self.weights[0] * first + self.weights[1] * second
        return self.finish(per, {"step0": first, "step1": second}, return_aux)
