"""Eulerian self-distillation (Boffi et al. 2025), flow-map spec "esd".

    L_D = ‖∂_s Φ(I_s, s, t) + ∇Φ(I_s, s, t)·sg(b_s(I_s))‖²

(the Eulerian equation: Φ(·, s, t) is transported by the velocity at s). Both terms come from one
`jax.jvp` of (x, s) ↦ Φ(x, s, t) along the tangent (b_s(I_s), 1); the issue's correction: the
velocity is b_s at I_s (the model's own, under stop-gradient).
"""

import jax
import jax.numpy as jnp

from nnx_interfaces.flowmaps.parameterisation import FlowMapInterface, module_jvp


class EulerianSelfDistillation(FlowMapInterface):
    """ESD; arguments as `FlowMapInterface`."""

    def distillation_residual(self, x, n, s, t, *, y=None):
        x_s = self.sample_x_t(x, n, s)
        b_s = jax.lax.stop_gradient(self.velocity(x_s, s, y=y, train=True))
        _, d_phi = module_jvp(
            self,
            lambda m, xx, ss: m.flow_map(xx, ss, t, y=y, train=True),
            (x_s, s),
            (b_s, jnp.ones_like(s)),
        )
        return d_phi
