"""Moving digits: scikit-learn's 8×8 digits moving and bouncing on a 32×32 canvas (the video demo).

Each video places one real digit (from `load_digits_split`, so train and val videos use disjoint
digits) at a random start p₀ on the canvas and moves it with a constant velocity per axis,
reflected at the walls (elastic bounce; positions are the digit's top-left corner, integers):

    p_{k+1} = R(p_k + v_k),  R(q) = −q if q < 0,  2L − q if q > L,  else q      (L = canvas − 8)
    v_{k+1} = −v_k on an axis where R reflected,  else v_k

|v| per axis is drawn from `speeds` (default {1, 2} px/frame) with a random sign; p₀ is uniform.
Each video's generator is `np.random.default_rng((seed, split, digit index, copy))`, so the
data depend on the settings alone. `write_moving_digits_tree(root)` writes
`root/{train,val}/<digit>/<index>_<copy>.npy` (uint8 `[T, 32, 32]`, the on-disk layout that
the generic video source `VideoFolderSource` reads) once, with a marker `moving_digits.json`.
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnx_imagenet.data.digits import NUM_CLASSES, load_digits_split, tree_is_written

MARKER = "moving_digits.json"
CANVAS = 32
DIGIT = 8
SPEEDS = (1, 2)
SPLITS = ("train", "val")


def bounce_path(
    start: Sequence[int], velocity: Sequence[int], num_frames: int, limit: int
) -> np.ndarray:
    """Top-left positions `[num_frames, 2]` (row, col) from `start` with `velocity`, reflected
    at 0 and `limit` (module docstring). Needs |v| ≤ limit per axis."""
    p, v = np.array(start, np.int64), np.array(velocity, np.int64)
    if np.any(np.abs(v) > limit) or np.any(p < 0) or np.any(p > limit):
        raise ValueError(f"need 0 ≤ start ≤ {limit} and |velocity| ≤ {limit}; got {p}, {v}.")
    out = np.empty((num_frames, 2), np.int64)
    for k in range(num_frames):
        out[k] = p
        p = p + v
        low, high = p < 0, p > limit
        p = np.where(low, -p, np.where(high, 2 * limit - p, p))
        v = np.where(low | high, -v, v)
    return out


def random_motion(
    rng: np.random.Generator,
    num_frames: int,
    *,
    canvas: int = CANVAS,
    speeds: Sequence[int] = SPEEDS,
) -> np.ndarray:
    """A random bouncing path `[num_frames, 2]`: uniform start, per-axis speed from `speeds`
    with a random sign."""
    limit = canvas - DIGIT
    start = rng.integers(0, limit + 1, size=2)
    velocity = rng.choice(np.asarray(speeds), size=2) * rng.choice([-1, 1], size=2)
    return bounce_path(start, velocity, num_frames, limit)


def render(digit: np.ndarray, path: np.ndarray, canvas: int = CANVAS) -> np.ndarray:
    """uint8 video `[T, canvas, canvas]`: `digit` `[8, 8]` pasted at each top-left of `path`."""
    video = np.zeros((len(path), canvas, canvas), np.uint8)
    for k, (r, c) in enumerate(path):
        video[k, r : r + DIGIT, c : c + DIGIT] = digit
    return video


def moving_digit_videos(
    split: str,
    *,
    num_frames: int = 16,
    videos_per_digit: int = 2,
    held_out: float = 0.2,
    seed: int = 0,
    speeds: Sequence[int] = SPEEDS,
):
    """Yield `(digit index, copy, label, video uint8 [T, 32, 32], path [T, 2])` of one split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")
    images, labels = load_digits_split(held_out)[split]
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        for j in range(videos_per_digit):
            rng = np.random.default_rng((seed, SPLITS.index(split), i, j))
            path = random_motion(rng, num_frames, speeds=speeds)
            yield i, j, int(y), render(img, path), path


def write_moving_digits_tree(
    root: str | os.PathLike,
    *,
    num_frames: int = 16,
    videos_per_digit: int = 2,
    held_out: float = 0.2,
    seed: int = 0,
    speeds: Sequence[int] = SPEEDS,
) -> Path:
    """Write `root/{train,val}/<digit>/<index>_<copy>.npy` once (module docstring); return root.

    An existing tree with the same settings is reused; other settings or a non-empty folder
    without the marker raise `DataError`.
    """
    root = Path(root)
    info = {
        "num_frames": num_frames,
        "videos_per_digit": videos_per_digit,
        "held_out": held_out,
        "seed": seed,
        "speeds": list(speeds),
        "canvas": CANVAS,
    }
    if tree_is_written(root, MARKER, info, "a moving-digits tree"):
        return root
    counts = {}
    for split in SPLITS:
        for c in range(NUM_CLASSES):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
        n = 0
        for i, j, y, video, _ in moving_digit_videos(
            split,
            num_frames=num_frames,
            videos_per_digit=videos_per_digit,
            held_out=held_out,
            seed=seed,
            speeds=speeds,
        ):
            np.save(root / split / str(y) / f"{i:04d}_{j}.npy", video)
            n += 1
        counts[split] = n
    (root / MARKER).write_text(json.dumps({"split": info, "counts": counts}))
    return root


def default_moving_digits_root() -> Path:
    """`$XDG_CACHE_HOME/nnx-imagenet/moving_digits` (default `~/.cache/...`)."""
    from nnx_imagenet.data.digits import default_digits_root

    return default_digits_root().parent / "moving_digits"
