"""Flow matching (Lipman et al. 2022) on a stochastic interpolant: one-time velocity model.

    L = E_{t, n, x} ‖b_t(I_t) − İ_t‖²,   t ~ U[0, 1]           (flow-map spec, "flow")

Inference integrates dI/dt = b_t(I) from I_0 = n at t = 0 to the data at t = 1; `pred(x, t)` is
b_t(x), so a sampler's Euler step is x + (t_next − t)·pred. The network receives t ∈ [0, 1] and no
second time (`r=None`), so any contract backbone works, with or without `use_r`.
"""

from typing import Any

import jax

from nnx_interfaces.flowmaps.common import InterpolantInterface


class FlowMatching(InterpolantInterface):
    """Flow matching; see `InterpolantInterface` for the arguments and conventions."""

    def pred(self, x_t: jax.Array, t: jax.Array, *, y: Any = None, train: bool = False):
        """b_t(x_t) = net(x_t, t): `x_t: [B, ...]`, `t: [B]` → like x_t."""
        return self.network(x_t, self.c_noise(t), y=y, train=train)

    def velocity(self, x_t, t, *, y=None, train=False):
        return self.pred(x_t, t, y=y, train=train)

    def loss(self, x: jax.Array, y: Any = None, *, step: Any = 0, return_aux: bool = False):
        """‖b_t(I_t) − İ_t‖² (in the configured norm), averaged; `x: [B, ...]` data."""
        t, n = self._draw(x)
        x_t = self.sample_x_t(x, n, t)
        per = self.st.norm_fn(self.pred(x_t, t, y=y, train=True) - self.target(x, n, t))
        return self.finish(per, {"flow": per}, return_aux)
