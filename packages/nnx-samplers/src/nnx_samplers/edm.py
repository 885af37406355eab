"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), for any affine path.

On the ρ-grid t_0 = σ_max … t_{N−1} = σ_min, t_N = 0, every step first raises the noise level
("churn"), then takes a Heun step (Euler on a final step to the data end when eps > 0):

    γ_i = min(S_churn / N, √2 − 1) if S_churn > 0 and S_min ≤ σ_i ≤ S_max else 0
    σ̂_i = σ_i + γ_i·σ_i                                 (not clipped: σ̂_0 > σ_max is allowed)
    x̂_i = x_i + sqrt(σ̂_i² − σ_i²)·ε,   ε ~ N(0, S_noise²·I)   (only where γ_i > 0; x̂_i = x_i else)
    x_{i+1} = Heun step of dx/dt = pred from (x̂_i, σ̂_i) to t_{i+1}

exactly as k-diffusion's `sample_heun` and NVlabs/edm2's `edm_sampler`: the last step churns
too when S_min ≤ σ_min, and a step with γ_i = 0 adds no noise at all (a select, not a zero-sized
square root).

General affine path x_t = α(t)·x + σ(t)·n (EDM's `ablation_sampler`, with s(t) = α and
σ_EDM(t) = σ/α): γ, S_min and S_max act on the VE-equivalent noise level ς(t) = σ(t)/α(t)
(ς = t for EDM itself), and t̂ solves ς(t̂) = (1 + γ)·ς(t). x_t given x_s (s less noisy) is
x_t = (α_t/α_s)·x_s + sqrt(σ_t² − (α_t/α_s)²σ_s²)·ε; with the SNR ratio ρ = ς(t)/ς(t̂) =
α̂σ/(ασ̂) ∈ (0, 1] this is, free of any division by α,

    x̂ = ρ·(σ̂/σ)·x + σ̂·sqrt(1 − ρ²)·ε                    (VE: ρ = 1/(1 + γ), σ̂/σ = 1 + γ)

t̂ is found by bisection on log ς along the path, beyond the noise end only while the path keeps
getting noisier there (VE); where ς cannot grow any more (α = 0 at the noise end: SiT, MeanFlow,
linear and trigonometric flows) t̂ stops at the noise end and the churn is the one that point
gives — none at all when t is the noise end itself (already pure noise). All of this is NumPy at
bind time; the jitted loop sees per-step constants.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nnx_samplers.base import Sampler, _alpha_sigma_of, check_velocity, time_array, with_initial
from nnx_samplers.errors import SamplerConfigError
from nnx_samplers.model import model_info
from nnx_samplers.ode import heun_steps


@dataclasses.dataclass(frozen=True)
class ChurnPlan:
    """Per-step churn constants (NumPy float64, `[N]` each) of `EDMSampler.churn_plan`.

    Attributes:
      gamma: γ_i.
      t_hat: the raised time t̂_i where the network is evaluated.
      scale: coefficient of x_i in x̂_i (ρ·σ̂/σ; 1 where γ_i = 0).
      noise_std: coefficient of ε in x̂_i (σ̂·sqrt(1 − ρ²)·S_noise; 0 where γ_i = 0).
      churn: whether step i adds noise (γ_i > 0 and t̂_i ≠ t_i).
    """

    gamma: np.ndarray
    t_hat: np.ndarray
    scale: np.ndarray
    noise_std: np.ndarray
    churn: np.ndarray

    def as_static(self) -> tuple:
        return tuple(tuple(float(v) for v in a) for a in dataclasses.astuple(self))

    @classmethod
    def from_static(cls, static: tuple) -> "ChurnPlan":
        g, th, sc, ns, ch = (np.asarray(a, np.float64) for a in static)
        return cls(g, th, sc, ns, ch.astype(bool))


