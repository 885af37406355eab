"""scikit-learn's bundled handwritten digits (1797 real 8×8 images) as a small ImageFolder tree.

`write_digits_tree(root)` writes `root/train/<d>/<index>.png` and `root/val/<d>/<index>.png`
(grayscale, pixel = round(v·255/16) for the original 0–16 values), a stratified 80/20 split with a
fixed seed; the demo then reads it with the same `ImageFolderSource` as ImageNet. No internet is
needed: the data ship inside scikit-learn.
"""

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from nnx_imagenet.errors import DataError

MARKER = "digits.json"
NUM_CLASSES = 10
RESOLUTION = 8


def load_digits_split(
    held_out: float = 0.2, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The digits as uint8 images `[N, 8, 8]` and labels `[N]`, split into "train" and "val".

    The split is stratified: each class contributes `round(held_out · n_class)` images to "val",
    chosen by a permutation with `seed`.
    """
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    labels = d.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        val_idx.extend(rng.permutation(idx)[: round(held_out * len(idx))].tolist())
    is_val = np.zeros(len(labels), bool)
    is_val[val_idx] = True
    return {
        "train": (images[~is_val], labels[~is_val]),
        "val": (images[is_val], labels[is_val]),
    }


def write_digits_tree(root: str | os.PathLike, *, held_out: float = 0.2, seed: int = 0) -> Path:
    """Write the digits as `root/{train,val}/<digit>/<index>.png` once; return `root`.

    A marker file `digits.json` records the split; an existing complete tree is reused.
    """
    root = Path(root)
    info = {"held_out": held_out, "seed": seed}
    if tree_is_written(root, MARKER, info, "a digits tree"):
        return root
    counts = {}
    for split, (images, labels) in load_digits_split(held_out, seed).items():
        for c in range(NUM_CLASSES):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(img).save(root / split / str(y) / f"{i:04d}.png")
        counts[split] = len(labels)
    (root / MARKER).write_text(json.dumps({"split": info, "counts": counts}))
    return root


def tree_is_written(root: Path, marker: str, info: dict, what: str) -> bool:
    """True when `root` holds a complete tree written with `info` (its `marker` file says so);
    False when `root` is missing or empty (write it now).

    Raises:
      DataError: `root` holds a tree written with other settings, or unrelated files.
    """
    path = root / marker
    if path.is_file():
        if json.loads(path.read_text()).get("split") == info:
            return True
        raise DataError(
            f"{root} holds {what} written with different settings ({path.read_text()}; "
            f"wanted {info}); use another data.kwargs.root or delete {root}."
        )
    if root.exists() and any(root.iterdir()):
        raise DataError(
            f"{root} is not empty and has no {marker}; expected an empty folder to write "
            f"{what} into. Choose another data.kwargs.root."
        )
    return False


def default_digits_root() -> Path:
    """`$XDG_CACHE_HOME/nnx-imagenet/digits` (default `~/.cache/nnx-imagenet/digits`)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "nnx-imagenet" / "digits"
