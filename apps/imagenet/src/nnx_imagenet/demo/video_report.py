"""The video demo's report: is each frame the conditioned digit, and does it move like the data?

Frames `[N, T, 32, 32]` in [−1, 1] are mapped to [0, 1]; pixels below `THRESHOLD` count as
background. Per frame, the digit's centre of mass (mass m = Σ p, over foreground pixels p)

    c = Σ p·(row, col) / m

locates an 8×8 crop whose top-left corner is ⌊c − 3.5 + ½⌋ (clipped to the canvas). The class
score is the fraction of frames whose crop the demo's digits classifier (trained on the real
training digits re-centred by the same crop) assigns to the conditioning label.

Motion (the training videos move with a constant per-axis speed s ∈ `SPEEDS` px/frame and bounce
off the walls): per video and axis, s = median |Δc| over consecutive frames must lie within `TOL`
of a training speed, and each step Δc_k must either keep that speed (||Δc_k| − s| ≤ TOL, in
the previous step's direction unless at the video's extreme position on that axis) or be
a bounce: |Δc_k| ≤ s + TOL at the video's extreme position on that axis (within TOL), with the
direction reversed around it (Δc_{k−1}·Δc_{k+1} < 0 where both exist). The motion score is the
fraction of consecutive frame pairs that pass on both axes with a digit in both frames. A
static video (s = 0) or one with shuffled frames (|Δc| of the order of the canvas) fails.
"""

import os
from pathlib import Path

import numpy as np

from nnx_imagenet.data.moving_digits import CANVAS, DIGIT, SPEEDS
from nnx_imagenet.demo.classifier import DigitsClassifier
from nnx_imagenet.demo.report import write_report

THRESHOLD = 0.3  # foreground pixels: above this in [0, 1]
TOL = 0.5  # px: centre-of-mass tolerance of a step
MIN_CLASS_CONSISTENCY = 0.90
MIN_MOTION_SCORE = 0.80


def to_unit(frames: np.ndarray) -> np.ndarray:
    """Frames in [−1, 1] (any shape, a trailing channel of 1 dropped) → [0, 1]."""
    frames = np.asarray(frames, np.float32)
    if frames.shape[-1] == 1:
        frames = frames[..., 0]
    return np.clip((frames + 1.0) / 2.0, 0.0, 1.0)


def centre_of_mass(frames: np.ndarray) -> np.ndarray:
    """Centres of mass `[..., 2]` (row, col) of frames `[..., H, W]` in [0, 1] (NaN: empty)."""
    p = np.where(frames > THRESHOLD, frames, 0.0).astype(np.float64)
    mass = p.sum((-2, -1))
    rows = np.arange(p.shape[-2], dtype=np.float64)
    cols = np.arange(p.shape[-1], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p.sum(-1) * rows).sum(-1) / mass
        c = (p.sum(-2) * cols).sum(-1) / mass
    return np.stack([r, c], -1)


def crop_digits(frames: np.ndarray, com: np.ndarray) -> np.ndarray:
    """8×8 crops `[..., 8, 8]` of frames `[..., H, W]` whose top-left is ⌊com − 3.5 + ½⌋."""
    flat = frames.reshape(-1, *frames.shape[-2:])
    centres = np.nan_to_num(com.reshape(-1, 2), nan=(frames.shape[-1] - 1) / 2)
    # round half up (not NumPy's half to even), so a shifted digit is cropped shifted alike
    top_left = np.floor(centres - (DIGIT - 1) / 2 + 0.5 + 1e-6)
    top_left = np.clip(top_left, 0, np.array(flat.shape[1:]) - DIGIT)
    crops = np.stack([f[r : r + DIGIT, c : c + DIGIT]
                      for f, (r, c) in zip(flat, top_left.astype(int), strict=True)])  # fmt: skip
    return crops.reshape(*frames.shape[:-2], DIGIT, DIGIT)


def recentre_digits(images: np.ndarray) -> np.ndarray:
    """Real 8×8 digits (uint8 `[N, 8, 8]`) → their crops as the report takes them from a frame,
    in [0, 1] (placed mid-canvas, so that the crop is never clipped)."""
    canvas = np.zeros((len(images), CANVAS, CANVAS), np.float32)
    at = (CANVAS - DIGIT) // 2
    canvas[:, at : at + DIGIT, at : at + DIGIT] = images.astype(np.float32) / 255.0
    return crop_digits(canvas, centre_of_mass(canvas))


def fit_crop_classifier(train_images: np.ndarray, train_labels: np.ndarray) -> DigitsClassifier:
    """The demo's digits classifier trained on re-centred real digits (uint8 `[N, 8, 8]`)."""
    return DigitsClassifier().fit(recentre_digits(train_images) * 2.0 - 1.0, train_labels)


