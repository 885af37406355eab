"""Inception Score (Salimans et al. 2016), batch and streaming, in float64.

    IS = exp( E_x KL( p(y|x) ‖ p(y) ) ),   p(y) = E_x p(y|x),

computed on each of `splits` consecutive, equal parts of the samples and reported as the mean
(and std) over parts. Split k holds samples [k·N // S, (k+1)·N // S) (improved-GAN's
`inception_score.py`; ADM's evaluator uses chunks of 5000, identical for N = 50k, S = 10).
p(y|x) = softmax of the Inception logits *without* the fc bias (`logits_unbiased`, the
`softmax/logits/MatMul` tensor both references use).

Per split only Σ p(y|x) and Σ Σ_y p log p are needed, since
E KL = E[Σ_y p log p] − Σ_y p̄ log p̄, so the streaming form keeps `splits × C` numbers.
"""

from __future__ import annotations

import numpy as np

from nnx_eval.errors import InputError


def _softmax_stats(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p = softmax(logits) [B, C] and Σ_y p log p [B], stably in float64."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    return p, np.sum(p * log_p, axis=1)


def _split_is(sum_p: np.ndarray, sum_plogp: float, n: int) -> float:
    p_bar = sum_p / n
    safe = np.where(p_bar > 0, p_bar, 1.0)
    neg_entropy_marginal = np.sum(p_bar * np.log(safe))
    return float(np.exp(sum_plogp / n - neg_entropy_marginal))


class InceptionScoreAccumulator:
    """Streaming IS over `num_samples` samples fed in order (`update(logits: [B, C])`)."""

    def __init__(self, num_samples: int, splits: int = 10):
        if num_samples < splits or splits < 1:
            raise InputError(
                f"Inception score needs num_samples ≥ splits ≥ 1; got num_samples={num_samples}, "
                f"splits={splits}. Lower splits or generate more samples."
            )
        self.num_samples, self.splits = num_samples, splits
        # Split k covers [bounds[k], bounds[k + 1]).
        self.bounds = np.array([k * num_samples // splits for k in range(splits + 1)])
        self.seen = 0
        self.sum_p: np.ndarray | None = None
        self.sum_plogp = np.zeros(splits)
        self.count = np.zeros(splits, np.int64)

    def update(self, logits: np.ndarray, indices: np.ndarray | None = None) -> None:
        """Add `logits: [B, C]` of samples `indices` (default: the next B in order)."""
        logits = np.asarray(logits)
        if logits.ndim != 2:
            raise InputError(f"IS expects logits [B, C]; got shape {logits.shape}.")
        bad = int(np.sum(~np.all(np.isfinite(logits), axis=1)))
        if bad:
            raise InputError(
                f"{bad} of {logits.shape[0]} logit rows contain NaN or Inf; the Inception Score "
                f"of them would be meaningless. Check the images fed to the feature network."
            )
        b = logits.shape[0]
        if self.seen + b > self.num_samples:
            raise InputError(
                f"InceptionScoreAccumulator was sized for {self.num_samples} samples but got "
                f"{self.seen + b}; create it with the total number of samples."
            )
        if indices is None:
            indices = self.seen + np.arange(b)
        indices = np.asarray(indices)
        if indices.shape != (b,) or indices.min() < 0 or indices.max() >= self.num_samples:
            raise InputError(
                f"IS sample indices must be [B] in [0, {self.num_samples}); got {indices.shape} "
                f"in [{indices.min()}, {indices.max()}]."
            )
        p, plogp = _softmax_stats(logits)
        if self.sum_p is None:
            self.sum_p = np.zeros((self.splits, p.shape[1]))
        split = np.searchsorted(self.bounds, indices, side="right") - 1
        np.add.at(self.sum_p, split, p)
        np.add.at(self.sum_plogp, split, plogp)
        np.add.at(self.count, split, 1)
        self.seen += b

    def result(self) -> tuple[float, float]:
        """(mean, std) of the per-split scores."""
        if int(self.count.sum()) != self.num_samples:
            raise InputError(
                f"Inception score expected {self.num_samples} samples, got {int(self.count.sum())}."
            )
        scores = [
            _split_is(self.sum_p[k], self.sum_plogp[k], int(self.count[k]))
            for k in range(self.splits)
        ]
        return float(np.mean(scores)), float(np.std(scores))


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS (mean, std over `splits`) of `logits: [N, C]` (see module docstring)."""
    acc = InceptionScoreAccumulator(np.asarray(logits).shape[0], splits)
    acc.update(logits)
    return acc.result()
