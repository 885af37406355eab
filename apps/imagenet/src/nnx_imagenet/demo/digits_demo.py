"""After the trainer finishes the digits run: samples per class, the quality report and figures.

Writes into the workdir:
    samples_per_class.png    10 rows (classes 0–9) × 10 samples from the EMA weights
    loss_curve.png           training loss from metrics.jsonl
    quality_report.{json,txt}
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnx_imagenet.data.digits import NUM_CLASSES, load_digits_split
from nnx_imagenet.demo.classifier import DigitsClassifier
from nnx_imagenet.demo.plots import save_class_grid, save_loss_curve
from nnx_imagenet.demo.report import quality_report, write_report
from nnx_imagenet.sampling import sample_fn_from_state


def _to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 `[N, 8, 8]` → float `[N, 8, 8, 1]` in [−1, 1], as the pipeline feeds the model."""
    return images.astype(np.float32)[..., None] / 127.5 - 1.0


def read_losses(workdir: str | Path, key: str = "loss") -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(steps, losses, resume steps) of metrics.jsonl's records holding `key` ("loss",
    "generator/loss", ...), without the abandoned part of a resumed run
    (`nnx_train.metrics.read_metrics`)."""
    from nnx_train.metrics import read_metrics

    records = read_metrics(str(Path(workdir) / "metrics.jsonl"))
    rows = [(r["step"], r[key]) for r in records if key in r]
    resumed = [r["step"] for r in records if r.get("event") == "start" and r["segment"] > 0]
    steps, losses = zip(*rows, strict=True) if rows else ((), ())
    return np.asarray(steps), np.asarray(losses, np.float64), resumed


def score_digits(
    config: ml_collections.ConfigDict, samples: np.ndarray, labels: np.ndarray
) -> tuple[dict, DigitsClassifier, np.ndarray]:
    """(quality report, the fitted classifier, the real training digits in [−1, 1]) for
    `samples` `[N, 8, 8, 1]` conditioned on `labels` `[N]`."""
    split = load_digits_split(held_out=config.data.kwargs.held_out)
    (xtr, ytr), (xva, yva) = split["train"], split["val"]
    xtr, xva = _to_unit(xtr), _to_unit(xva)
    classifier = DigitsClassifier().fit(xtr, ytr)
    return quality_report(classifier, xtr, (xva, yva), samples, labels), classifier, xtr


def save_sample_grid(samples: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Up to 10 samples per class, one row per class."""
    per_class = max(1, min(10, len(samples) // NUM_CLASSES))
    grid = np.stack([samples[labels == c][:per_class] for c in range(NUM_CLASSES)])
    save_class_grid(grid, path)


def finish_digits_demo(config: ml_collections.ConfigDict, state: dict) -> dict:
    """Sample `config.eval.num_images` digits (classes in turn), score them, write the files.

    Args:
      config: the digits demo config (after training).
      state: the trainer's final state (`TrainResult.state`).

    Returns:
      The quality report dict (also written as quality_report.json / .txt).
    """
    workdir = Path(config.workdir)
    n = int(config.eval.num_images)
    sample_fn = sample_fn_from_state(config, state, ema=config.eval.ema)
    labels = jnp.arange(n, dtype=jnp.int32) % NUM_CLASSES
    key = jax.random.key(config.seed + 12345)
    samples = np.asarray(sample_fn(key, labels, n), np.float32)
    labels = np.asarray(labels)

    report, _, _ = score_digits(config, samples, labels)
    report["train_steps"] = int(config.total_steps)
    write_report(report, workdir)

    save_sample_grid(samples, labels, workdir / "samples_per_class.png")
    steps, losses, resumed = read_losses(workdir)
    if np.isfinite(losses).sum() >= 2:
        save_loss_curve(steps, losses, workdir / "loss_curve.png",
                        smooth=max(1, len(steps) // 20), resumed_at=resumed)  # fmt: skip
    return report
