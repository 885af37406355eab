"""SiT: flow matching on the linear path (Ma et al., 2024; rectified flow).

    path        x_t = (1 − t)·x + t·n,   n ~ N(0, I),   t ∈ [0, 1], data at 0, noise at 1
    target      v = n − x                        (the conditional velocity dx_t/dt)
    network     F = network(x_t, t)              (c_in = 1, c_out = 1, c_skip = 0, c_noise = t)
    pred        dx/dt = F ≈ E[n − x | x_t]
    denoiser    E[x | x_t] = x_t − t·F,   E[n | x_t] = x_t + (1 − t)·F
    score       ∇ log p_t(x_t) = −E[n | x_t] / t = −(x_t + (1 − t)·F) / t
    loss        E_t E_{x,n} mean‖F − (n − x)‖²

Training times come from `time_dist.sample_time` on [0, 1], then the resolution shift
t ↦ s·t / (1 + (s − 1)·t) with s = sqrt(dim(x) / t_shift_base) (SD3; s > 1 moves mass towards
noise for data larger than `t_shift_base` numbers, e.g. 32×32×4 latents for 4096).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.base import Interfaces, TimeDomain, TrainingTimeDistType
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.time_dist import check_time_dist, sample_time


class SiTInterface(Interfaces):
    """Flow matching on x_t = (1 − t)·x + t·n with velocity target n − x.

    Args:
      network: a backbone `net(x, t, *, r=None, y=None, train=False, return_hidden_at=None)`.
      train_time_dist_type: "uniform", "lognormal" or "logitnormal" (on [0, 1], see `time_dist`).
      t_mu, t_sigma: (mu, sigma) of the time distribution.
      t_shift_base: number of data entries at which the resolution shift is 1; None disables the
        shift. For low-dimensional data (2-D toys) pass None or the data dimension.
      rngs: `nnx.Rngs` with streams `time`, `noise`, `label_dropout` (default: `network.rngs`).
    """

    def __init__(
        self,
        network: nnx.Module,
        train_time_dist_type: str | TrainingTimeDistType = "logitnormal",
        *,
        t_mu: float = 0.0,
        t_sigma: float = 1.0,
        t_shift_base: int | None = 4096,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(network, train_time_dist_type, rngs=rngs)
        check_time_dist(self.train_time_dist_type, t_mu, t_sigma, 0.0, 1.0)
        if t_shift_base is not None and not t_shift_base > 0:
            raise InterfaceConfigError(
                f"t_shift_base must be a positive number of data entries or None; got "
                f"{t_shift_base!r}."
            )
        self.t_mu = float(t_mu)
        self.t_sigma = float(t_sigma)
        self.t_shift_base = t_shift_base

    # --- time domain and path ----------------------------------------------------------------
    @property
    def time_domain(self) -> TimeDomain:
        return TimeDomain(noise=1.0, data=0.0, variable="t", eps=0.0)

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """α(t) = 1 − t, σ(t) = t."""
        return 1.0 - t, t

    # --- preconditioning (identity: the network predicts the velocity) ------------------------
    def c_in(self, t: jax.Array) -> jax.Array:
        return jnp.ones_like(t)

    def c_out(self, t: jax.Array) -> jax.Array:
        return jnp.ones_like(t)

    def c_skip(self, t: jax.Array) -> jax.Array:
        return jnp.zeros_like(t)

    def c_noise(self, t: jax.Array) -> jax.Array:
        return t

    # --- training distribution ---------------------------------------------------------------
    def shift_for(self, data_shape: tuple[int, ...]) -> float:
        """Resolution shift s = sqrt(prod(data_shape) / t_shift_base) (1 when disabled)."""
        if self.t_shift_base is None:
            return 1.0
        return math.sqrt(math.prod(data_shape) / self.t_shift_base)

    def sample_t(
        self, shape: tuple[int, ...], data_shape: tuple[int, ...] | None = None
    ) -> jax.Array:
        """t `[B]` from the training distribution on [0, 1], resolution-shifted if `data_shape`."""
        t = sample_time(
            self.rngs.time(), shape, self.train_time_dist_type, mu=self.t_mu, sigma=self.t_sigma
        )
        if data_shape is not None:
            s = self.shift_for(tuple(data_shape))
            if s != 1.0:
                t = self.t_shift(t, s)
        return t

    def sample_n(self, shape: tuple[int, ...]) -> jax.Array:
        return jax.random.normal(self.rngs.noise(), shape)

    def sample_x_t(self, x: jax.Array, n: jax.Array, t: jax.Array) -> jax.Array:
        """x_t = (1 − t)·x + t·n."""
        t = self.bcast_right(t, x)
        return (1.0 - t) * x + t * n

    def target(self, x: jax.Array, n: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """v = n − x."""
        return n - x

    # --- model outputs -----------------------------------------------------------------------
    def pred(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """dx/dt = F(x_t, t) (the predicted velocity; `x_t: [B, ...]`, `t: [B]`)."""
        return self.precondition(x_t, t, self.network_output(x_t, t, *args, **kwargs)[0])

    def score(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """∇ log p_t = −(x_t + (1 − t)·v) / t (undefined at t = 0, the data end)."""
        v = self.pred(x_t, t, *args, **kwargs)
        t_b = self.bcast_right(t, x_t)
        return -(x_t + (1.0 - t_b) * v) / t_b

    def loss(self, x: jax.Array, *args, return_aux: bool = False, **kwargs) -> Any:
        """Flow-matching loss mean_B mean‖F(x_t, t) − (n − x)‖².

        Args:
          x: clean data `[B, ...]`; `*args`, `**kwargs` go to the network (`y=` labels;
            `train` defaults to True; `return_hidden_at=k` puts the hidden tokens in aux).
        Returns:
          the scalar loss, or `(loss, aux)` with aux keys `loss` (scalar), `mse` (scalar),
          `per_example` `[B]`, `t` `[B]` (and `hidden` when requested).
        """
        kwargs.setdefault("train", True)
        t = self.sample_t((x.shape[0],), data_shape=x.shape[1:])
        n = self.sample_n(x.shape)
        x_t = self.sample_x_t(x, n, t)
        f, hidden = self.network_output(x_t, t, *args, **kwargs)
        per_example = self.mean_flat((self.precondition(x_t, t, f) - self.target(x, n, t)) ** 2)
        loss = jnp.mean(per_example)
        if not return_aux:
            return loss
        aux = {"loss": loss, "mse": loss, "per_example": per_example, "t": t}
        if hidden is not None:
            aux["hidden"] = hidden
        return loss, aux
