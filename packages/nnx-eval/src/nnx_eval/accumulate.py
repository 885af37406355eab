"""Metric accumulators: the consumers that `generate` (or a reference pass) feeds with images.

`MetricAccumulator.update(images: uint8 [B, H, W, 3], labels=None)` runs a feature function and
keeps, per feature kind, a float64 `RunningStats` (for FID / sFID / FD-DINOv2) and optionally
the first `keep` feature vectors (for precision/recall and KID, which need the points, not just
moments) and an `InceptionScoreAccumulator`. Nothing else is stored, so memory does not grow
with the number of samples beyond `keep · D` floats.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from nnx_eval.errors import InputError
from nnx_eval.features import FeatureFn
from nnx_eval.fid import fid_from_stats
from nnx_eval.inception_score import InceptionScoreAccumulator
from nnx_eval.kid import kernel_inception_distance
from nnx_eval.precision_recall import precision_recall
from nnx_eval.stats import GaussianStats, RunningStats


class MetricAccumulator:
    """Accumulate feature statistics for a stream of uint8 image batches.

    Args:
      feature_fn: uint8 `[B, H, W, 3]` → `{name: [B, D_name]}` (e.g. `inception_feature_fn`).
      stats_keys: feature names whose mean/covariance are accumulated.
      keep_key: feature name whose first `keep` vectors are stored (P/R, KID); `None` = none.
      keep: how many vectors to store.
      logits_key: feature name fed to the Inception Score (`None` = no IS).
      num_samples: total number of samples (required for IS splits).
      is_splits: IS splits.
    """

    def __init__(
        self,
        feature_fn: FeatureFn,
        *,
        stats_keys: Sequence[str] = ("pool",),
        keep_key: str | None = None,
        keep: int = 10_000,
        logits_key: str | None = None,
        num_samples: int | None = None,
        is_splits: int = 10,
    ):
        self.feature_fn = feature_fn
        self.running = {k: RunningStats() for k in stats_keys}
        self.keep_key, self.keep = keep_key, keep
        self._kept: list[np.ndarray] = []
        self._n_kept = 0
        self.logits_key = logits_key
        self.inception_score = None
        if logits_key is not None:
            if num_samples is None:
                raise InputError("Inception Score needs num_samples (the split boundaries).")
            self.inception_score = InceptionScoreAccumulator(num_samples, is_splits)
        self.count = 0

    def update(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        """Add uint8 images `[B, H, W, 3]` (global sample `indices` place them in IS splits)."""
        del labels
        feats = self.feature_fn(images)
        for key, acc in self.running.items():
            acc.update(feats[key])
        if self.keep_key is not None and self._n_kept < self.keep:
            take = np.asarray(feats[self.keep_key][: self.keep - self._n_kept], np.float32)
            self._kept.append(take)
            self._n_kept += take.shape[0]
        if self.inception_score is not None:
            self.inception_score.update(feats[self.logits_key], indices)
        self.count += int(np.shape(images)[0])

    def sync(self) -> None:
        """Combine the accumulators of all processes (no-op with one process).

        Moments are merged with `RunningStats.merge`, IS sums are added, kept features are
        concatenated in process order (each process keeps its first `keep // process_count`).
        """
        if jax.process_count() == 1:
            return
        from jax.experimental import multihost_utils as mh

        for acc in self.running.values():
            n, mean, m2 = mh.process_allgather((np.asarray(acc.n), acc.mean, acc.m2))
            merged = RunningStats()
            for i in range(len(n)):
                other = RunningStats(acc.dim)
                other.n, other.mean, other.m2 = int(n[i]), mean[i], m2[i]
                merged.merge(other)
            acc.n, acc.mean, acc.m2 = merged.n, merged.mean, merged.m2
        if self.inception_score is not None:
            isa = self.inception_score
            sum_p, sum_plogp, count = mh.process_allgather((isa.sum_p, isa.sum_plogp, isa.count))
            isa.sum_p, isa.sum_plogp, isa.count = sum_p.sum(0), sum_plogp.sum(0), count.sum(0)
        if self._kept:
            share = self.keep // jax.process_count()
            mine = self.kept_features()[:share]
            self._kept = [np.concatenate(list(mh.process_allgather(mine)))]
            self._n_kept = self._kept[0].shape[0]

    def stats(self) -> dict[str, GaussianStats]:
        """`{feature name: GaussianStats}` of everything seen so far."""
        return {k: acc.result() for k, acc in self.running.items()}

    def kept_features(self) -> np.ndarray:
        """The stored `[min(keep, count), D]` feature vectors (float32)."""
        if not self._kept:
            raise InputError("No features were kept: create the accumulator with keep_key=.")
        return np.concatenate(self._kept)


def inception_accumulator(
    feature_fn: FeatureFn, num_samples: int, *, keep: int = 10_000, is_splits: int = 10
) -> MetricAccumulator:
    """Accumulator for FID (pool), sFID (spatial), IS (unbiased logits) and P/R + KID (pool)."""
    return MetricAccumulator(
        feature_fn,
        stats_keys=("pool", "spatial"),
        keep_key="pool",
        keep=keep,
        logits_key="logits_unbiased",
        num_samples=num_samples,
        is_splits=is_splits,
    )


def inception_metrics(
    acc: MetricAccumulator,
    reference: dict[str, GaussianStats],
    reference_features: np.ndarray | None = None,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> dict[str, float]:
    """FID, sFID, IS (and precision, recall, KID when `reference_features` are given).

    Args:
      acc: an accumulator from `inception_accumulator`, fed with all samples.
      reference: `{"pool": ..., "spatial": ...}` as returned by `reference.load_reference_stats`
        (`"spatial"` optional: sFID is skipped without it).
      reference_features: `[M, 2048]` pool features of reference images (ADM: 10k).
    """
    stats = acc.stats()
    out: dict[str, float] = {"fid": fid_from_stats(stats["pool"], reference["pool"])}
    if "spatial" in reference and "spatial" in stats:
        out["sfid"] = fid_from_stats(stats["spatial"], reference["spatial"])
    if acc.inception_score is not None:
        out["inception_score"], out["inception_score_std"] = acc.inception_score.result()
    if reference_features is not None:
        feats = acc.kept_features()
        out["precision"], out["recall"] = precision_recall(reference_features, feats)
        out["kid"], out["kid_std"] = kernel_inception_distance(
            reference_features, feats, num_subsets=kid_subsets, subset_size=kid_subset_size
        )
    return out
