"""Data-prediction solvers on an affine path x_t = α(t)·x + σ(t)·n: DPM-Solver++ and DDIM.

With λ = log(α/σ) (half the log-SNR), step h = λ_{i+1} − λ_i and denoiser outputs
m_j = x̂(x_j, t_j), DPM-Solver++ (Lu et al. 2022, multistep form) is

    1st order:  x_{i+1} = (σ_{i+1}/σ_i)·x_i − α_{i+1}·(e^{−h} − 1)·D,   D = m_i
    2M:         D = m_i + (m_i − m_{i−1}) / (2·r0),        r0 = h_{i−1} / h
    3M:         D1_0 = (m_i − m_{i−1})/r0, D1_1 = (m_{i−1} − m_{i−2})/r1, r1 = h_{i−2} / h
                D1 = D1_0 + r0/(r0 + r1)·(D1_0 − D1_1) ≈ h·x̂'
                D2 = 2·(D1_0 − D1_1)/(r0 + r1) ≈ h²·x̂''
                x_{i+1} = (σ_{i+1}/σ_i)·x_i − α_{i+1}(e^{−h} − 1)·m_i
                          + α_{i+1}((e^{−h} − 1)/h + 1)·D1 − α_{i+1}((e^{−h} − 1 + h)/h² − ½)·D2

(the exact integral σ_{i+1}∫e^λ·x̂ dλ of the Taylor expansion x̂ ≈ m_i + (λ − λ_i)x̂' + (λ − λ_i)²x̂''/2
gives these φ-coefficients; the often-copied D2 without the factor 2 leaves an O(h³) local error
and only second-order convergence, which the convergence test of this package detects.)

The order is min(order, steps taken so far + 1), and 1 on a step that lands on σ = 0 (the data
end, where h = ∞: that step is x = α·m_i). Infinite λ at a noise end with α = 0 is harmless
(e^{−h} = 0 there). DDIM (Song et al. 2021) with η:

    ε̂ = (x_i − α_i·x̂)/σ_i,  c = η·σ_{i+1}·sqrt(1 − SNR_i/SNR_{i+1}),
    x_{i+1} = α_{i+1}·x̂ + sqrt(σ_{i+1}² − c²)·ε̂ + c·z,

and with η = 0 it is algebraically the first-order DPM-Solver++ step. Both use one denoiser call
per step: NFE = N.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from nnx_samplers.base import Sampler, time_array, with_initial
from nnx_samplers.errors import SamplerConfigError


def _need_path(info, name):
    if not info.has_alpha_sigma:
        raise SamplerConfigError(
            f"{name} needs the path coefficients α(t), σ(t): use an interface with an affine "
            "path or pass alpha_sigma= to FunctionModel."
        )


def _path_on_grid(f, grid):
    a, s = f.alpha_sigma(jnp.asarray(grid, jnp.float32))
    a = jnp.asarray(a, jnp.float32)
    s = jnp.asarray(s, jnp.float32)
    lam = jnp.log(a) - jnp.log(s)  # −inf where α = 0, +inf where σ = 0
    return a, s, lam


@dataclasses.dataclass(frozen=True)
class DPMSolverPP(Sampler):
    """DPM-Solver++ multistep (data prediction), `order` 1, 2 (2M) or 3 (3M)."""

    order: int = 2

    def __post_init__(self):
        super().__post_init__()
        if self.order not in (1, 2, 3):
            raise SamplerConfigError(f"DPMSolverPP order must be 1, 2 or 3; got {self.order}.")

    def check(self, info):
        _need_path(info, "DPMSolverPP")

    def integrate(self, f, key, x_init, grid, info, trajectory):
        n = grid.size - 1
        a, s, lam = _path_on_grid(f, grid)
        i = np.arange(n)
        order = jnp.asarray(np.minimum(self.order, i + 1), jnp.int32)
        order = order.at[-1].set(jnp.where(s[-1] == 0, 1, order[-1]))  # landing on σ = 0
        lam_m1 = jnp.concatenate([lam[:1] - 1.0, lam[:-2]])  # λ_{i−1} (unused at i = 0)
        lam_m2 = jnp.concatenate([lam[:2] - 2.0, lam[:-3]])[:n]  # λ_{i−2}

        def step(carry, inp):
            x, m1, m2 = carry
            t, _, s0, a1, s1, l0, l1, lm1, lm2, o = inp
            m0 = f.denoise(x, time_array(t, x))
            h = l1 - l0
            e = jnp.expm1(-h)  # e^{−h} − 1
            base = (s1 / s0) * x

            def first(_):
                return base - a1 * e * m0

            def second(_):
                r0 = (l0 - lm1) / h
                return base - a1 * e * (m0 + (m0 - m1) / (2.0 * r0))

            def third(_):
                r0, r1 = (l0 - lm1) / h, (lm1 - lm2) / h
                d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
                d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                d2 = 2.0 * (d1_0 - d1_1) / (r0 + r1)  # ≈ h²·x̂''
                return (
                    base - a1 * e * m0 + a1 * (e / h + 1.0) * d1 - a1 * ((e + h) / h**2 - 0.5) * d2
                )

            x = jax.lax.switch(o - 1, (first, second, third), None)
            return (x, m0, m1), (x if trajectory else None)

        xs = (
            jnp.asarray(grid[:-1], jnp.float32),
            a[:-1],
            s[:-1],
            a[1:],
            s[1:],
            lam[:-1],
            lam[1:],
            lam_m1,
            lam_m2,
            order,
        )
        (x, _, _), states = jax.lax.scan(step, (x_init, x_init, x_init), xs)
        return x, with_initial(x_init, states)

    def count_nfe(self, grid, info):
        return grid.size - 1


@dataclasses.dataclass(frozen=True)
class DDIM(Sampler):
    """DDIM with stochasticity η ≥ 0 (η = 0: deterministic; η = 1: DDPM-like ancestral)."""

    eta: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if not self.eta >= 0:
            raise SamplerConfigError(f"DDIM eta must be >= 0; got {self.eta}.")

    def check(self, info):
        _need_path(info, "DDIM")

    def integrate(self, f, key, x_init, grid, info, trajectory):
        n = grid.size - 1
        a, s, _ = _path_on_grid(f, grid)
        keys = jax.random.split(key, n)
        eta = self.eta

        def step(x, inp):
            t, a0, s0, a1, s1, k = inp
            x_hat = f.denoise(x, time_array(t, x))
            eps = (x - a0 * x_hat) / s0
            if eta == 0:
                return a1 * x_hat + s1 * eps, None
            # c = η·σ_{i+1}·sqrt(1 − SNR_i/SNR_{i+1}), SNR ratio = (α_i·σ_{i+1} / α_{i+1}·σ_i)²
            snr_ratio = (a0 * s1 / (a1 * s0)) ** 2
            c = eta * s1 * jnp.sqrt(jnp.clip(1.0 - snr_ratio, 0.0, 1.0))
            z = jax.random.normal(k, x.shape, x.dtype)
            return a1 * x_hat + jnp.sqrt(jnp.maximum(s1**2 - c**2, 0.0)) * eps + c * z, None

        def step_traj(x, inp):
            x, _ = step(x, inp)
            return x, (x if trajectory else None)

        xs = (jnp.asarray(grid[:-1], jnp.float32), a[:-1], s[:-1], a[1:], s[1:], keys)
        x, states = jax.lax.scan(step_traj, x_init, xs)
        return x, with_initial(x_init, states)

    def count_nfe(self, grid, info):
        return grid.size - 1