def _log_snr(alpha_sigma, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log(|α|/σ), σ) at `t` in float64 (−inf where α = 0)."""
    a, s = alpha_sigma(np.asarray(t, np.float64))
    a, s = np.asarray(a, np.float64), np.asarray(s, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.abs(a)) - np.log(s), s


def _raise_times(alpha_sigma, td, t: np.ndarray, log_factor: np.ndarray) -> np.ndarray:
    """t̂ `[M]` with log ς(t̂) = log ς(t) + log_factor (towards the noise end), by bisection on
    the distance τ = (t − data)/(noise − data); past τ = 1 only while ς keeps growing there."""
    to_t = lambda tau: td.data + (td.noise - td.data) * tau  # noqa: E731
    lam = lambda tau: _log_snr(alpha_sigma, to_t(tau))[0]  # noqa: E731
    lo = (t - td.data) / (td.noise - td.data)
    lam_t = lam(lo)
    target = lam_t - log_factor
    hi = np.ones_like(lo)
    lam_hi = lam(hi)
    grow = np.isfinite(lam_t) & (lam_hi > target)
    for _ in range(64):  # extend past the noise end while the path gets noisier (VE)
        if not grow.any():
            break
        lam_next = lam(2.0 * hi)
        ok = grow & np.isfinite(lam_next) & (lam_next < lam_hi)
        hi, lam_hi = np.where(ok, 2.0 * hi, hi), np.where(ok, lam_next, lam_hi)
        grow = ok & (lam_hi > target)
    for _ in range(200):  # unreachable targets leave hi where the path stops getting noisier
        mid = 0.5 * (lo + hi)
        above = lam(mid) > target
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return np.where(np.isfinite(lam_t), to_t(hi), t)


@dataclasses.dataclass(frozen=True)
class EDMSampler(Sampler):
    """EDM stochastic sampler; default grid: the ρ = 7 schedule.

    Attributes:
      s_churn, s_min, s_max, s_noise: Algorithm 2's S_churn, S_tmin, S_tmax, S_noise (S_min and
        S_max compare with the VE-equivalent noise level σ/α, which is σ for EDM).
      noise_sampler: optional `(key, step, x) -> ε` shaped like x (default
        `jax.random.normal(key, x.shape)`), e.g. to feed fixed noise as k-diffusion's
        `noise_sampler` does; `step` is the traced step index.
    """

    schedule: object = "edm"
    s_churn: float = 0.0
    s_min: float = 0.0
    s_max: float = float("inf")
    s_noise: float = 1.0
    noise_sampler: Callable | None = None
    _plan: tuple | None = dataclasses.field(default=None, repr=False, compare=True)

    def __post_init__(self):
        super().__post_init__()
        if self.s_churn < 0 or self.s_noise < 0 or self.s_min > self.s_max:
            raise SamplerConfigError(
                f"EDMSampler needs s_churn >= 0, s_noise >= 0, s_min <= s_max; got "
                f"s_churn={self.s_churn}, s_noise={self.s_noise}, s_min={self.s_min}, "
                f"s_max={self.s_max}."
            )

    def check(self, info):
        if self.s_churn > 0 and not info.has_alpha_sigma:
            raise SamplerConfigError(
                "EDMSampler with s_churn > 0 needs the path (alpha_sigma) to add noise."
            )

    def churn_plan(self, model) -> ChurnPlan:
        """γ_i, t̂_i and the noise-raise coefficients for `model` on this sampler's grid."""
        info = model_info(model)
        check_velocity(self, info)
        self.check(info)
        grid = self.grid(model)
        n = grid.size - 1
        ones, zeros = np.ones(n), np.zeros(n)
        if self.s_churn == 0:
            return ChurnPlan(zeros, grid[:-1].copy(), ones, zeros, zeros.astype(bool))
        alpha_sigma = _alpha_sigma_of(model)
        lam, sig = _log_snr(alpha_sigma, grid[:-1])
        a = np.abs(np.asarray(alpha_sigma(grid[:-1])[0], np.float64))
        with np.errstate(divide="ignore"):
            level = sig / a  # ς = σ/α (inf where α = 0); σ itself for EDM
        g = min(self.s_churn / n, np.sqrt(2.0) - 1.0)
        gamma = np.where((self.s_min <= level) & (level <= self.s_max), g, 0.0)
        t_hat = np.where(
            gamma > 0,
            _raise_times(alpha_sigma, info.time_domain, grid[:-1], np.log1p(gamma)),
            grid[:-1],
        )
        lam_hat, sig_hat = _log_snr(alpha_sigma, t_hat)
        churn = (gamma > 0) & (t_hat != grid[:-1])
        with np.errstate(invalid="ignore"):
            rho = np.where(churn, np.exp(np.minimum(lam_hat - lam, 0.0)), 1.0)
            scale = np.where(churn, rho * sig_hat / sig, 1.0)
        noise_std = np.where(churn, sig_hat * np.sqrt(1.0 - rho**2) * self.s_noise, 0.0)
        return ChurnPlan(gamma, t_hat, scale, noise_std, churn)

    def prepare(self, model) -> "EDMSampler":
        """This sampler with its churn plan for `model` (what `integrate` needs)."""
        return dataclasses.replace(self, _plan=self.churn_plan(model).as_static())

    def bind(self, model, **kwargs):
        return Sampler.bind(self.prepare(model), model, **kwargs)

    def integrate(self, f, key, x_init, grid, info, trajectory):
        if self._plan is None:
            raise SamplerConfigError("EDMSampler.integrate runs through sample() / bind().")
        plan = ChurnPlan.from_static(self._plan)
        n = grid.size - 1
        k = heun_steps(grid, info)
        keys = jax.random.split(key, n)
        any_churn = bool(plan.churn.any())

        def raise_noise(x, i, kk, churn, scale, std):
            """x̂ = scale·x + std·ε on churn steps; x itself (a select) elsewhere."""
            if not any_churn:
                return x
            if self.noise_sampler is None:
                eps = jax.random.normal(kk, x.shape, x.dtype)
            else:
                eps = jnp.asarray(self.noise_sampler(kk, i, x), x.dtype)
            return jnp.where(churn, scale.astype(x.dtype) * x + std.astype(x.dtype) * eps, x)

        def step(x, inp):
            i, th, t_next, kk, churn, scale, std = inp
            x_hat = raise_noise(x, i, kk, churn, scale, std)
            h = (t_next - th).astype(x.dtype)
            d = f.pred(x_hat, time_array(th, x))
            x_new = x_hat + h * d
            d_new = f.pred(x_new, time_array(t_next, x))  # Heun corrector
            x = x_hat + h * 0.5 * (d + d_new)
            return x, (x if trajectory else None)

        f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        per_step = (
            jnp.arange(n),
            f32(plan.t_hat),
            f32(grid[1:]),
            keys,
            jnp.asarray(plan.churn),
            f32(plan.scale),
            f32(plan.noise_std),
        )
        x, states = jax.lax.scan(step, x_init, tuple(a[:k] for a in per_step))
        if k < n:  # last step to the data end: churn, then Euler
            i, th, t_next, kk, churn, scale, std = (a[k] for a in per_step)
            x_hat = raise_noise(x, i, kk, churn, scale, std)
            x = x_hat + (t_next - th).astype(x.dtype) * f.pred(x_hat, time_array(th, x))
            if trajectory:
                states = jnp.concatenate([states, x[None]], axis=0)
        return x, with_initial(x_init, states) if trajectory else None

    def count_nfe(self, grid, info):
        k = heun_steps(grid, info)
        return 2 * k + (grid.size - 1 - k)
