"""Flow-map mean flow (Geng et al. 2025, arXiv:2505.13447), flow-map spec "mf".

    L_D = ‖∂_s Φ(I_s, s, t) + sg(∇Φ(I_s, s, t)·İ_s)‖²                      (the spec's form)

With Φ = x + (t − s)·f the residual is d/ds Φ(I_s, s, t) along the conditional path,
İ_s − f + (t − s)·df/ds with df/ds = ∂_s f + ∇f·İ_s; it is computed by `jax.jvp` of
(x, s) ↦ Φ(x, s, t) along (İ_s, 1) (the value) and along (İ_s, 0) (the spatial part, under
stop-gradient), so gradients flow through ∂_s Φ only. `full_stopgrad=True` gives MeanFlow's
original ‖f − sg(İ_s + (t − s)·df/ds)‖² instead (same value, gradient through f only).
Its minimum is not zero: at the exact map the residual is −∇Φ·(İ_s − b_s(I_s)), whose mean
given I_s is zero.
"""

import jax
import jax.numpy as jnp

from nnx_interfaces.flowmaps.parameterisation import FlowMapInterface, module_jvp


class MeanFlowMap(FlowMapInterface):
    """Flow-map mean flow; `full_stopgrad` selects MeanFlow's stop-gradient placement.

    Other arguments as `FlowMapInterface`.
    """

    def __init__(self, network, interpolant="linear", *, full_stopgrad: bool = False, **kw):
        super().__init__(network, interpolant, **kw)
        self.full_stopgrad = bool(full_stopgrad)

    def distillation_residual(self, x, n, s, t, *, y=None):
        x_s = self.sample_x_t(x, n, s)
        v = self.target(x, n, s)  # İ_s
        if self.full_stopgrad:
            f, df_ds = module_jvp(
                self,
                lambda m, xx, ss: m.average_velocity(xx, ss, t, y=y, train=True),
                (x_s, s),
                (v, jnp.ones_like(s)),
            )
            target = jax.lax.stop_gradient(v + self.bcast_right(t - s, x_s) * df_ds)
            return f - target
        phi = lambda m, xx, ss: m.flow_map(xx, ss, t, y=y, train=True)  # noqa: E731
        # One state, two tangents: ∂_s Φ and ∇Φ·İ_s see the same dropped labels.
        _, (d_s, spatial) = module_jvp(
            self, phi, (x_s, s), (jnp.zeros_like(x_s), jnp.ones_like(s)), (v, jnp.zeros_like(s))
        )
        return d_s + jax.lax.stop_gradient(spatial)
