"""Shortcut models (Frans et al. 2024, arXiv:2410.12557): step-size-conditioned self-consistency.

Convention of the flow-map family: noise n at t = 0, data x at t = 1, I_t on an `Interpolant`.
The network receives (x_t, t, r = d) with the step size d ∈ [0, 1] as its second time input:
s(x_t, t, d) is the average velocity over [t, t + d], and d = 0 is the flow-matching velocity.

    L = E_{fm}‖s(I_t, t, 0) − İ_t‖²                                   (1 − bootstrap_fraction)
      + E_{sc}‖s(I_t, t, 2d) − sg(½ s(I_t, t, d) + ½ s(I_t + d·s(I_t, t, d), t + d, d))‖²

The self-consistency part uses dyadic d = 2^{−k} / 2, k ~ {0, …, log₂(M) − 1} (so 2d ∈ {1, …, 2/M},
M = 1/min_step) and t on the grid of multiples of d in [0, 1 − 2d]; its rows are the first
⌊bootstrap_fraction·B⌋ of the batch. At the exact flow map both terms are at their minimum (the
consistency term is zero by the composition identity).

Interface contract: `two_time = True`, `pred(x, t, r)` = s(x, t, r − t) (jump x + (r − t)·pred),
`pred(x, t)` = s(x, t, 0), `flow_map(x, s, t)`.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.flowmaps.common import InterpolantInterface


class Shortcut(InterpolantInterface):
    """Shortcut model.

    Args:
      network: contract backbone with a second time input (`r` = step size d).
      interpolant: `Interpolant` or name (default linear, as in the paper).
      min_step: smallest step 1/M (a power of two: 1/128 in the paper).
      bootstrap_fraction: share of the batch used for the self-consistency term (1/4 in the paper).
      st: `STSampling` (time distribution of the flow-matching rows, norm, loss_scale).
      rngs: streams `time`, `noise`.
    """

    two_time = True

    def __init__(
        self,
        network: nnx.Module,
        interpolant="linear",
        *,
        min_step: float = 1.0 / 128,
        bootstrap_fraction: float = 0.25,
        **kw,
    ):
        super().__init__(network, interpolant, **kw)
        levels = math.log2(1.0 / min_step) if min_step > 0 else -1.0
        if not (levels >= 1 and abs(levels - round(levels)) < 1e-9):
            raise InterfaceConfigError(
                f"min_step must be 1/M with M a power of two ≥ 2 (e.g. 1/128); got {min_step}."
            )
        if not 0.0 <= bootstrap_fraction < 1.0:
            raise InterfaceConfigError(
                f"bootstrap_fraction must lie in [0, 1); got {bootstrap_fraction}."
            )
        self.levels = round(levels)
        self.bootstrap_fraction = float(bootstrap_fraction)

    # --- model outputs -------------------------------------------------------------------------
    def shortcut(self, x, t, d, *, y=None, train=False) -> jax.Array:
        """s(x, t, d) = net(x, c_noise(t), r=c_noise(d)): `x: [B, ...]`, `t, d: [B]` → like x."""
        return self.network(x, self.c_noise(t), r=self.c_noise(d), y=y, train=train)

    def pred(self, x_t, t, r=None, *, y=None, train=False) -> jax.Array:
        """Average velocity from t to r (r=None: the velocity, d = 0)."""
        d = jnp.zeros_like(t) if r is None else r - t
        return self.shortcut(x_t, t, d, y=y, train=train)

    def velocity(self, x_t, t, *, y=None, train=False) -> jax.Array:
        return self.shortcut(x_t, t, jnp.zeros_like(t), y=y, train=train)

    def flow_map(self, x, s, t, *, y=None, train=False) -> jax.Array:
        """x + (t − s)·s(x, s, t − s)."""
        return x + self.bcast_right(t - s, x) * self.pred(x, s, t, y=y, train=train)

    # --- loss ----------------------------------------------------------------------------------
    def sample_bootstrap(self, batch: int) -> tuple[jax.Array, jax.Array]:
        """(t, d) for the self-consistency rows: d = 2^{−k−1}, t = d·j with t + 2d ≤ 1."""
        k_key, j_key = jax.random.split(self.rngs.time())
        k = jax.random.randint(k_key, (batch,), 0, self.levels)
        d = 0.5 ** (k + 1).astype(jnp.float32)
        slots = (2.0 ** (k + 1)).astype(jnp.float32) - 1.0  # j ∈ {0, …, 1/d − 2}
        j = jnp.floor(jax.random.uniform(j_key, (batch,)) * slots)
        return j * d, d

    def loss(self, x: jax.Array, y: Any = None, *, step: Any = 0, return_aux: bool = False):
        """Flow-matching rows + self-consistency rows (see the module docstring)."""
        batch = x.shape[0]
        nb = int(batch * self.bootstrap_fraction)
        n = self.sample_n(x.shape)
        t_fm = self.sample_t((batch,))
        t_sc, d = self.sample_bootstrap(batch)
        y_sc = None if y is None else y[:nb]
        y_fm = None if y is None else y[nb:]
        # Flow-matching rows: s(I_t, t, 0) ≈ İ_t.
        x_fm, n_fm, t_fm = x[nb:], n[nb:], t_fm[nb:]
        x_t = self.sample_x_t(x_fm, n_fm, t_fm)
        fm = self.st.norm_fn(
            self.velocity(x_t, t_fm, y=y_fm, train=True) - self.target(x_fm, n_fm, t_fm)
        )
        per = [fm]
        aux = {"flow": fm}
        if nb > 0:
            t_sc, d = t_sc[:nb], d[:nb]
            x_t = self.sample_x_t(x[:nb], n[:nb], t_sc)
            # Two steps of size d, as one average velocity over [t, t + 2d].
            s1 = self.shortcut(x_t, t_sc, d, y=y_sc, train=True)
            x_mid = x_t + self.bcast_right(d, x_t) * s1
            s2 = self.shortcut(x_mid, t_sc + d, d, y=y_sc, train=True)
            target = jax.lax.stop_gradient(0.5 * (s1 + s2))
            sc = self.st.norm_fn(self.shortcut(x_t, t_sc, 2 * d, y=y_sc, train=True) - target)
            per.insert(0, sc)
            aux["consistency"] = sc
        return self.finish(jnp.concatenate(per), aux, return_aux)
