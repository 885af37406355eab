"""Streaming Gaussian statistics of features in float64 (mean and covariance).

`RunningStats` never keeps the features: it holds the count n, the mean μ and the centred
scatter M2 = Σ (x − μ)(x − μ)ᵀ, merged batch by batch with Chan et al.'s parallel update

    δ = μ_b − μ,   μ ← μ + δ · n_b / (n + n_b),   M2 ← M2 + M2_b + δ δᵀ · n n_b / (n + n_b)

which is exact (up to float64 rounding) for any batching and, unlike Σxxᵀ − n μμᵀ, does not
cancel catastrophically when |μ| ≫ σ. Memory is O(D²) whatever the number of samples.
The covariance is the unbiased Σ = M2 / (n − 1), as `np.cov` (ADM, EDM, pytorch-fid).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from nnx_eval.errors import InputError


@dataclass(frozen=True)
class GaussianStats:
    """Mean `mu: [D]` and covariance `sigma: [D, D]` (float64) of `n` feature vectors.

    `n = 0` means unknown (e.g. loaded from a file that does not store it).
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int = 0

    def __post_init__(self):
        mu = np.asarray(self.mu, np.float64)
        sigma = np.asarray(self.sigma, np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise InputError(
                f"GaussianStats needs mu [D] and sigma [D, D]; got mu {mu.shape}, sigma "
                f"{sigma.shape}. Check that both come from the same feature extractor."
            )
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)

    @property
    def dim(self) -> int:
        return self.mu.shape[0]


class RunningStats:
    """Streaming mean/covariance accumulator (float64). `update(x: [B, D])`, then `result()`."""

    def __init__(self, dim: int | None = None):
        self.n = 0
        self.dim = dim
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        """Add a batch `x: [B, D]` (any float dtype; accumulated in float64)."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2:
            raise InputError(f"RunningStats.update expects features [B, D]; got shape {x.shape}.")
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise InputError(
                f"RunningStats has feature dimension {self.dim}; got a batch with {x.shape[1]}. "
                "Use one accumulator per feature kind."
            )
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(axis=0)
        xc = x - mean_b
        self._merge(n_b, mean_b, xc.T @ xc)

    def _merge(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        if self.n == 0:
            self.n, self.mean, self.m2 = n_b, mean_b.copy(), m2_b.copy()
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.n = n

    def merge(self, other: RunningStats) -> None:
        """Fold another accumulator (e.g. from another host) into this one."""
        if other.n:
            if self.dim is not None and other.dim != self.dim:
                raise InputError(f"Cannot merge stats of dimension {other.dim} into {self.dim}.")
            self.dim = other.dim
            self._merge(other.n, other.mean, other.m2)

    def result(self) -> GaussianStats:
        """`GaussianStats(mu, sigma = M2 / (n − 1), n)`; warns when n < D (singular Σ)."""
        if self.n < 2:
            raise InputError(
                f"Need at least 2 samples for a covariance; got {self.n}. Feed more batches."
            )
        if self.n < self.dim:
            warnings.warn(
                f"Covariance of {self.dim}-dim features estimated from only {self.n} samples: it "
                f"is singular (rank ≤ {self.n - 1}) and Fréchet distances are strongly biased. "
                "Use at least as many samples as dimensions (50k is the reference for FID).",
                stacklevel=2,
            )
        return GaussianStats(self.mean.copy(), self.m2 / (self.n - 1), self.n)
