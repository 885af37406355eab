"""Exact networks for Gaussian data: backbones whose outputs are the closed-form optima.

Each honours the backbone contract `net(x, t, *, r=None, y=None, train=False)` and returns the exact
answer from a `GaussianOracle` (built with the interface's own `alpha_sigma`) plus two learnable
perturbations, `diag` and `off` (both 0 by default), so a test can move the network off the optimum
and differentiate the loss with respect to the move:

    out = exact + diag·(1 + x) + off·(r_end − t)·x

`off` vanishes on the diagonal r_end = t, so it leaves velocities unchanged and perturbs only the
jumps (the distillation terms). Use them to check that an objective's loss is minimal at the exact
solution, and to test samplers exactly.

Modes of `ExactNet`:
  "velocity"  b(x, t) (r ignored)
  "data"      E[x | x_t] (r ignored)
  "end"       flow-map average velocity f(x, s = t, t' = r) = (Φ(x, s → t') − x)/(t' − s)
  "step"      shortcut s(x, t, d = r) = f(x, t, t + d)
`ExactConsistencyNet` is the TrigFlow F* of the exact consistency function (input x_t/σ_d, angle).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.oracles import GaussianOracle

MODES = ("velocity", "data", "end", "step")


def _right(a, x):
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def exact_average_velocity(oracle: GaussianOracle, x, s, t, tol: float = 1e-5) -> jax.Array:
    """(Φ(x, s → t) − x)/(t − s); the velocity b(x, s) where |t − s| < tol. `x: [B, ...]`."""
    same = jnp.abs(t - s) < tol
    safe_t = jnp.where(same, s + 1.0, t)  # any point off the diagonal; masked out below
    avg = (oracle.ode_map(x, s, safe_t) - x) / _right(safe_t - s, x)
    return jnp.where(_right(same, x), oracle.velocity(x, s), avg)


class ExactNet(nnx.Module):
    """Exact backbone for Gaussian data; see the module docstring for `mode`."""

    def __init__(self, oracle: GaussianOracle, mode: str = "end", *, rngs: nnx.Rngs):
        if mode not in MODES:
            raise InterfaceConfigError(f"ExactNet mode must be one of {MODES}; got {mode!r}.")
        self.oracle = oracle
        self.mode = mode
        self.rngs = rngs
        self.diag = nnx.Param(jnp.float32(0.0))
        self.off = nnx.Param(jnp.float32(0.0))

    def __call__(self, x, t, *, r=None, y=None, train=False, return_hidden_at=None):
        o = self.oracle
        if self.mode == "velocity":
            out, end = o.velocity(x, t), t
        elif self.mode == "data":
            out, end = o.posterior_mean_x(x, t), t
        else:
            end = t if r is None else (r if self.mode == "end" else t + r)
            out = exact_average_velocity(o, x, t, end)
        return out + self.diag[...] * (1.0 + x) + self.off[...] * _right(end - t, x) * x


class ExactConsistencyNet(nnx.Module):
    """TrigFlow F*(x_t/σ_d, t) of the exact consistency function f*(x_t, t) = Φ(x_t, t → 0).

    F* = (cos t·x_t − f*)/(σ_d sin t), with `oracle` built on the TrigFlow path
    (cos t, σ_d sin t); plus `diag`·(1 + x̃) as a perturbation. Valid for t ∈ (0, π/2].
    """

    def __init__(self, oracle: GaussianOracle, sigma_d: float, *, rngs: nnx.Rngs):
        self.oracle = oracle
        self.sigma_d = float(sigma_d)
        self.rngs = rngs
        self.diag = nnx.Param(jnp.float32(0.0))

    def __call__(self, x, t, *, r=None, y=None, train=False, return_hidden_at=None):
        x_t = self.sigma_d * x
        f = self.oracle.ode_map(x_t, t, jnp.zeros_like(t))
        F = (_right(jnp.cos(t), x) * x_t - f) / _right(self.sigma_d * jnp.sin(t), x)
        return F + self.diag[...] * (1.0 + x)
