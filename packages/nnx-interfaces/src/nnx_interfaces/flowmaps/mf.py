"""Flow-map mean flow (Geng et al. 2025, arXiv:2505.13447), flow-map spec "mf".

Spec: L_D = ‖∂_s Φ(I_s, s, t) + sg(∇Φ(I_s, s, t)·İ_s)‖². With Φ = x + (t − s)·f,
∂_s Φ + ∇Φ·İ_s = İ_s − f + (t − s)·df/ds where df/ds = ∂_s f + ∇f·İ_s (one `jax.jvp` along
(İ_s, 1)), so the residual equals MeanFlow's

    f(I_s, s, t) − sg(İ_s + (t − s)·df/ds)

in value; the stop-gradient covers the whole target, as in MeanFlow. Its minimum is not zero: at
the exact map the residual is −∇Φ·(İ_s − b_s(I_s)), whose mean given I_s is zero.
"""

import jax
import jax.numpy as jnp

from nnx_interfaces.flowmaps.parameterisation import FlowMapInterface, module_jvp


class MeanFlowMap(FlowMapInterface):
    """Flow-map mean flow; arguments as `FlowMapInterface`."""

    def distillation_residual(self, x, n, s, t, *, y=None):
        x_s = self.sample_x_t(x, n, s)
        v = self.target(x, n, s)  # İ_s
        f, df_ds = module_jvp(
            self,
            lambda m, xx, ss: m.average_velocity(xx, ss, t, y=y, train=True),
            (x_s, s),
            (v, jnp.ones_like(s)),
        )
        target = jax.lax.stop_gradient(v + self.bcast_right(t - s, x_s) * df_ds)
        return f - target
