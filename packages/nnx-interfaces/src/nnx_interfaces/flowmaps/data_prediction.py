"""Shared base of the objectives whose network predicts the data: regression, TSD, MIP.

`denoise(x_t, t)` = net(x_t, t) is the clean-data prediction (network time input t ∈ [0, 1]);
`pred(x_t, t)` is the velocity it implies on the interpolant, v = a'·x̂ + σ'·(x_t − a·x̂)/σ (valid
for t < 1). Each objective also says how its sampler starts (`initial_state(n)`, the state at
t = 0 built from the source noise n) and re-noises a data prediction at a later time
(`renoise(x_hat, n, t)`), which is all a multistep denoise-and-renoise sampler needs.
"""

from typing import Any

import jax

from nnx_interfaces.flowmaps.common import InterpolantInterface


class DataPredictionInterface(InterpolantInterface):
    """A one-time network x̂(x_t, t) ≈ E[x | x_t] on the interpolant (noise t = 0, data t = 1)."""

    def denoise(self, x_t: jax.Array, t: jax.Array, *, y: Any = None, train: bool = False):
        """x̂ = net(x_t, t): `x_t: [B, ...]`, `t: [B]` → like x_t."""
        return self.network(x_t, self.c_noise(t), y=y, train=train)

    def pred(self, x_t: jax.Array, t: jax.Array, *, y: Any = None, train: bool = False):
        """The velocity implied by the data prediction (t < 1)."""
        return self.velocity_from_data(x_t, self.denoise(x_t, t, y=y, train=train), t)

    def velocity(self, x_t, t, *, y=None, train=False):
        return self.pred(x_t, t, y=y, train=train)

    def score(self, x_t, t, *args, y=None, **kwargs):
        """(a·x̂ − x_t)/σ² (t < 1)."""
        a, s = self.alpha_sigma(t)
        x_hat = self.denoise(x_t, t, y=y)
        return (self.bcast_right(a, x_t) * x_hat - x_t) / self.bcast_right(s**2, x_t)

    def initial_state(self, n: jax.Array) -> jax.Array:
        """The sampler's state at t = 0 for source noise n: I_0 = α(0)·n."""
        return self.bcast_right(self.interpolant.alpha(jax.numpy.zeros(n.shape[:1])), n) * n

    def renoise(self, x_hat: jax.Array, n: jax.Array, t: jax.Array) -> jax.Array:
        """State at time t from a data prediction: α(t)·n + β(t)·x̂ (the initial noise n)."""
        return self.interpolant.interpolate(n, x_hat, t)
