"""The demo's quality report: classifier accuracy on generated digits and the Fréchet distance.

Pass criteria (issue #10): the classifier reaches ≥ 95% held-out accuracy on real digits, and
classifies ≥ 90% of generated samples as the class they were conditioned on.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nnx_imagenet.demo.classifier import DigitsClassifier, frechet_distance

MIN_CLASSIFIER_ACCURACY = 0.95
MIN_SAMPLE_ACCURACY = 0.90


def quality_report(
    classifier: DigitsClassifier,
    real_train: np.ndarray,
    real_val: tuple[np.ndarray, np.ndarray],
    samples: np.ndarray,
    sample_labels: np.ndarray,
) -> dict:
    """Score generated digits.

    Args:
      classifier: fitted on the real training split.
      real_train: real training images `[N, 8, 8, 1]` in [−1, 1] (the FD reference set).
      real_val: held-out images and labels.
      samples: generated images `[M, 8, 8, 1]` in [−1, 1]; sample_labels: `[M]` conditioning class.

    Returns:
      A JSON-ready dict: classifier_val_accuracy, sample_accuracy (fraction classified as their
      conditioning class), per_class_sample_accuracy, fd_samples_vs_train, fd_val_vs_train (the
      FD a perfect generator would get with held-out-sized sets), thresholds and `passed`.
    """
    x_val, y_val = real_val
    sample_labels = np.asarray(sample_labels)
    pred = classifier.predict(samples)
    feats_train = classifier.features(real_train)
    per_class = [
        float(np.mean(pred[sample_labels == c] == c)) if np.any(sample_labels == c) else None
        for c in range(10)
    ]
    report = {
        "classifier_val_accuracy": classifier.accuracy(x_val, y_val),
        "sample_accuracy": float(np.mean(pred == sample_labels)),
        "per_class_sample_accuracy": per_class,
        "fd_samples_vs_train": frechet_distance(classifier.features(samples), feats_train),
        "fd_val_vs_train": frechet_distance(classifier.features(x_val), feats_train),
        "num_samples": len(samples),
        "min_classifier_accuracy": MIN_CLASSIFIER_ACCURACY,
        "min_sample_accuracy": MIN_SAMPLE_ACCURACY,
    }
    report["passed"] = bool(
        report["classifier_val_accuracy"] >= MIN_CLASSIFIER_ACCURACY
        and report["sample_accuracy"] >= MIN_SAMPLE_ACCURACY
    )
    return report


def format_report(report: dict) -> str:
    """Human-readable text version of `quality_report`'s dict."""
    per_class = "  ".join(
        f"{c}:{a:.0%}" if a is not None else f"{c}:-"
        for c, a in enumerate(report["per_class_sample_accuracy"])
    )
    lines = [
        "nnx-imagenet digits demo: quality report",
        f"classifier held-out accuracy : {report['classifier_val_accuracy']:.2%}"
        f"  (needs >= {report['min_classifier_accuracy']:.0%})",
        f"samples classified as their conditioning class : {report['sample_accuracy']:.2%}"
        f"  (needs >= {report['min_sample_accuracy']:.0%}, {report['num_samples']} samples)",
        f"  per class : {per_class}",
        f"Frechet distance in classifier features, samples vs train : "
        f"{report['fd_samples_vs_train']:.3f}",
        f"  reference, held-out real vs train                      : "
        f"{report['fd_val_vs_train']:.3f}",
        f"result : {'PASSED' if report['passed'] else 'FAILED'}",
    ]
    return "\n".join(lines) + "\n"


def write_report(
    report: dict,
    workdir: str | os.PathLike,
    *,
    stem: str = "quality_report",
    format_fn: Callable[[dict], str] = format_report,
) -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.txt` (`format_fn(report)`) into `workdir`; return both."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    js, txt = workdir / f"{stem}.json", workdir / f"{stem}.txt"
    js.write_text(json.dumps(report, indent=1))
    txt.write_text(format_fn(report))
    return js, txt
