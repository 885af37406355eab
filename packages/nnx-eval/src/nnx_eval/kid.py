"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with a cubic kernel.

    k(x, y) = (xᵀy / D + 1)³
    MMD²_u = Σ_{i≠j} k(xᵢ, xⱼ) / (m(m−1)) + Σ_{i≠j} k(yᵢ, yⱼ) / (m(m−1)) − 2 Σ_{i,j} k(xᵢ, yⱼ) / m²

averaged over `num_subsets` random subsets of `subset_size` points from each set (drawn without
replacement within a subset, NumPy generator seeded by `seed`), as in the reference
implementation and clean-fid / torch-fidelity (100 subsets of 1000). Float64 on host.
"""

from __future__ import annotations

import numpy as np

from nnx_eval.errors import InputError


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (xᵀy / D + 1)³ for `x: [m, D]`, `y: [n, D]` → `[m, n]`."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² estimate between `x: [m, D]` and `y: [m', D]` with the cubic kernel."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2.0 * kxy.mean()
    )


def kernel_inception_distance(
    reference: np.ndarray,
    samples: np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, std) of MMD²_u over random subsets; `subset_size` is capped at the smaller set."""
    ref, smp = np.asarray(reference), np.asarray(samples)
    if ref.ndim != 2 or smp.ndim != 2 or ref.shape[1] != smp.shape[1]:
        raise InputError(
            f"KID needs features [N, D] with the same D; got {ref.shape} and {smp.shape}."
        )
    m = min(subset_size, ref.shape[0], smp.shape[0])
    if m < 2:
        raise InputError(
            f"KID needs at least 2 points per set; got {ref.shape[0]} and {smp.shape[0]}."
        )
    rng = np.random.default_rng(seed)
    vals = [
        mmd2_unbiased(
            ref[rng.choice(ref.shape[0], m, replace=False)],
            smp[rng.choice(smp.shape[0], m, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals))
