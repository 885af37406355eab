"""EDM2 post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", Section 3 and Appendix C.1).

Training tracks power-function EMAs, whose weight on the parameters at time τ ≤ t is
∝ τ^γ (Equation 3), for a few relative standard deviations σ_rel, related to γ by

    σ_rel = sqrt((γ + 1) / ((γ + 2)² (γ + 3)))                                    (Equation 4)

and updated (time t counted in training images, δ = images per step) with

    θ̂_t = β_t θ̂_{t−δ} + (1 − β_t) θ_t,   β_t = (1 − δ / t)^(γ + 1)               (Eq. 5, C.1)

(β = 0 at the first step, so every power EMA starts from the parameters). Snapshots of them at
times t_i are saved during training; afterwards the EMA of any σ_rel at any time is the
least-squares combination of snapshots: with the inner products of power-function profiles

    ⟨p_a, p_b⟩ = (γ_a + 1)(γ_b + 1) (t_a / t_b)^{γ_b or −γ_a} / ((γ_a + γ_b + 1) max(t_a, t_b))

solve A x = b with A_ij = ⟨p_i, p_j⟩, b_i = ⟨p_i, p_target⟩ and sum the snapshots with weights x.
The NumPy formulas mirror edm2/training/phema.py.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


# --- σ_rel ↔ γ (Equation 4) -------------------------------------------------------------------
def exp_to_std(gamma: float | np.ndarray) -> np.ndarray:
    """σ_rel of the power EMA with exponent γ."""
    gamma = np.float64(gamma)
    return np.sqrt((gamma + 1) / (gamma + 2) ** 2 / (gamma + 3))


def std_to_exp(std: float | np.ndarray) -> np.ndarray:
    """γ for a given σ_rel: the largest real root of γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²)."""
    std = np.float64(std)
    inv = np.atleast_1d(std).ravel() ** -2
    exp = [np.roots([1, 7, 16 - s, 12 - s]).real.max() for s in inv]
    return np.float64(exp).reshape(np.shape(std))


def power_beta(std: float, t_next: jax.Array, t_delta: float) -> jax.Array:
    """β = (1 − δ / t)^(γ + 1) for the update reaching time t = `t_next` (Appendix C.1)."""
    return 1.0 - power_weight(std, t_next, t_delta)


def power_weight(std: float, t_next: jax.Array, t_delta: float) -> jax.Array:
    """1 − β = −expm1((γ + 1)·log1p(−δ / t)), accurate in float32 for t ≫ δ."""
    gamma = float(std_to_exp(std))
    t_next = jnp.asarray(t_next, jnp.float32)
    return -jnp.expm1((gamma + 1.0) * jnp.log1p(-t_delta / t_next))


# --- training-time update --------------------------------------------------------------------
def std_name(std: float) -> str:
    return repr(float(std))


def init_power_emas(params: Any, stds: Sequence[float]) -> dict[str, Any]:
    """One power EMA per σ_rel, initialised from the parameters."""
    return {std_name(s): jax.tree.map(jnp.copy, params) for s in stds}


def update_power_emas(emas: dict[str, Any], params: Any, t_next: jax.Array, t_delta: float) -> dict:
    """θ̂ ← β θ̂ + (1 − β) θ for every tracked σ_rel; `t_next` = training images after this step."""
    out = {}
    for name, ema in emas.items():
        w = power_weight(float(name), t_next, t_delta)
        out[name] = jax.tree.map(lambda e, p: (e + w * (p - e)).astype(e.dtype), ema, params)
    return out


# --- after training: least-squares reconstruction ------------------------------------------------
def power_correlation(a_t, a_std, b_t, b_std) -> np.ndarray:
    """⟨p_a, p_b⟩ of two normalised power-function profiles ending at times a_t and b_t."""
    a_exp, b_exp = std_to_exp(a_std), std_to_exp(b_std)
    ratio = np.float64(a_t) / np.float64(b_t)
    exp = np.where(np.float64(a_t) < b_t, b_exp, -a_exp)
    t_max = np.maximum(a_t, b_t)
    return (a_exp + 1) * (b_exp + 1) * ratio**exp / ((a_exp + b_exp + 1) * t_max)


def solve_posthoc_coefficients(
    in_t: Sequence[float], in_std: Sequence[float], out_t: float, out_std: float
) -> np.ndarray:
    """Weights x (one per snapshot) with Σ x_i p_i ≈ p_target in the L2 sense: A x = b."""
    in_t, in_std = np.broadcast_arrays(np.float64(in_t), np.float64(in_std))
    col = lambda v: np.float64(v).reshape(-1, 1)  # noqa: E731
    row = lambda v: np.float64(v).reshape(1, -1)  # noqa: E731
    A = power_correlation(col(in_t), col(in_std), row(in_t), row(in_std))
    b = power_correlation(col(in_t), col(in_std), row(out_t), row(out_std))
    return np.linalg.solve(A, b).ravel()


def reconstruct(
    snapshots: Sequence[tuple[float, float, Any]], out_std: float, out_t: float | None = None
) -> Any:
    """The EMA with σ_rel = `out_std` at time `out_t` (default: the last snapshot time).

    Args:
      snapshots: (time t_i in images, σ_rel of that power EMA, params pytree) triples.
    Returns:
      A params pytree Σ_i x_i θ̂_i (computed in float64 on the host, cast back).
    """
    times = [s[0] for s in snapshots]
    stds = [s[1] for s in snapshots]
    out_t = max(times) if out_t is None else out_t
    x = solve_posthoc_coefficients(times, stds, out_t, out_std)
    trees = [s[2] for s in snapshots]

    def combine(*leaves):
        acc = sum(w * np.asarray(leaf, np.float64) for w, leaf in zip(x, leaves, strict=True))
        return acc.astype(np.asarray(leaves[0]).dtype)

    return jax.tree.map(combine, *trees)
