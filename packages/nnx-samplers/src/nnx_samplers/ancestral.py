"""Ancestral DDPM sampling (Ho et al. 2020) with ADM's variances (Nichol & Dhariwal 2021).

This is the sampler of ADM and DiT (`p_sample_loop`), written on any affine path
x_t = α_t·x + σ_t·n. One step from t to the next grid time s (closer to the data) draws from
the Gaussian posterior q(x_s | x_t, x = x̂) with x̂ = E[x | x_t] from the model:

    α_{t|s} = α_t / α_s,   σ²_{t|s} = σ_t² − α_{t|s}²·σ_s²          (VP: β'_k = 1 − ᾱ_t/ᾱ_s)
    μ       = (α_s·σ²_{t|s} / σ_t²)·x̂ + (α_{t|s}·σ_s² / σ_t²)·x_t    (Ho et al. Eq. 7)
    β̃       = σ²_{t|s}·σ_s² / σ_t²                                  (posterior variance)
    x_s     = μ + exp(½·log Σ)·z,   z ~ N(0, I), no noise on the last step

with log Σ by `variance` (ADM's `ModelVarType`):
    "fixed_small"    log β̃            (β̃ at the last step, log 0, replaced by the previous step's,
                                        as ADM's `posterior_log_variance_clipped`)
    "fixed_large"    log σ²_{t|s}      (ADM: log β'_k)
    "learned_range"  frac·log σ²_{t|s} + (1 − frac)·log β̃,  frac = (v + 1)/2   (Eq. 15)
    "learned"        v
where v is the model's variance output (`denoise_and_variance`: DiT's extra channels).
`clip_denoised` clamps x̂ to [−1, 1] before μ (ADM's default; DiT samples latents without it).

On the respaced grid (`SpacedTimesteps("250")`: t = (n_k + 1)/T for ADM's kept indices n_k)
α, σ are the discrete schedule's values, so σ²_{t|s} is ADM's respaced β'_k and every
coefficient is the respaced `GaussianDiffusion`'s: this is DiT's paper sampler (250 steps,
learned range, no clipping; with `ClassifierFreeGuidance(1.5, channels=3)` its
`forward_with_cfg`). One model call per step: NFE = N.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nnx_samplers.base import Sampler, time_array, with_initial
from nnx_samplers.errors import SamplerConfigError

VARIANCES = ("fixed_small", "fixed_large", "learned_range", "learned")


@dataclasses.dataclass(frozen=True)
class DDPMAncestral(Sampler):
    """ADM/DiT ancestral sampling with a fixed or learned variance (see the module docstring).

    Attributes:
      num_steps, schedule: the grid (e.g. `DDPMAncestral(250, schedule="250")` is ADM's
        respacing 1000 → 250; "ddim25" and "10,15,20" forms too).
      variance: "fixed_small", "fixed_large", "learned_range" or "learned".
      clip_denoised: clamp x̂ to [−1, 1] before the posterior mean.
      noise_sampler: optional `(key, step, x) -> z` shaped like x (default
        `jax.random.normal(key, x.shape)`), e.g. to feed the fixed per-step noise of a reference
        run (as `EDMSampler.noise_sampler`); `step` is the traced step index.
    """

    variance: str = "learned_range"
    clip_denoised: bool = False
    noise_sampler: Callable | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.variance not in VARIANCES:
            raise SamplerConfigError(
                f"Unknown DDPM variance {self.variance!r}; expected one of {VARIANCES}."
            )

    @property
    def learned(self) -> bool:
        return self.variance in ("learned_range", "learned")

    def check(self, info):
        if not info.has_alpha_sigma:
            raise SamplerConfigError(
                "DDPMAncestral needs the path coefficients α(t), σ(t): use an interface with an "
                "affine path or pass alpha_sigma= to FunctionModel."
            )
        if self.learned and not info.learned_variance:
            raise SamplerConfigError(
                f"variance={self.variance!r} needs a model that predicts its variance (e.g. "
                f"DDPMInterface on a network built with learn_sigma=True); this one does not. "
                f"Use variance='fixed_small' or 'fixed_large'."
            )

    def coefficients(self, f, grid: np.ndarray) -> dict[str, jax.Array]:
        """Per-step `[N]` posterior coefficients on the grid (see the module docstring)."""
        a, s = f.alpha_sigma(jnp.asarray(grid, jnp.float32))
        a, s = jnp.asarray(a, jnp.float32), jnp.asarray(s, jnp.float32)
        a_t, s_t, a_s, s_s = a[:-1], s[:-1], a[1:], s[1:]
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2  # σ²_{t|s}
        post = var_ts * s_s**2 / s_t**2  # β̃
        if post.shape[0] > 1:  # log 0 on the final step → the previous step's (ADM)
            post = post.at[-1].set(post[-2])
        else:
            post = var_ts
        return {
            "t": jnp.asarray(grid[:-1], jnp.float32),
            "c_x0": a_s * var_ts / s_t**2,
            "c_xt": a_ts * s_s**2 / s_t**2,
            "log_small": jnp.log(post),
            "log_large": jnp.log(var_ts),
            "on": jnp.asarray(np.arange(grid.size - 1) < grid.size - 2, jnp.float32),
        }

    def integrate(self, f, key, x_init, grid, info, trajectory):
        n = grid.size - 1
        coef = self.coefficients(f, grid)
        keys = jax.random.split(key, n)

        def step(x, inp):
            c, i, k = inp
            t = time_array(c["t"], x)
            if self.learned:
                x_hat, v = f.denoise_and_variance(x, t)
            else:
                x_hat = f.denoise(x, t)
            if self.clip_denoised:
                x_hat = jnp.clip(x_hat, -1.0, 1.0)
            mean = c["c_x0"] * x_hat + c["c_xt"] * x
            if self.variance == "fixed_small":
                log_var = c["log_small"]
            elif self.variance == "fixed_large":
                log_var = c["log_large"]
            elif self.variance == "learned_range":
                frac = (v + 1.0) / 2.0
                log_var = frac * c["log_large"] + (1.0 - frac) * c["log_small"]
            else:
                log_var = v
            if self.noise_sampler is None:
                z = jax.random.normal(k, x.shape, x.dtype)
            else:
                z = jnp.asarray(self.noise_sampler(k, i, x), x.dtype)
            x = mean + c["on"] * jnp.exp(0.5 * log_var) * z
            return x, (x if trajectory else None)

        x, states = jax.lax.scan(step, x_init, (coef, jnp.arange(n), keys))
        return x, with_initial(x_init, states)

    def count_nfe(self, grid, info):
        return grid.size - 1
