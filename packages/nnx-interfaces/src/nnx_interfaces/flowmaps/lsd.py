"""Lagrangian self-distillation (Boffi et al. 2025), flow-map spec "lsd".

    L_D = ‖∂_t Φ(I_s, s, t) − sg(b_t(Φ(I_s, s, t)))‖²

(the Lagrangian equation ∂_t Φ = b_t(Φ)); ∂_t Φ = f + (t − s)·∂_t f by one `jax.jvp` in t. The
velocity b_t = f(·, t, t) is the model's own, under stop-gradient (the teacher side).
"""

import jax
import jax.numpy as jnp

from nnx_interfaces.flowmaps.parameterisation import FlowMapInterface, module_jvp


class LagrangianSelfDistillation(FlowMapInterface):
    """LSD; arguments as `FlowMapInterface`."""

    def distillation_residual(self, x, n, s, t, *, y=None):
        x_s = self.sample_x_t(x, n, s)
        phi, d_phi_dt = module_jvp(
            self,
            lambda m, tt: m.flow_map(x_s, s, tt, y=y, train=True),
            (t,),
            (jnp.ones_like(t),),
        )
        b = jax.lax.stop_gradient(self.velocity(phi, t, y=y, train=True))
        return d_phi_dt - b
