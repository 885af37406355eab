"""What every objective on a stochastic interpolant shares (time convention, path, targets).

Convention (the flow-map spec's): the source/noise x0 = n ~ N(0, I) sits at t = 0 and the data
x1 = x at t = 1; I_t = α(t)·n + β(t)·x for an `Interpolant` (α, β); the conditional velocity
İ_t = α'(t)·n + β'(t)·x is the flow-matching target. In the `Interfaces` notation the path is
x_t = a(t)·x + σ(t)·n with (a, σ) = (β, α), which `alpha_sigma` returns.

The network receives the times as c_noise(t) = time_scale·t (by default the raw t ∈ [0, 1], the
order-one scale the backbone embeddings expect) and the raw state (c_in = 1); outputs are used as
they are (c_out = 1, c_skip = 0).

Affine conversions used by `score` and the data-prediction objectives (a, σ and their t-derivatives
a', σ'; D = a·σ' − a'·σ):

    n̂ = (a·v − a'·x_t) / D          x̂ = (σ'·x_t − σ·v) / D         (velocity v → predictions)
    v = a'·x̂ + σ'·(x_t − a·x̂) / σ                                  (data prediction x̂ → velocity)
    ∇ log p_t(x_t) = −n̂ / σ
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.base import Interfaces, TimeDomain
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.flowmaps.st_sampling import STSampling
from nnx_interfaces.interpolants import Interpolant, get_interpolant


class InterpolantInterface(Interfaces):
    """Base of the flow-map family: noise at t = 0, data at t = 1, path given by `interpolant`.

    Args:
      network: a backbone honouring the contract `net(x, t, *, r=None, y=None, train=False)`.
      interpolant: an `Interpolant` or its name ("linear", "trig", "vp").
      st: time sampling, curriculum, loss norm and loss scale (`STSampling`).
      time_scale: the network receives time_scale·t (default 1: the raw time in [0, 1]).
      rngs: `nnx.Rngs` with streams `time`, `noise` (default: `network.rngs`).
    """

    def __init__(
        self,
        network: nnx.Module,
        interpolant: "str | Interpolant" = "linear",
        *,
        st: STSampling | None = None,
        time_scale: float = 1.0,
        rngs: nnx.Rngs | None = None,
    ):
        st = STSampling() if st is None else st
        super().__init__(network, st.dist, rngs=rngs)
        if not time_scale > 0:
            raise InterfaceConfigError(f"time_scale must be > 0; got {time_scale}.")
        self.interpolant = get_interpolant(interpolant)
        self.st = st
        self.time_scale = float(time_scale)

    # --- time domain and path --------------------------------------------------------------
    @property
    def time_domain(self) -> TimeDomain:
        return TimeDomain(noise=0.0, data=1.0, variable="t", eps=self.interpolant.data_eps)

    @property
    def t_max(self) -> float:
        """Largest training time, 1 − data_eps."""
        return 1.0 - self.interpolant.data_eps

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(data coefficient β(t), noise coefficient α(t))."""
        return self.interpolant.alpha_sigma(t)

    def c_in(self, t):
        return jnp.ones_like(t)

    def c_out(self, t):
        return jnp.ones_like(t)

    def c_skip(self, t):
        return jnp.zeros_like(t)

    def c_noise(self, t):
        """time_scale·t: the time the network sees (lower `time_scale` smooths the network in t,
        which steadies objectives that differentiate it in time: MF, sCT/sCD)."""
        return self.time_scale * t

    # --- training distribution ---------------------------------------------------------------
    def sample_t(self, shape: tuple[int, ...]) -> jax.Array:
        """Training times in [0, t_max] from the `time` stream."""
        return self.st.sample_t(self.rngs.time(), shape, self.t_max)

    def sample_n(self, shape: tuple[int, ...]) -> jax.Array:
        """Standard normal source samples from the `noise` stream."""
        return jax.random.normal(self.rngs.noise(), shape)

    def sample_x_t(self, x: jax.Array, n: jax.Array, t: jax.Array) -> jax.Array:
        """I_t = α(t)·n + β(t)·x."""
        return self.interpolant.interpolate(n, x, t)

    def target(self, x: jax.Array, n: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """İ_t = α'(t)·n + β'(t)·x."""
        return self.interpolant.velocity(n, x, t)

    # --- model outputs -----------------------------------------------------------------------
    def velocity(self, x_t: jax.Array, t: jax.Array, *, y: Any = None, train: bool = False):
        """Instantaneous velocity b_t(x_t) `[B, ...]` (subclasses define it)."""
        raise NotImplementedError

    def score(self, x_t: jax.Array, t: jax.Array, *args, y: Any = None, **kwargs) -> jax.Array:
        """∇ log p_t(x_t) = −n̂/σ with n̂ = (a·v − a'·x_t)/(a·σ' − a'·σ) (undefined at t = 1)."""
        a, s, da, ds = self.path_derivatives(t)
        v = self.velocity(x_t, t, y=y)
        b = self.bcast_right
        n_hat = (b(a, x_t) * v - b(da, x_t) * x_t) / b(a * ds - da * s, x_t)
        return -n_hat / b(s, x_t)

    def velocity_from_data(self, x_t: jax.Array, x_hat: jax.Array, t: jax.Array) -> jax.Array:
        """v = a'·x̂ + σ'·(x_t − a·x̂)/σ: the velocity implied by a data prediction (t < 1)."""
        a, s, da, ds = self.path_derivatives(t)
        b = self.bcast_right
        return b(da, x_t) * x_hat + b(ds, x_t) * (x_t - b(a, x_t) * x_hat) / b(s, x_t)

    # --- helpers -----------------------------------------------------------------------------
    def finish(self, per_example: jax.Array, aux: dict, return_aux: bool) -> Any:
        """loss_scale · mean of `[B]` per-example losses; with `return_aux`, also a dict with
        `loss`, `per_example` (`[B]`) and the batch mean of each named term in `aux`."""
        loss = self.st.loss_scale * jnp.mean(per_example)
        if return_aux:
            terms = {k: jnp.mean(v) for k, v in aux.items()}
            return loss, {"loss": loss, "per_example": per_example, **terms}
        return loss

    def _draw(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(t `[B]`, n like x) for a flow-matching term."""
        return self.sample_t((x.shape[0],)), self.sample_n(x.shape)
