"""Progressive self-distillation (Boffi et al. 2025, arXiv:2505.18825), flow-map spec "psd".

    L_D = ‖f(I_s, s, t) − sg(h·f(I_s, s, u) + (1 − h)·f(Φ(I_s, s, u), u, t))‖²,  u = s + h(t − s)

The two-step teacher is the average velocity of Φ(·, u, t) ∘ Φ(·, s, u), i.e. the spec's
‖Φ_{s,t}(I_s) − Φ_{u,t}(Φ_{s,u}(I_s))‖² divided by (t − s)² (the issue's correction: the second
step starts from Φ(I_s, s, u)). At the exact flow map it vanishes by the composition identity.
h ~ U(0, 1) from the `time` stream unless fixed by `h`.
"""

import jax
import jax.numpy as jnp

from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.flowmaps.parameterisation import FlowMapInterface


class ProgressiveSelfDistillation(FlowMapInterface):
    """PSD; `h` ∈ (0, 1) fixes the split point (None: uniform). Other args: `FlowMapInterface`."""

    def __init__(self, network, interpolant="linear", *, h: float | None = None, **kw):
        super().__init__(network, interpolant, **kw)
        if h is not None and not 0.0 < h < 1.0:
            raise InterfaceConfigError(f"PSD split h must lie in (0, 1) or be None; got {h}.")
        self.h = h

    def distillation_residual(self, x, n, s, t, *, y=None):
        if self.h is None:
            h = jax.random.uniform(self.rngs.time(), s.shape)
        else:
            h = jnp.full(s.shape, self.h)
        u = s + h * (t - s)
        x_s = self.sample_x_t(x, n, s)
        # Teacher: two jumps s → u → t, as one average velocity over [s, t].
        f_su = self.average_velocity(x_s, s, u, y=y, train=True)
        x_u = x_s + self.bcast_right(u - s, x_s) * f_su
        f_ut = self.average_velocity(x_u, u, t, y=y, train=True)
        hb = self.bcast_right(h, x_s)
        teacher = jax.lax.stop_gradient(hb * f_su + (1.0 - hb) * f_ut)
        return self.average_velocity(x_s, s, t, y=y, train=True) - teacher
