"""Fréchet distance between Gaussians, in float64 with a robust matrix square root.

    FD(N(μ₁, Σ₁), N(μ₂, Σ₂)) = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^{1/2}

(Fréchet 1957; Heusel et al. 2017, FID). The trace term is computed without `scipy.linalg.sqrtm`
of the non-symmetric product Σ₁Σ₂ (which can return complex or NaN values for singular
covariances). Σ₁Σ₂ is similar to A = Σ₁^{1/2} Σ₂ Σ₁^{1/2} = MᵀM with M = Σ₂^{1/2} Σ₁^{1/2}, so

    tr (Σ₁ Σ₂)^{1/2} = tr A^{1/2} = Σᵢ sᵢ(M),

the sum of the singular values of M, with Σ^{1/2} from an eigendecomposition (negative
round-off eigenvalues clipped to 0). Taking the singular values of M rather than the square
roots of the eigenvalues of A matters when n < d: A's null-space eigenvalues are round-off of
order ε‖A‖ whose square roots (√ε‖A‖^{1/2} each, d − n of them) would make FD(P, P) negative
(−5e-4 at d = 2048, n = 1000); M's singular values there are of order ε‖M‖. The result is
clamped at 0 (an FD is a squared distance), and is always real and finite for finite PSD inputs.
It matches pytorch-fid's `calculate_frechet_distance` (scipy `sqrtm`) to rel 1e-9 where that is
accurate (tests/fixtures/fid_value.npz).
"""

from __future__ import annotations

import numpy as np

from nnx_eval.errors import InputError
from nnx_eval.stats import GaussianStats


def sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues < 0 clipped to 0)."""
    sigma = np.asarray(sigma, np.float64)
    lam, v = np.linalg.eigh(0.5 * (sigma + sigma.T))
    return (v * np.sqrt(np.clip(lam, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr (Σ₁ Σ₂)^{1/2} = Σᵢ sᵢ(Σ₂^{1/2} Σ₁^{1/2}) for symmetric PSD Σ₁, Σ₂."""
    m = sqrtm_psd(sigma2) @ sqrtm_psd(sigma1)
    return float(np.sum(np.linalg.svd(m, compute_uv=False)))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """FD between N(μ₁, Σ₁) and N(μ₂, Σ₂) (module docstring); `mu: [D]`, `sigma: [D, D]`."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise InputError(
            f"Fréchet distance needs mu [D] and sigma [D, D] of one D on both sides; got mu1 "
            f"{mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}. Were "
            "the two statistics computed with the same features (pool 2048 vs spatial 2023)?"
        )
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} contains NaN or inf; the features or the file are corrupt.")
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(sigma1, sigma2)
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(fd, 0.0)


def fid_from_stats(a: GaussianStats, b: GaussianStats) -> float:
    """`frechet_distance` of two `GaussianStats` (FID on pool features, sFID on spatial ones)."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
