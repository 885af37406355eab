"""Consistency trajectory model (Kim et al. 2023, arXiv:2310.02279), flow-map spec "ctm".

    Φ(I_s, s, t) ≈ Φ⁻(sg(Φ_teacher(I_s, s, u)), u, t),     u = s + dt (dt = min(ctm_dt, t − s))

The first, short jump comes from a teacher: a trained velocity model (one-time `Interfaces`,
one Euler step x + dt·pred(x, s)) or a flow map (two-time, e.g. an EMA copy of this model:
x + dt·pred(x, s, u)). The long jump Φ⁻ is this model under stop-gradient, or `ema` if given
(an EMA copy). In velocity units, with h = dt/(t − s):

    L_D = ‖f(I_s, s, t) − sg(h·g + (1 − h)·f⁻(I_s + dt·g, u, t))‖²,  g = teacher velocity on [s, u]

which is the spec's Φ-residual divided by (t − s). It vanishes at the exact map when the teacher
jump is exact (a flow-map teacher); an Euler teacher leaves an O(dt) bias.
The teacher must use this interface's time convention (noise at 0, data at 1, same interpolant).
"""

import jax
import jax.numpy as jnp

from nnx_interfaces.base import Interfaces
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.flowmaps.parameterisation import FlowMapInterface


class ConsistencyTrajectoryModel(FlowMapInterface):
    """CTM distilling `teacher` into a flow map.

    Args:
      teacher: an `Interfaces` with noise at 0 and data at 1 (a trained `FlowMatching`, or a
        two-time flow map such as an EMA copy of this model).
      ctm_dt: the teacher's jump length (clipped to t − s).
      ema: optional flow map for the long jump (an EMA copy of this model); default this model
        under stop-gradient.
    The teacher (and `ema`) are submodules: train only `network`'s parameters, e.g.
    `nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.All(nnx.Param,
    nnx.PathContains("network"))))`.
      Other arguments as `FlowMapInterface`.
    """

    def __init__(
        self,
        network,
        teacher: Interfaces,
        interpolant="linear",
        *,
        ctm_dt: float = 0.05,
        ema: FlowMapInterface | None = None,
        **kw,
    ):
        super().__init__(network, interpolant, **kw)
        if not isinstance(teacher, Interfaces):
            raise InterfaceConfigError(
                f"CTM needs a teacher Interfaces (a trained flow model or an EMA flow map); got "
                f"{type(teacher).__name__}."
            )
        dom = teacher.time_domain
        if (dom.noise, dom.data) != (0.0, 1.0):
            raise InterfaceConfigError(
                f"CTM teacher must have noise at t = 0 and data at t = 1 (this interface's "
                f"convention); {type(teacher).__name__} has noise={dom.noise}, data={dom.data}. "
                "Train the teacher as nnx_interfaces.flowmaps.FlowMatching on the same interpolant."
            )
        if not ctm_dt > 0:
            raise InterfaceConfigError(f"ctm_dt must be > 0; got {ctm_dt}.")
        self.teacher = teacher
        self.ema = ema
        self.ctm_dt = float(ctm_dt)

    def teacher_velocity(self, x, s, u, *, y=None) -> jax.Array:
        """The teacher's average velocity over [s, u] (Euler for a one-time teacher)."""
        if getattr(self.teacher, "two_time", False):
            return self.teacher.pred(x, s, u, y=y)
        return self.teacher.pred(x, s, y=y)

    def distillation_residual(self, x, n, s, t, *, y=None):
        gap = t - s
        dt = jnp.minimum(self.ctm_dt, gap)
        u = s + dt
        h = jnp.where(gap > 0, dt / jnp.where(gap > 0, gap, 1.0), 1.0)
        x_s = self.sample_x_t(x, n, s)
        g = self.teacher_velocity(x_s, s, u, y=y)
        x_u = x_s + self.bcast_right(dt, x_s) * g
        long_jump = self if self.ema is None else self.ema
        f_ut = long_jump.average_velocity(x_u, u, t, y=y, train=True)
        hb = self.bcast_right(h, x_s)
        teacher = jax.lax.stop_gradient(hb * g + (1.0 - hb) * f_ut)
        return self.average_velocity(x_s, s, t, y=y, train=True) - teacher
