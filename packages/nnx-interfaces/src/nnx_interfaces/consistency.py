"""Continuous-time consistency models in TrigFlow: sCT and sCD (Lu & Song 2024, arXiv:2410.11081).

TrigFlow path: x_t = cos(t)·x + sin(t)·z, z = σ_d·n, angle t ∈ [0, π/2]; data at t = 0, noise at
t = π/2 (`time_domain`: noise π/2, data 0, variable "angle"; `alpha_sigma` = (cos t, σ_d sin t)).

Consistency function (EDM-style preconditioning, c_in = 1/σ_d, c_noise(t) = time_scale·t — by
default the raw angle, of order one as the embeddings expect):

    f_θ(x_t, t) = cos(t)·x_t − sin(t)·σ_d·F_θ(x_t/σ_d, t)                        (sCM Eq. 5)

Training (sCM Algorithm 1), with dx_t/dt = cos(t)·z − sin(t)·x (sCT) or the teacher's PF-ODE
velocity (sCD), the tangent of F along the trajectory from one `jax.jvp` with tangents
(cos t·sin t·dx_t/dt/σ_d, cos t·sin t), and the warm-up factor r ∈ [0, 1]:

    g = −cos²t·(σ_d F⁻ − dx_t/dt) − r·(cos t sin t·x_t + σ_d·cos t sin t·dF⁻/dt)   (= cos t·df/dt)
    g ← g / (‖g‖ + c)                                                    (tangent normalisation)
    L = e^{w(t)}/D·‖F_θ − F⁻ − g‖² − w(t)                                (adaptive weighting)

where F⁻ = sg(F_θ) and w is a small learned log-weight of t. τ = log(σ_d tan t) ~ N(P_mean, P_std²)
(the lognormal time distribution of the sCM paper).

Sampling: `denoise(x_t, t)` = f_θ(x_t, t), the end point of the PF-ODE through x_t, is the
model's only output; sample with the multistep consistency sampler (denoise, then re-noise with
fresh noise at the next angle: `nnx_samplers.DenoiseRenoise`, 1–2 steps in the paper). A
consistency model has no cheap PF-ODE velocity: σ_d·F_θ is the velocity only as t → 0, and the
exact one, v = −(∂f/∂x_t)⁻¹·∂f/∂t (from df/dt = 0 along the ODE), needs the inverse Jacobian.
So `has_velocity = False`, `pred` and `score` raise, and ODE/SDE samplers (Euler, Heun, EDM,
Euler–Maruyama, DPM-Solver++, DDIM) refuse the model instead of integrating a wrong field.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.embeddings import sinusoidal_embedding
from nnx_interfaces.base import Interfaces, TimeDomain
from nnx_interfaces.errors import InterfaceConfigError, InterfaceError
from nnx_interfaces.flowmaps.parameterisation import module_jvp

_NO_VELOCITY = (
    "{name} is a consistency model: its only output is denoise(x_t, t) = f_θ, the end point of "
    "the probability-flow ODE; it has no {what}. Sample it with nnx_samplers.DenoiseRenoise"
    "(num_steps) (multistep consistency sampling), not with an ODE/SDE sampler."
)


class AdaptiveWeight(nnx.Module):
    """w(t): sinusoidal features of the angle → Linear → scalar (the learned log-weight)."""

    def __init__(self, dim: int = 64, *, rngs: nnx.Rngs):
        self.dim = dim
        self.linear = nnx.Linear(dim, 1, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, t: jax.Array) -> jax.Array:
        """`t: [B]` → `[B]`."""
        return self.linear(sinusoidal_embedding(t, self.dim))[:, 0]


class TrigFlowConsistency(Interfaces):
    """Shared base of sCT and sCD (a consistency model: `has_velocity = False`).

    Args:
      network: contract backbone F_θ(x_t/σ_d, t) (no second time).
      sigma_d: data standard deviation σ_d (scale the data so its std is about σ_d).
      p_mean, p_std: log(σ_d tan t) ~ N(p_mean, p_std²).
      tangent_warmup_steps: r goes linearly from 0 to 1 over this many steps (0: r = 1).
      tangent_norm_c: c of the tangent normalisation; None disables it.
      adaptive_weight: learn w(t) (else w = 0).
      time_scale: the network receives c_noise(t) = time_scale·t (1: the raw angle). A small
        value (e.g. 0.05 with the ×1000 sinusoidal embedding) keeps dF/dt, hence g, tame.
      rngs: streams `time`, `noise` (default `network.rngs`); also initialises w.
    """

    has_velocity = False

    def __init__(
        self,
        network: nnx.Module,
        *,
        sigma_d: float = 0.5,
        p_mean: float = -1.0,
        p_std: float = 1.4,
        tangent_warmup_steps: int = 10_000,
        tangent_norm_c: float | None = 0.1,
        adaptive_weight: bool = True,
        time_scale: float = 1.0,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(network, "lognormal", rngs=rngs)
        if not (sigma_d > 0 and p_std > 0 and tangent_warmup_steps >= 0):
            raise InterfaceConfigError(
                f"TrigFlow needs sigma_d > 0, p_std > 0, tangent_warmup_steps ≥ 0; got "
                f"sigma_d={sigma_d}, p_std={p_std}, tangent_warmup_steps={tangent_warmup_steps}."
            )
        if not time_scale > 0:
            raise InterfaceConfigError(f"time_scale must be > 0; got {time_scale}.")
        self.time_scale = float(time_scale)
        if tangent_norm_c is not None and not tangent_norm_c > 0:
            raise InterfaceConfigError(f"tangent_norm_c must be > 0 or None; got {tangent_norm_c}.")
        self.sigma_d = float(sigma_d)
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        self.tangent_warmup_steps = int(tangent_warmup_steps)
        self.tangent_norm_c = tangent_norm_c
        self.weight = AdaptiveWeight(rngs=self.rngs) if adaptive_weight else None

    # --- time domain, path, preconditioning -------------------------------------------------
    @property
    def time_domain(self) -> TimeDomain:
        return TimeDomain(noise=0.5 * math.pi, data=0.0, variable="angle", eps=0.0)

    def alpha_sigma(self, t):
        return jnp.cos(t), self.sigma_d * jnp.sin(t)

    def c_in(self, t):
        return jnp.full_like(t, 1.0 / self.sigma_d)

    def c_out(self, t):
        return -self.sigma_d * jnp.sin(t)

    def c_skip(self, t):
        return jnp.cos(t)

    def c_noise(self, t):
        return self.time_scale * t

    # --- training distribution ----------------------------------------------------------------
    def sample_t(self, shape):
        """t = arctan(e^τ / σ_d), τ ~ N(p_mean, p_std²), from the `time` stream."""
        tau = self.p_mean + self.p_std * jax.random.normal(self.rngs.time(), shape)
        return jnp.arctan(jnp.exp(tau) / self.sigma_d)

    def sample_n(self, shape):
        """Unit normal n (z = σ_d·n) from the `noise` stream."""
        return jax.random.normal(self.rngs.noise(), shape)

    def sample_x_t(self, x, n, t):
        """x_t = cos t·x + sin t·σ_d·n."""
        b = self.bcast_right
        return b(jnp.cos(t), x) * x + b(self.sigma_d * jnp.sin(t), x) * n

    def target(self, x, n, t, *args, **kwargs):
        """dx_t/dt = cos t·σ_d·n − sin t·x (the sCT tangent)."""
        b = self.bcast_right
        return b(self.sigma_d * jnp.cos(t), x) * n - b(jnp.sin(t), x) * x

    # --- model outputs ------------------------------------------------------------------------
    def F(self, x_t, t, *, y=None, train=False) -> jax.Array:
        """F_θ(c_in·x_t, c_noise(t)): `x_t: [B, ...]`, `t: [B]` angles → like x_t."""
        return self.network(x_t / self.sigma_d, self.c_noise(t), y=y, train=train)

    def denoise(self, x_t, t, *args, y=None, train=False) -> jax.Array:
        """f_θ(x_t, t) = cos t·x_t − sin t·σ_d·F_θ, the clean-data prediction."""
        b = self.bcast_right
        return b(self.c_skip(t), x_t) * x_t + b(self.c_out(t), x_t) * self.F(
            x_t, t, y=y, train=train
        )

    def pred(self, x_t, t, *args, **kwargs) -> jax.Array:
        """Not defined: a consistency model has no PF-ODE velocity (module docstring)."""
        raise InterfaceError(_NO_VELOCITY.format(name=type(self).__name__, what="pred (dx/dt)"))

    def score(self, x_t, t, *args, **kwargs) -> jax.Array:
        """Not defined: f_θ is the ODE's end point, not E[x | x_t], so it gives no score."""
        raise InterfaceError(_NO_VELOCITY.format(name=type(self).__name__, what="score"))

    # --- loss ---------------------------------------------------------------------------------
    def tangent_velocity(self, x, n, x_t, t, *, y=None) -> jax.Array:
        """dx_t/dt used by the loss (sCT: conditional; sCD: the teacher's)."""
        raise NotImplementedError

    def warmup(self, step) -> jax.Array:
        """Tangent warm-up factor r(step) ∈ [0, 1]."""
        if self.tangent_warmup_steps == 0:
            return jnp.float32(1.0)
        return jnp.clip(jnp.asarray(step, jnp.float32) / self.tangent_warmup_steps, 0.0, 1.0)

    def tangent(self, x_t, t, dxdt, *, y=None, step=0) -> tuple[jax.Array, jax.Array]:
        """(F_θ(x_t/σ_d, t) with gradients, normalised tangent g under stop-gradient)."""
        b = self.bcast_right
        cos, sin = jnp.cos(t), jnp.sin(t)
        cs = cos * sin
        F, dF = module_jvp(
            self.network,
            lambda net, xx, tt: net(xx, self.c_noise(tt), y=y, train=True),
            (x_t / self.sigma_d, t),
            (b(cs, x_t) * dxdt / self.sigma_d, cs),
        )
        F_minus, dF = jax.lax.stop_gradient(F), jax.lax.stop_gradient(dF)
        g = -b(cos**2, x_t) * (self.sigma_d * F_minus - dxdt) - self.warmup(step) * (
            b(cs, x_t) * x_t + self.sigma_d * dF
        )
        if self.tangent_norm_c is not None:
            norm = jnp.sqrt(jnp.sum(g**2, axis=tuple(range(1, g.ndim)), keepdims=True))
            g = g / (norm + self.tangent_norm_c)
        return F, jax.lax.stop_gradient(g)

    def loss(self, x: jax.Array, y: Any = None, *, step: Any = 0, return_aux: bool = False):
        """sCM loss (module docstring); `x: [B, ...]` data with std ≈ σ_d, `step` for warm-up."""
        n = self.sample_n(x.shape)
        t = self.sample_t((x.shape[0],))
        x_t = self.sample_x_t(x, n, t)
        dxdt = jax.lax.stop_gradient(self.tangent_velocity(x, n, x_t, t, y=y))
        F, g = self.tangent(x_t, t, dxdt, y=y, step=step)
        sq = self.mean_flat((F - jax.lax.stop_gradient(F) - g) ** 2)
        w = self.weight(t) if self.weight is not None else jnp.zeros_like(t)
        per = jnp.exp(w) * sq - w
        loss = jnp.mean(per)
        if return_aux:
            aux = {"consistency": jnp.mean(sq), "weight": jnp.mean(w), "t": t}
            return loss, {"loss": loss, "per_example": per, **aux}
        return loss


