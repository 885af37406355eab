"""Flow-map parameterisation Φ(x, s, t) = x + (t − s)·f(x, s, t) and the shared flow-map loss.

On any backbone honouring the contract, f(x, s, t) = net(x, s, r=t) (times in [0, 1], the order-one
scale the embeddings expect; the backbone needs `use_r=True` or an equivalent second time input).
f is the average velocity over [s, t]; the velocity is b_t(x) = f(x, t, t), and Φ(x, t, t) = x
exactly by construction.

Every flow-map objective is the self-distillation loss of Boffi, Albergo & Vanden-Eijnden (2025)

    L_SD = L_b + w·L_D,     L_b = E‖b_t(I_t) − İ_t‖²   (t ~ time distribution on [0, 1])

with its own distillation term L_D on pairs s ≤ t from `STSampling.sample_st` (the `delta_t`
curriculum). L_D is measured in velocity units (a Φ-residual divided by t − s) so the terms are on
one scale; `distillation_residual` returns it `[B, ...]` and `STSampling.norm_fn` applies the norm.

Interface contract: `two_time = True`, `pred(x, s, t)` = f(x, s, t) (so a sampler's jump
x + (t − s)·pred is Φ(x, s, t)), `pred(x, t)` = b_t(x), `flow_map(x, s, t)` = Φ.
"""

import abc
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.flowmaps.common import InterpolantInterface


def module_jvp(
    module: nnx.Module, fn: Callable, primals: tuple, tangents: tuple, *more_tangents: tuple
) -> tuple:
    """`jax.jvp` of `fn(module, *primals)` for a stateful nnx module: (primal out, tangent out).

    The module is split outside and merged inside, so anything it mutates while running (the
    `label_dropout` stream of a backbone with `train=True`) happens on a copy whose new state is
    written back afterwards; no tracer escapes. The loss's own `time`/`noise` keys are drawn
    before the call. Extra tangent tuples are pushed through the same function from the same
    state (same dropped labels); then the result is (primal out, [tangent out, ...]).
    """
    graphdef, state = nnx.split(module)

    def pure(*args):
        copy = nnx.merge(graphdef, state, copy=True)
        return fn(copy, *args), nnx.state(copy)

    outs = [jax.jvp(pure, primals, tan, has_aux=True) for tan in (tangents, *more_tangents)]
    nnx.update(module, outs[0][2])
    if not more_tangents:
        return outs[0][0], outs[0][1]
    return outs[0][0], [o[1] for o in outs]


class FlowMapInterface(InterpolantInterface, abc.ABC):
    """Base of the flow-map objectives (CTM, PSD, LSD, ESD, MF).

    Args:
      network: contract backbone taking a second time `r` (f(x, s, t) = net(x, s, r=t)).
      interpolant: `Interpolant` or its name.
      distill_weight: w in L_b + w·L_D.
      st: `STSampling` (time distribution, `delta_t` curriculum, loss norm, loss_scale).
      rngs: streams `time`, `noise` (default `network.rngs`).
    """

    two_time = True

    def __init__(self, network: nnx.Module, interpolant="linear", *, distill_weight=1.0, **kw):
        super().__init__(network, interpolant, **kw)
        if distill_weight < 0:
            raise InterfaceConfigError(f"distill_weight must be ≥ 0; got {distill_weight}.")
        self.distill_weight = float(distill_weight)

    # --- parameterisation ----------------------------------------------------------------------
    def average_velocity(self, x, s, t, *, y=None, train=False) -> jax.Array:
        """f(x, s, t) = net(x, s, r=t): `x: [B, ...]`, `s, t: [B]` → like x."""
        return self.network(x, self.c_noise(s), r=self.c_noise(t), y=y, train=train)

    def flow_map(self, x, s, t, *, y=None, train=False) -> jax.Array:
        """Φ(x, s, t) = x + (t − s)·f(x, s, t) (Φ(x, t, t) = x exactly)."""
        f = self.average_velocity(x, s, t, y=y, train=train)
        return x + self.bcast_right(t - s, x) * f

    def pred(self, x_t, t, r=None, *, y=None, train=False) -> jax.Array:
        """f(x, t, r) (average velocity from t to r); with r=None the velocity b_t(x)."""
        return self.average_velocity(x_t, t, t if r is None else r, y=y, train=train)

    def velocity(self, x_t, t, *, y=None, train=False) -> jax.Array:
        """b_t(x) = f(x, t, t)."""
        return self.average_velocity(x_t, t, t, y=y, train=train)

    # --- loss ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def distillation_residual(self, x, n, s, t, *, y=None) -> jax.Array:
        """Residual of L_D `[B, ...]` (velocity units) at x_s = I_s, for data x and noise n."""

    def flow_residual(self, x, n, t, *, y=None) -> jax.Array:
        """b_t(I_t) − İ_t."""
        return self.velocity(self.sample_x_t(x, n, t), t, y=y, train=True) - self.target(x, n, t)

    def loss(self, x: jax.Array, y: Any = None, *, step: Any = 0, return_aux: bool = False):
        """L_b + w·L_D (averaged, times loss_scale); `x: [B, ...]`, `step` drives `delta_t`."""
        batch = x.shape[0]
        t_b, n = self._draw(x)
        s, t = self.st.sample_st(self.rngs.time(), batch, step, self.t_max)
        l_b = self.st.norm_fn(self.flow_residual(x, n, t_b, y=y))
        l_d = self.st.norm_fn(self.distillation_residual(x, n, s, t, y=y))
        aux = {"flow": l_b, "distill": l_d, "delta_t": self.st.delta_t(step) * jnp.ones(batch)}
        return self.finish(l_b + self.distill_weight * l_d, aux, return_aux)
