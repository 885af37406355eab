"""Reference statistics: read/write ADM and EDM `.npz` files, compute them from images.

Formats (both plain `.npz`, no pickles):

- ADM evaluator (`VIRTUAL_imagenet256_labeled.npz`): `mu [2048]`, `sigma [2048, 2048]`,
  `mu_s [2023]`, `sigma_s [2023, 2023]` (spatial `mixed_6/conv` stats for sFID), plus the
  reference images `arr_0 [N, H, W, 3] uint8` (10k for ImageNet, used for precision/recall).
- EDM-style: `mu [2048]`, `sigma [2048, 2048]` only (EDM itself pickles this dict; we write
  the same two arrays as `.npz`).

`load_reference_stats` returns `{"pool": GaussianStats, "spatial": GaussianStats}` (spatial
only when present). Image sources for `compute_reference_stats`: a folder of images, an `.npz`
with `arr_0` (read in batches without loading the whole array), or any iterable of uint8
batches / dicts with an `"image"` entry (e.g. a grain or tf.data iterator).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from nnx_eval.accumulate import MetricAccumulator
from nnx_eval.errors import InputError, StatsFormatError
from nnx_eval.stats import GaussianStats

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _stats_from(data, mu_key: str, sigma_key: str, path) -> GaussianStats:
    try:
        return GaussianStats(data[mu_key], data[sigma_key])
    except InputError as e:
        raise StatsFormatError(f"{path}: bad {mu_key}/{sigma_key}: {e}") from e


def load_reference_stats(path: str | os.PathLike) -> dict[str, GaussianStats]:
    """Read ADM (`mu, sigma, mu_s, sigma_s`) or EDM-style (`mu, sigma`) `.npz` statistics."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No reference statistics file at {path}.")
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        if not {"mu", "sigma"} <= keys:
            hint = (
                " It only holds images (arr_0): compute the stats with "
                "compute_reference_stats(npz_image_batches(path), ...)."
                if "arr_0" in keys
                else ""
            )
            raise StatsFormatError(
                f"{path} has keys {sorted(keys)}; expected 'mu' and 'sigma' (EDM) and optionally "
                f"'mu_s', 'sigma_s' (ADM).{hint}"
            )
        out = {"pool": _stats_from(data, "mu", "sigma", path)}
        if {"mu_s", "sigma_s"} <= keys:
            out["spatial"] = _stats_from(data, "mu_s", "sigma_s", path)
    return out


def save_adm_stats(path: str | os.PathLike, pool: GaussianStats, spatial: GaussianStats) -> None:
    """Write ADM-evaluator statistics (`mu, sigma, mu_s, sigma_s`, float64)."""
    np.savez(path, mu=pool.mu, sigma=pool.sigma, mu_s=spatial.mu, sigma_s=spatial.sigma)


def save_edm_stats(path: str | os.PathLike, pool: GaussianStats) -> None:
    """Write EDM-style statistics (`mu, sigma`, float64)."""
    np.savez(path, mu=pool.mu, sigma=pool.sigma)


def _read_npy_header(f, where: str) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise InputError(f"{where}: unsupported .npy format version {version}; re-save it.")
    if fortran or dtype.hasobject:
        raise InputError(f"{where} is Fortran-ordered or holds objects; re-save it C-ordered.")
    return shape, dtype


def npz_array_shape(path: str | os.PathLike, key: str = "arr_0") -> tuple[int, ...]:
    """Shape of array `key` in an `.npz`, reading only its header."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        return _read_npy_header(f, f"{path}:{key}")[0]


def npz_image_batches(
    path: str | os.PathLike, batch_size: int, key: str = "arr_0"
) -> Iterator[np.ndarray]:
    """Yield `[≤batch_size, H, W, 3]` uint8 batches of `key` in an `.npz`, streaming from disk."""
    with zipfile.ZipFile(path) as zf:
        name = f"{key}.npy"
        if name not in zf.namelist():
            raise InputError(f"{path} has no array {key!r} (entries: {zf.namelist()}).")
        with zf.open(name) as f:
            shape, dtype = _read_npy_header(f, f"{path}:{key}")
            per_item = int(np.prod(shape[1:])) * dtype.itemsize
            for start in range(0, shape[0], batch_size):
                b = min(batch_size, shape[0] - start)
                buf = f.read(b * per_item)
                if len(buf) != b * per_item:
                    raise InputError(f"{path}:{key} is truncated at item {start}.")
                yield np.frombuffer(buf, dtype).reshape(b, *shape[1:])


def folder_image_batches(folder: str | os.PathLike, batch_size: int) -> Iterator[np.ndarray]:
    """Yield uint8 RGB batches of the images in `folder` (recursive, sorted by path).

    All images must have the same size (resize/crop them beforehand with the convention of your
    reference, e.g. ADM's center crop); `InputError` names the first one that differs.
    """
    from PIL import Image

    files = sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        raise InputError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}.")
    batch: list[np.ndarray] = []
    first_shape = None
    for p in files:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"), np.uint8)
        first_shape = first_shape or arr.shape
        if arr.shape != first_shape:
            raise InputError(
                f"{p} is {arr.shape[:2]} but earlier images are {first_shape[:2]}; all images "
                "of a folder must share one size (crop/resize them first)."
            )
        batch.append(arr)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _as_batches(source: Iterable) -> Iterator[np.ndarray]:
    for item in source:
        if isinstance(item, dict):
            if "image" not in item:
                raise InputError(f"Dataset items must hold 'image'; got keys {sorted(item)}.")
            item = item["image"]
        elif isinstance(item, (tuple, list)):
            item = item[0]
        yield np.asarray(item)


def compute_reference_stats(
    source: Iterable | str | os.PathLike,
    accumulator: MetricAccumulator,
    *,
    batch_size: int = 64,
    total: int | None = None,
    progress: bool = True,
) -> dict[str, GaussianStats]:
    """Feed every image of `source` to `accumulator`; return its statistics.

    Args:
      source: a folder, an `.npz` with `arr_0`, or an iterable of uint8 `[B, H, W, 3]` batches
        (or dicts with `"image"`, or `(image, label)` tuples).
      accumulator: e.g. `MetricAccumulator(inception_feature_fn(model), stats_keys=("pool",
        "spatial"), keep_key="pool")` — its kept features are the reference points for P/R.
      batch_size: batch size when reading a folder or `.npz`.
      total: number of images, for the progress bar (found automatically for `.npz`).
      progress: show a tqdm progress bar.
    """
    from tqdm.auto import tqdm

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            batches: Iterable = folder_image_batches(path, batch_size)
        elif path.suffix == ".npz":
            total = total or npz_array_shape(path)[0]
            batches = npz_image_batches(path, batch_size)
        else:
            raise InputError(f"{path} is neither a folder nor an .npz of images.")
    else:
        batches = _as_batches(source)
    with tqdm(total=total, unit="img", disable=not progress, desc="reference stats") as bar:
        for batch in batches:
            accumulator.update(batch)
            bar.update(batch.shape[0])
    return accumulator.stats()