def motion_ok(com: np.ndarray, speeds=SPEEDS, tol: float = TOL) -> np.ndarray:
    """Per consecutive frame pair of one video (`com: [T, 2]`), whether it moves like the
    training data (module docstring): bool `[T − 1]`."""
    ok = np.all(np.isfinite(com[1:]) & np.isfinite(com[:-1]), axis=-1)
    if len(com) < 2 or not ok.any():
        return np.zeros(max(len(com) - 1, 0), bool)
    for a in range(2):
        c = com[:, a]
        d = np.diff(c)
        s = float(np.nanmedian(np.abs(d)))
        if not np.isfinite(s) or min(abs(s - v) for v in speeds) > tol:
            return np.zeros(len(d), bool)
        lo, hi = np.nanmin(c), np.nanmax(c)
        pair_lo, pair_hi = np.fmin(c[:-1], c[1:]), np.fmax(c[:-1], c[1:])
        at_wall = (pair_lo <= lo + tol) | (pair_hi >= hi - tol)
        prev = np.concatenate([[np.nan], d[:-1]])
        nxt = np.concatenate([d[1:], [np.nan]])
        turned = np.isfinite(prev) & (prev * d < 0)  # direction reversed: only at a wall
        straight = (np.abs(np.abs(d) - s) <= tol) & (~turned | at_wall)
        both = np.isfinite(prev) & np.isfinite(nxt)
        reverses = np.where(both, prev * nxt < 0, True)
        bounce = (np.abs(d) <= s + tol) & at_wall & reverses
        ok &= straight | bounce
    return ok


def video_report(classifier: DigitsClassifier, videos: np.ndarray, labels: np.ndarray) -> dict:
    """Score videos `[N, T, 32, 32(, 1)]` in [−1, 1] conditioned on `labels` `[N]`.

    Returns:
      A JSON-ready dict: class_consistency (fraction of frames classified as the label),
      per_class_consistency, videos_all_frames_correct, motion_score (fraction of frame pairs
      moving like the training data), videos_all_motion_ok, digit_found (frames with
      foreground), num_videos, num_frames, thresholds and `passed`.
    """
    frames = to_unit(videos)
    labels = np.asarray(labels)
    n, t = frames.shape[:2]
    com = centre_of_mass(frames)
    crops = crop_digits(frames, com)
    pred = classifier.predict(crops.reshape(n * t, DIGIT, DIGIT, 1) * 2.0 - 1.0).reshape(n, t)
    right = pred == labels[:, None]
    motion = np.stack([motion_ok(com[i]) for i in range(n)])
    per_class = [float(right[labels == c].mean()) if np.any(labels == c) else None
                 for c in range(10)]  # fmt: skip
    report = {
        "class_consistency": float(right.mean()),
        "per_class_consistency": per_class,
        "videos_all_frames_correct": float(right.all(1).mean()),
        "motion_score": float(motion.mean()),
        "videos_all_motion_ok": float(motion.all(1).mean()),
        "digit_found": float(np.isfinite(com).all(-1).mean()),
        "num_videos": int(n),
        "num_frames": int(t),
        "min_class_consistency": MIN_CLASS_CONSISTENCY,
        "min_motion_score": MIN_MOTION_SCORE,
    }
    report["passed"] = bool(report["class_consistency"] >= MIN_CLASS_CONSISTENCY
                            and report["motion_score"] >= MIN_MOTION_SCORE)  # fmt: skip
    return report


def format_video_report(report: dict) -> str:
    """Text version of the demo's report (`report["generated"]` and `report["training"]`)."""
    g, r = report["generated"], report["training"]
    per_class = "  ".join(f"{c}:{a:.0%}" if a is not None else f"{c}:-"
                          for c, a in enumerate(g["per_class_consistency"]))  # fmt: skip
    lines = [
        "nnx-imagenet video demo: report",
        f"generated: {g['num_videos']} videos x {g['num_frames']} frames ({report['generation']})",
        f"frames classified as the conditioning digit : {g['class_consistency']:.2%}"
        f"  (needs >= {g['min_class_consistency']:.0%}; training videos: "
        f"{r['class_consistency']:.2%})",
        f"  per class : {per_class}",
        f"  videos with every frame right : {g['videos_all_frames_correct']:.2%}",
        f"frame pairs moving like the training data   : {g['motion_score']:.2%}"
        f"  (needs >= {g['min_motion_score']:.0%}; training videos: {r['motion_score']:.2%})",
        f"  videos with every step right : {g['videos_all_motion_ok']:.2%}",
        f"digit found in frames : {g['digit_found']:.2%}",
        f"train steps {report['train_steps']}, train time {report['train_seconds']:.0f} s",
        f"result : {'PASSED' if report['passed'] else 'FAILED'}",
    ]
    return "\n".join(lines) + "\n"


def write_video_report(report: dict, workdir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `video_report.json` and `video_report.txt` into `workdir`; return both paths."""
    return write_report(report, workdir, stem="video_report", format_fn=format_video_report)
