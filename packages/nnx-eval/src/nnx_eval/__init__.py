"""FID/IS/sFID/precision-recall/KID/FD-DINOv2, reference statistics and a sharded sampling loop.

Submodules, one concept each: `inception` (+ `inception_blocks`, `inception_weights`),
`preprocess`, `features`, `stats`, `fid`, `inception_score`, `precision_recall`, `kid`,
`dinov2`, `accumulate`, `reference`, `generate`, `errors`.
"""

from nnx_eval.accumulate import MetricAccumulator, inception_accumulator, inception_metrics
from nnx_eval.dinov2 import dinov2_accumulator, dinov2_feature_fn, load_fd_dinov2_model
from nnx_eval.errors import EvalError, InputError, StatsFormatError
from nnx_eval.features import inception_feature_fn, jit_feature_fn
from nnx_eval.fid import fid_from_stats, frechet_distance
from nnx_eval.generate import generate, to_uint8
from nnx_eval.inception import InceptionV3FID
from nnx_eval.inception_fold import fold_inception
from nnx_eval.inception_score import InceptionScoreAccumulator, inception_score
from nnx_eval.inception_weights import (
    INCEPTION_SPEC,
    inception_from_state_dict,
    load_inception,
    save_inception_weights,
)
from nnx_eval.kid import kernel_inception_distance
from nnx_eval.precision_recall import precision_recall
from nnx_eval.preprocess import preprocess_for_inception
from nnx_eval.reference import (
    compute_reference_stats,
    load_reference_stats,
    save_adm_stats,
    save_edm_stats,
)
from nnx_eval.stats import GaussianStats, RunningStats

__version__ = "0.2.0"

__all__ = [
    "INCEPTION_SPEC",
    "EvalError",
    "GaussianStats",
    "InceptionScoreAccumulator",
    "InceptionV3FID",
    "InputError",
    "MetricAccumulator",
    "RunningStats",
    "StatsFormatError",
    "compute_reference_stats",
    "dinov2_accumulator",
    "dinov2_feature_fn",
    "fid_from_stats",
    "fold_inception",
    "frechet_distance",
    "generate",
    "inception_accumulator",
    "inception_feature_fn",
    "inception_from_state_dict",
    "inception_metrics",
    "inception_score",
    "jit_feature_fn",
    "kernel_inception_distance",
    "load_fd_dinov2_model",
    "load_inception",
    "load_reference_stats",
    "precision_recall",
    "preprocess_for_inception",
    "save_adm_stats",
    "save_edm_stats",
    "save_inception_weights",
    "to_uint8",
]
