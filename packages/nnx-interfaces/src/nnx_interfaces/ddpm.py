"""Discrete-time DDPM (Ho et al., 2020) with ε- or v-prediction, run in continuous time.

Discrete schedule (T = 1000 steps by default), index i = 1..T:

    linear   β_i = linspace(1e-4·1000/T, 0.02·1000/T)           (Ho et al.)
    cosine   ᾱ_i = f(i)/f(0), f(i) = cos²((i/T + s)/(1 + s)·π/2), s = 0.008,
             β_i = min(1 − ᾱ_i/ᾱ_{i−1}, 0.999)                   (Nichol & Dhariwal, 2021)
    ᾱ_i = ∏_{j ≤ i} (1 − β_j),   x_i = sqrt(ᾱ_i)·x + sqrt(1 − ᾱ_i)·n

Continuous time so the same samplers run it: t = i/T ∈ [0, 1] (data at 0, noise at 1) and
log ᾱ(t) is the piecewise-linear interpolation of log ᾱ_i over the grid i/T (log ᾱ(0) = 0).
Then α(t) = sqrt(ᾱ(t)), σ(t) = sqrt(1 − ᾱ(t)) (variance preserving, α² + σ² = 1), and the grid
values are exactly the discrete ones. Training draws the index: u from the training time
distribution on [0, 1], i = ceil(u·T) ∈ {1..T} (uniform u gives DDPM's uniform index), t = i/T.

    network     F = network(x_t, c_noise)    (c_in = 1, c_noise = t − 1/T = (i − 1)/T)
    ε-pred      target n;          E[n | x_t] = F,            x̂ = (x_t − σ·F)/α
    v-pred      target α·n − σ·x;  E[n | x_t] = σ·x_t + α·F,  x̂ = α·x_t − σ·F
    pred        dx/dt = α'·x̂ + σ'·E[n | x_t]        (probability-flow ODE in t)
    score       ∇ log p_t(x_t) = −E[n | x_t] / σ
    loss        mean‖F − target‖²                   (DDPM's "simple" loss)

`c_skip`, `c_out` describe x̂ = c_skip·x_t + c_out·F (ε: 1/α, −σ/α; v: α, −σ).

Time index convention (the DiT / ADM releases): their arrays are 0-based, `alphas_cumprod[n]`
= ᾱ_{n+1}, and the network is fed the integer n at that noise level. Here the noise level ᾱ_i
sits at t = i/T, so the network gets c_noise = (i − 1)/T = t − 1/T: with the DiT embedding's
time_scale 1000 and T = 1000 it sees exactly the release's n = i − 1 (for other T, the
release's n scaled to [0, 1): n/T).

With a network that predicts a variance too (`learn_sigma`, 2·C output channels, as DiT),
`denoise_and_variance` returns x̂ and the extra channels v, which ADM's ancestral sampler
(`nnx_samplers.DDPMAncestral`, variance "learned_range") reads as the interpolation
log Σ = ½(v + 1)·log β̃_max + ½(1 − v)·log β̃_min between the two fixed variances.
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_interfaces.base import Interfaces, TimeDomain, TrainingTimeDistType
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.time_dist import check_time_dist, sample_time

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")


@functools.lru_cache(maxsize=16)
def discrete_betas(schedule: str, num_steps: int) -> np.ndarray:
    """β_1..β_T as a float64 numpy array `[T]` for "linear" or "cosine" (see module docstring)."""
    if schedule == "linear":
        scale = 1000.0 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if schedule == "cosine":
        s = 0.008
        f = np.cos((np.arange(num_steps + 1) / num_steps + s) / (1 + s) * math.pi / 2) ** 2
        return np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    raise InterfaceConfigError(
        f"Unknown DDPM beta schedule {schedule!r}; expected one of {SCHEDULES}."
    )


@functools.lru_cache(maxsize=16)
def log_alpha_bar_grid(schedule: str, num_steps: int) -> np.ndarray:
    """log ᾱ_i for i = 0..T, `[T + 1]` float64, with log ᾱ_0 = 0."""
    return np.concatenate([[0.0], np.cumsum(np.log1p(-discrete_betas(schedule, num_steps)))])


class DDPMInterface(Interfaces):
    """Discrete-time DDPM (ε- or v-prediction) exposed in continuous time t = i/T ∈ [0, 1].

    Args:
      network: a backbone `net(x, t, *, r=None, y=None, train=False, return_hidden_at=None)`.
      train_time_dist_type: distribution of u on [0, 1] before rounding to the index grid
        ("uniform" = DDPM's uniform index).
      t_mu, t_sigma: (mu, sigma) of that distribution.
      beta_schedule: "linear" or "cosine".
      prediction: "eps" or "v".
      num_steps: T.
      rngs: `nnx.Rngs` with streams `time`, `noise`, `label_dropout` (default: `network.rngs`).
    """

    def __init__(
        self,
        network: nnx.Module,
        train_time_dist_type: str | TrainingTimeDistType = "uniform",
        *,
        t_mu: float = 0.0,
        t_sigma: float = 1.0,
        beta_schedule: str = "linear",
        prediction: str = "eps",
        num_steps: int = 1000,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(network, train_time_dist_type, rngs=rngs)
        if prediction not in PREDICTIONS:
            raise InterfaceConfigError(
                f"Unknown DDPM prediction {prediction!r}; expected one of {PREDICTIONS}."
            )
        if not (isinstance(num_steps, int) and num_steps >= 1):
            raise InterfaceConfigError(f"num_steps must be a positive int; got {num_steps!r}.")
        discrete_betas(beta_schedule, num_steps)  # validates the schedule name
        check_time_dist(self.train_time_dist_type, t_mu, t_sigma, 0.0, 1.0)
        self.t_mu = float(t_mu)
        self.t_sigma = float(t_sigma)
        self.beta_schedule = beta_schedule
        self.prediction = prediction
        self.num_steps = num_steps

    # --- time domain and path ----------------------------------------------------------------
    @property
    def time_domain(self) -> TimeDomain:
        return TimeDomain(noise=1.0, data=0.0, variable="t", eps=1.0 / self.num_steps)

    def log_alpha_bar(self, t: jax.Array) -> jax.Array:
        """log ᾱ(t): piecewise-linear in t through the discrete values at t = i/T."""
        grid = log_alpha_bar_grid(self.beta_schedule, self.num_steps)
        knots = jnp.arange(self.num_steps + 1, dtype=jnp.float32)
        return jnp.interp(t * self.num_steps, knots, jnp.asarray(grid, jnp.float32))

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """α(t) = sqrt(ᾱ(t)), σ(t) = sqrt(1 − ᾱ(t))."""
        log_ab = self.log_alpha_bar(t)
        return jnp.exp(0.5 * log_ab), jnp.sqrt(-jnp.expm1(log_ab))

    # --- preconditioning ---------------------------------------------------------------------
    def c_in(self, t: jax.Array) -> jax.Array:
        return jnp.ones_like(t)

    def c_out(self, t: jax.Array) -> jax.Array:
        alpha, sigma = self.alpha_sigma(t)
        return -sigma / alpha if self.prediction == "eps" else -sigma

    def c_skip(self, t: jax.Array) -> jax.Array:
        alpha, _ = self.alpha_sigma(t)
        return 1.0 / alpha if self.prediction == "eps" else alpha

    def c_noise(self, t: jax.Array) -> jax.Array:
        """t − 1/T: the release's 0-based index n = i − 1 at t = i/T, scaled by 1/T."""
        return t - 1.0 / self.num_steps

    # --- training distribution ---------------------------------------------------------------
    def sample_t(self, shape: tuple[int, ...]) -> jax.Array:
        """t = i/T `[B]` with i = ceil(u·T) ∈ {1..T}, u from the training distribution."""
        u = sample_time(
            self.rngs.time(), shape, self.train_time_dist_type, mu=self.t_mu, sigma=self.t_sigma
        )
        i = jnp.clip(jnp.ceil(u * self.num_steps), 1, self.num_steps)
        return i / self.num_steps

    def sample_n(self, shape: tuple[int, ...]) -> jax.Array:
        return jax.random.normal(self.rngs.noise(), shape)

    def sample_x_t(self, x: jax.Array, n: jax.Array, t: jax.Array) -> jax.Array:
        """x_t = α(t)·x + σ(t)·n."""
        alpha, sigma = self.alpha_sigma(t)
        return self.bcast_right(alpha, x) * x + self.bcast_right(sigma, x) * n

    def target(self, x: jax.Array, n: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """ε-prediction: n; v-prediction: α·n − σ·x."""
        if self.prediction == "eps":
            return n
        alpha, sigma = self.alpha_sigma(t)
        return self.bcast_right(alpha, x) * n - self.bcast_right(sigma, x) * x

    # --- model outputs -----------------------------------------------------------------------
    def _posterior_means(self, x_t, t, *args, **kwargs) -> tuple[jax.Array, jax.Array]:
        """(x̂, n̂) = (E[x | x_t], E[n | x_t]) from one network call."""
        f = self.network_output(x_t, t, *args, **kwargs)[0]
        alpha, sigma = self.alpha_sigma(t)
        a, s = self.bcast_right(alpha, x_t), self.bcast_right(sigma, x_t)
        n_hat = f if self.prediction == "eps" else s * x_t + a * f
        return self.precondition(x_t, t, f), n_hat

    def denoise(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """x̂ = E[x | x_t] (`x_t: [B, ...]`, `t: [B]`)."""
        return self._posterior_means(x_t, t, *args, **kwargs)[0]

    @property
    def learned_variance(self) -> bool:
        """Whether the network also predicts a variance (built with `learn_sigma=True`)."""
        return bool(getattr(self.network, "learn_sigma", False))

    def denoise_and_variance(
        self, x_t: jax.Array, t: jax.Array, *args, **kwargs
    ) -> tuple[jax.Array, jax.Array]:
        """(x̂, v) from one call of a `learn_sigma` network: x̂ from the first C output channels
        (as `denoise`), v = the last C channels (ADM's variance values, ~[−1, 1])."""
        if not self.learned_variance:
            raise InterfaceConfigError(
                f"denoise_and_variance needs a network that predicts a variance (2·C output "
                f"channels); {type(self.network).__name__} was built without learn_sigma=True. "
                f"Build it with learn_sigma=True, or sample with a fixed variance."
            )
        kwargs["full_output"] = True
        out, _ = self.network_output(x_t, t, *args, **kwargs)
        c = x_t.shape[-1]
        f, v = out[..., :c], out[..., c:]
        alpha, sigma = self.alpha_sigma(t)
        a, s = self.bcast_right(alpha, x_t), self.bcast_right(sigma, x_t)
        x_hat = (x_t - s * f) / a if self.prediction == "eps" else a * x_t - s * f
        return x_hat, v

    def pred(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """dx/dt = α'(t)·x̂ + σ'(t)·n̂ (probability-flow ODE of the interpolated schedule)."""
        x_hat, n_hat = self._posterior_means(x_t, t, *args, **kwargs)
        _, _, d_alpha, d_sigma = self.path_derivatives(t)
        return self.bcast_right(d_alpha, x_t) * x_hat + self.bcast_right(d_sigma, x_t) * n_hat

    def score(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """∇ log p_t = −n̂ / σ(t)."""
        _, n_hat = self._posterior_means(x_t, t, *args, **kwargs)
        return -n_hat / self.bcast_right(self.alpha_sigma(t)[1], x_t)

    def loss(self, x: jax.Array, *args, return_aux: bool = False, **kwargs) -> Any:
        """DDPM simple loss mean_B mean‖F(x_t, t) − target‖².

        Returns:
          the scalar loss, or `(loss, aux)` with aux keys `loss`, `mse`, `per_example` `[B]`,
          `t` `[B]` (= i/T) and `index` `[B]` (i, int32) (and `hidden` when requested).
        """
        kwargs.setdefault("train", True)
        t = self.sample_t((x.shape[0],))
        n = self.sample_n(x.shape)
        x_t = self.sample_x_t(x, n, t)
        f, hidden = self.network_output(x_t, t, *args, **kwargs)
        per_example = self.mean_flat((f - self.target(x, n, t)) ** 2)
        loss = jnp.mean(per_example)
        if not return_aux:
            return loss
        index = jnp.round(t * self.num_steps).astype(jnp.int32)
        aux = {"loss": loss, "mse": loss, "per_example": per_example, "t": t, "index": index}
        if hidden is not None:
            aux["hidden"] = hidden
        return loss, aux
