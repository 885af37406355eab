"""ImageFolder reader: `root/<split>/<synset>/*.JPEG`, labels from the sorted class folder names.

A grain random-access source: `len(source)` files, `source[i]` → `{"image": uint8 [res, res, C],
"label": int32}` with the ADM centre crop applied (`adm_crop.center_crop_arr`). Flips and
normalisation are pipeline transforms (`pipeline.py`), so this reader is deterministic.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nnx_imagenet.data.adm_crop import center_crop_arr
from nnx_imagenet.errors import DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def scan_image_folder(
    split_dir: str | os.PathLike,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    what: str = "images",
    pattern: str = "<synset>/*.JPEG",
) -> tuple[list[str], list[tuple[str, int]]]:
    """List `(classes, [(path, label), ...])` under `split_dir/<class>/*.{JPEG,jpg,png}` (files
    with `extensions`, any case; `what` and `pattern` name them in errors).

    Classes are the sorted sub-folder names; label k is the k-th of them; files are sorted within a
    class so the order (hence the shuffled order for a seed) is the same on every host.

    Raises:
      DataError: the folder is missing, has no class folders, or a class folder holds no images.
    """
    split_dir = Path(split_dir)
    expected = f"expected {split_dir}/{pattern} (one folder per class)"
    if not split_dir.is_dir():
        raise DataError(f"Data folder {split_dir} does not exist; {expected}.")
    classes = sorted(
        p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not classes:
        raise DataError(f"No class folders under {split_dir}; {expected}.")
    samples: list[tuple[str, int]] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        files = sorted(
            str(p)
            for p in (split_dir / name).iterdir()
            if p.is_file() and p.suffix.lower() in extensions
        )
        if not files:
            empty.append(name)
        samples.extend((f, label) for f in files)
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DataError(
            f"{len(empty)} class folder(s) under {split_dir} hold no {what} ({shown}); "
            f"{expected} with extensions {', '.join(extensions)} (any case)."
        )
    return classes, samples


class ImageFolderSource:
    """Random-access source over an ImageFolder split, decoded and ADM centre-cropped.

    Args:
      root: dataset root holding `<split>/<synset>/*.JPEG`.
      split: sub-folder, e.g. "train" or "val".
      resolution: output side length (ADM centre crop).
      channels: 3 (RGB) or 1 (grayscale).
    """

    def __init__(self, root: str | os.PathLike, split: str, resolution: int, *, channels: int = 3):
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3; got {channels}.")
        self.root = Path(root)
        self.split = split
        self.resolution = int(resolution)
        self.channels = channels
        self.classes, self.samples = scan_image_folder(self.root / split)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB" if self.channels == 3 else "L")
                arr = center_crop_arr(img, self.resolution)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(
                f"Could not decode image {path} ({e}); expected a JPEG/PNG file. Remove or "
                f"replace it."
            ) from e
        if arr.ndim == 2:
            arr = arr[..., None]
        return {"image": arr, "label": np.int32(label)}

    def __repr__(self) -> str:
        return (
            f"ImageFolderSource({str(self.root)!r}, split={self.split!r}, "
            f"{len(self)} images, {self.num_classes} classes, resolution={self.resolution})"
        )
