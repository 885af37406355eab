"""EDM: variance-exploding diffusion with Karras et al. (2022) preconditioning.

The time variable is the noise level σ ∈ [σ_min, σ_max] = [0.002, 80] (data at 0, noise at σ_max):

    path        x_σ = x + σ·n                                            (α = 1, σ(σ) = σ)
    precond     c_skip = σ_d² / (σ² + σ_d²)           c_out = σ·σ_d / sqrt(σ² + σ_d²)   (Table 1)
                c_in   = 1 / sqrt(σ² + σ_d²)          c_noise = log(σ) / 4
    denoiser    D(x_σ, σ) = c_skip·x_σ + c_out·F(c_in·x_σ, c_noise)     (Eq. 7)
    target      x  (D ≈ E[x | x_σ])
    loss        λ(σ)·mean‖D − x‖²,  λ(σ) = (σ² + σ_d²) / (σ·σ_d)²        (Eq. 8; = ‖F − F_target‖²)
    pred        dx/dσ = (x_σ − D) / σ                                    (PF-ODE, Eq. 3)
    score       ∇ log p_σ(x_σ) = (D − x_σ) / σ²                          (Tweedie)

σ is drawn by `time_dist.sample_time` on [σ_min, σ_max]; the default lognormal with
(P_mean, P_std) = (−1.2, 1.2) is EDM's training distribution.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.base import Interfaces, TimeDomain, TrainingTimeDistType
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.time_dist import check_time_dist, sample_time


class EDMInterface(Interfaces):
    """EDM preconditioning and loss on x_σ = x + σ·n; time is the noise level σ.

    Args:
      network: a backbone `net(x, t, *, r=None, y=None, train=False, return_hidden_at=None)`;
        it receives `c_in·x_σ` and `c_noise = log(σ)/4`.
      train_time_dist_type: "lognormal" (EDM), "uniform" or "logitnormal" on [σ_min, σ_max].
      t_mu, t_sigma: (mu, sigma) of the σ distribution (EDM's P_mean = −1.2, P_std = 1.2).
      x_sigma: σ_data, the data standard deviation (0.5 for images in [−1, 1]).
      sigma_min, sigma_max: the time domain (sampling runs from σ_max down to σ_min).
      rngs: `nnx.Rngs` with streams `time`, `noise`, `label_dropout` (default: `network.rngs`).
    """

    def __init__(
        self,
        network: nnx.Module,
        train_time_dist_type: str | TrainingTimeDistType = "lognormal",
        *,
        t_mu: float = -1.2,
        t_sigma: float = 1.2,
        x_sigma: float = 0.5,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(network, train_time_dist_type, rngs=rngs)
        if not (x_sigma > 0 and 0 < sigma_min < sigma_max):
            raise InterfaceConfigError(
                f"EDM needs x_sigma > 0 and 0 < sigma_min < sigma_max; got x_sigma={x_sigma}, "
                f"sigma_min={sigma_min}, sigma_max={sigma_max}."
            )
        check_time_dist(self.train_time_dist_type, t_mu, t_sigma, sigma_min, sigma_max)
        self.t_mu = float(t_mu)
        self.t_sigma = float(t_sigma)
        self.x_sigma = float(x_sigma)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    # --- time domain and path ----------------------------------------------------------------
    @property
    def time_domain(self) -> TimeDomain:
        return TimeDomain(noise=self.sigma_max, data=0.0, variable="sigma", eps=self.sigma_min)

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """α(σ) = 1, σ(σ) = σ."""
        return jnp.ones_like(t), t

    # --- preconditioning (EDM Table 1) -------------------------------------------------------
    def c_in(self, t: jax.Array) -> jax.Array:
        return 1.0 / jnp.sqrt(t**2 + self.x_sigma**2)

    def c_out(self, t: jax.Array) -> jax.Array:
        return t * self.x_sigma / jnp.sqrt(t**2 + self.x_sigma**2)

    def c_skip(self, t: jax.Array) -> jax.Array:
        return self.x_sigma**2 / (t**2 + self.x_sigma**2)

    def c_noise(self, t: jax.Array) -> jax.Array:
        return jnp.log(t) / 4.0

    def loss_weight(self, t: jax.Array) -> jax.Array:
        """λ(σ) = (σ² + σ_d²) / (σ·σ_d)² (Eq. 8): unit effective weight on F."""
        return (t**2 + self.x_sigma**2) / (t * self.x_sigma) ** 2

    # --- training distribution ---------------------------------------------------------------
    def sample_t(self, shape: tuple[int, ...]) -> jax.Array:
        """σ `[B]` from the training distribution on [σ_min, σ_max]."""
        return sample_time(
            self.rngs.time(),
            shape,
            self.train_time_dist_type,
            mu=self.t_mu,
            sigma=self.t_sigma,
            low=self.sigma_min,
            high=self.sigma_max,
        )

    def sample_n(self, shape: tuple[int, ...]) -> jax.Array:
        return jax.random.normal(self.rngs.noise(), shape)

    def sample_x_t(self, x: jax.Array, n: jax.Array, t: jax.Array) -> jax.Array:
        """x_σ = x + σ·n."""
        return x + self.bcast_right(t, x) * n

    def target(self, x: jax.Array, n: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """The denoiser's target: the clean x."""
        return x

    # --- model outputs -----------------------------------------------------------------------
    def denoise(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """D(x_σ, σ) = c_skip·x_σ + c_out·F(c_in·x_σ, c_noise(σ)) ≈ E[x | x_σ]."""
        return self.precondition(x_t, t, self.network_output(x_t, t, *args, **kwargs)[0])

    def pred(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """dx/dσ = (x_σ − D) / σ (`x_t: [B, ...]`, `t = σ: [B]`)."""
        d = self.denoise(x_t, t, *args, **kwargs)
        return (x_t - d) / self.bcast_right(t, x_t)

    def score(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """∇ log p_σ = (D − x_σ) / σ²."""
        d = self.denoise(x_t, t, *args, **kwargs)
        return (d - x_t) / self.bcast_right(t, x_t) ** 2

    def loss(self, x: jax.Array, *args, return_aux: bool = False, **kwargs) -> Any:
        """EDM loss mean_B λ(σ)·mean‖D(x_σ, σ) − x‖².

        Returns:
          the scalar loss, or `(loss, aux)` with aux keys `loss`, `mse` (unweighted mean
          ‖D − x‖²), `per_example` `[B]` (weighted), `weight` `[B]` (λ(σ)), `t` `[B]` (σ)
          (and `hidden` when `return_hidden_at` is passed).
        """
        kwargs.setdefault("train", True)
        t = self.sample_t((x.shape[0],))
        n = self.sample_n(x.shape)
        x_t = self.sample_x_t(x, n, t)
        f, hidden = self.network_output(x_t, t, *args, **kwargs)
        sq = self.mean_flat((self.precondition(x_t, t, f) - self.target(x, n, t)) ** 2)
        weight = self.loss_weight(t)
        per_example = weight * sq
        loss = jnp.mean(per_example)
        if not return_aux:
            return loss
        aux = {
            "loss": loss,
            "mse": jnp.mean(sq),
            "per_example": per_example,
            "weight": weight,
            "t": t,
        }
        if hidden is not None:
            aux["hidden"] = hidden
        return loss, aux