class SCT(TrigFlowConsistency):
    """sCT: continuous-time consistency training with dx_t/dt = cos t·z − sin t·x."""

    def tangent_velocity(self, x, n, x_t, t, *, y=None):
        return self.target(x, n, t)


class SCD(TrigFlowConsistency):
    """sCD: continuous-time consistency distillation from a teacher diffusion/flow interface.

    The teacher is any `Interfaces` with an affine path (`alpha_sigma`) and `denoise` (every
    velocity/denoiser interface: SiT, EDM, `FlowMatching`, ...), in its own time convention. At
    angle t the teacher is evaluated at the time τ with the same noise-to-signal ratio,
    σ_T(τ)/α_T(τ) = σ_d·tan t (bisection inside its time domain; clamped at its ends), on the
    rescaled state (α_T(τ)/cos t)·x_t, and its data prediction x̂ gives the TrigFlow velocity

        dx_t/dt = (cos t·x_t − x̂) / sin t.

    Args:
      network: the student backbone.
      teacher: the teacher `Interfaces` (a submodule: train only `network` and `weight`).

    Other arguments as `TrigFlowConsistency`.
    """

    def __init__(self, network: nnx.Module, teacher: Interfaces, **kw):
        super().__init__(network, **kw)
        if not isinstance(teacher, Interfaces):
            raise InterfaceConfigError(
                f"sCD needs a teacher Interfaces with pred/denoise; got {type(teacher).__name__}."
            )
        self.teacher = teacher

    def frozen_trees(self) -> tuple[str, ...]:
        """The teacher is never trained (the trainer keeps it without optimizer state)."""
        return ("teacher",)

    def teacher_time(self, t: jax.Array) -> jax.Array:
        """τ `[B]` in the teacher's domain with σ_T(τ)/α_T(τ) = σ_d tan t."""
        dom = self.teacher.time_domain
        start, end = dom.last_eval, dom.noise
        log_target = jnp.log(self.sigma_d * jnp.tan(t))

        def excess(u):
            a, s = self.teacher.alpha_sigma(start + u * (end - start))
            return jnp.log(s) - jnp.log(a) - log_target

        def body(_, lo_hi):
            lo, hi = lo_hi
            mid = 0.5 * (lo + hi)
            below = excess(mid) < 0
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 40, body, (jnp.zeros_like(t), jnp.ones_like(t)))
        return start + 0.5 * (lo + hi) * (end - start)

    def tangent_velocity(self, x, n, x_t, t, *, y=None):
        tau = self.teacher_time(t)
        a_T, _ = self.teacher.alpha_sigma(tau)
        b = self.bcast_right
        x_hat = self.teacher.denoise(b(a_T / jnp.cos(t), x_t) * x_t, tau, y=y)
        return (b(jnp.cos(t), x_t) * x_t - x_hat) / b(jnp.sin(t), x_t)
