"""(s, t) sampling with the `delta_t` curriculum, and the loss norms of the flow-map objectives.

Pairs s ≤ t: draw two times from the training time distribution on [low, high] (see
`nnx_interfaces.time_dist`), s = min, t_raw = max, then shrink the gap by the curriculum factor δ:

    t = s + δ(step)·(t_raw − s),   δ(step) = min(1, start + (1 − start)·step/delta_t_span)

so early in training the distillation terms see short jumps (δ near 0: Φ(x, s, s + small) is almost
the velocity) and after `delta_t_span` steps the full range (δ = 1). `delta_t_span = 0` disables the
curriculum (δ = 1 from the start).

Loss norms act on a residual `[B, ...]` and return `[B]` (mean over the data axes):
l2 = mean r², l1 = mean |r|, smooth-l1 (Huber) = mean of ½r²/c where |r| < c, |r| − ½c elsewhere.
"""

import dataclasses

import jax
import jax.numpy as jnp

from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.time_dist import check_time_dist, sample_time

LOSS_NORMS = ("l2", "l1", "smooth-l1")


@dataclasses.dataclass(frozen=True)
class STSampling:
    """How training times are drawn and how residuals are measured.

    Attributes:
      dist: training time family "uniform" | "logitnormal" | "lognormal" (on [0, high]).
      mu, sigma: its parameters (ignored for uniform).
      delta_t_span: number of steps over which δ goes from `delta_t_start` to 1 (0: no curriculum).
      delta_t_start: δ at step 0.
      norm: "l2" | "l1" | "smooth-l1".
      huber_c: transition point c of smooth-l1.
      loss_scale: the final loss is multiplied by this.
    """

    dist: str = "uniform"
    mu: float = 0.0
    sigma: float = 1.0
    delta_t_span: int = 0
    delta_t_start: float = 0.0
    norm: str = "l2"
    huber_c: float = 1.0
    loss_scale: float = 1.0

    def __post_init__(self):
        check_time_dist(self.dist, self.mu, self.sigma, 0.0, 1.0)
        if self.norm not in LOSS_NORMS:
            raise InterfaceConfigError(
                f"Unknown loss norm {self.norm!r}; expected one of {LOSS_NORMS}."
            )
        if self.delta_t_span < 0 or not 0.0 <= self.delta_t_start <= 1.0:
            raise InterfaceConfigError(
                "delta_t curriculum needs delta_t_span ≥ 0 and 0 ≤ delta_t_start ≤ 1; got "
                f"delta_t_span={self.delta_t_span}, delta_t_start={self.delta_t_start}."
            )
        if self.huber_c <= 0 or self.loss_scale <= 0:
            raise InterfaceConfigError(
                f"huber_c and loss_scale must be > 0; got {self.huber_c}, {self.loss_scale}."
            )

    def delta_t(self, step: jax.Array | int) -> jax.Array:
        """Curriculum factor δ(step) ∈ [delta_t_start, 1] (a scalar)."""
        if self.delta_t_span == 0:
            return jnp.float32(1.0)
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / self.delta_t_span, 0.0, 1.0)
        return self.delta_t_start + (1.0 - self.delta_t_start) * frac

    def sample_t(self, key: jax.Array, shape: tuple[int, ...], high: float = 1.0) -> jax.Array:
        """Times `shape` in [0, high] from the training distribution."""
        return sample_time(key, shape, self.dist, mu=self.mu, sigma=self.sigma, low=0.0, high=high)

    def sample_st(
        self, key: jax.Array, batch: int, step: jax.Array | int = 0, high: float = 1.0
    ) -> tuple[jax.Array, jax.Array]:
        """Pairs (s, t), each `[batch]`, with 0 ≤ s ≤ t ≤ high and t − s ≤ δ(step)·(high − s)."""
        pair = self.sample_t(key, (2, batch), high)
        s, t_raw = jnp.min(pair, axis=0), jnp.max(pair, axis=0)
        return s, s + self.delta_t(step) * (t_raw - s)

    def norm_fn(self, residual: jax.Array) -> jax.Array:
        """Per-example loss `[B]` of a residual `[B, ...]`."""
        axes = tuple(range(1, residual.ndim))
        if self.norm == "l2":
            return jnp.mean(residual**2, axis=axes)
        if self.norm == "l1":
            return jnp.mean(jnp.abs(residual), axis=axes)
        a, c = jnp.abs(residual), self.huber_c
        return jnp.mean(jnp.where(a < c, 0.5 * a**2 / c, a - 0.5 * c), axis=axes)
