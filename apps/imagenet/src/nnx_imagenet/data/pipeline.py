"""The grain pipeline: shard per host → shuffle (reseeded each epoch) → repeat → flip → batch.

    source ─ [i::n] per JAX process ─ shuffle(seed) ─ repeat ─ flip(seed) ─ batch ─ to [−1, 1]

Every random choice comes from grain's seeded, index-keyed generators, so the stream depends only on
(seed, process index, process count) and resuming from `iterator.get_state()` continues the exact
order (`iterator.set_state(state)`). Batches are `{"x": float32 [B, H, W, C], "y": int32 [B]}`:
images mapped from uint8 to [−1, 1], latents passed through (already scaled). Videos
(kind="video") take a clip per example in place of the flip (`video_folder.RandomClip`:
random start, temporal stride, optional flip) and batch to `[B, F, H, W, C]` in [−1, 1].
"""

import dataclasses
from typing import Any

import grain
import numpy as np

from nnx_imagenet.errors import DataError


@dataclasses.dataclass(frozen=True)
class HostShard:
    """Which slice of the data this process reads: examples `index, index + count, ...`."""

    index: int = 0
    count: int = 1

    @classmethod
    def from_jax(cls) -> "HostShard":
        """This JAX process's shard (grain's `ShardByJaxProcess`)."""
        opts = grain.sharding.ShardByJaxProcess(drop_remainder=True)
        return cls(opts.shard_index, opts.shard_count)


def flip_image(element: dict, rng: np.random.Generator) -> dict:
    """Random horizontal flip with probability 1/2 of an `{"image": [H, W, C]}` element."""
    image = element["image"]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return {"x": np.ascontiguousarray(image), "y": element["label"]}


def no_flip_image(element: dict) -> dict:
    return {"x": element["image"], "y": element["label"]}


def pick_latent(element: dict, rng: np.random.Generator) -> dict:
    """Pick the stored latent or its flipped copy with probability 1/2 each."""
    return {"x": element["latents"][int(rng.random() < 0.5)], "y": element["label"]}


def first_latent(element: dict) -> dict:
    return {"x": element["latents"][0], "y": element["label"]}


def images_to_float(batch: dict) -> dict:
    """uint8 `[B, H, W, C]` (or videos `[B, F, H, W, C]`) → float32 in [−1, 1]: x / 127.5 − 1."""
    return {"x": batch["x"].astype(np.float32) / 127.5 - 1.0, "y": batch["y"]}


class CheckLabels:
    """Batch map raising `DataError` when a label leaves [0, num_classes): out-of-range labels
    would index past the label embedding (NaN under jit) and the run would blame the lr."""

    def __init__(self, num_classes: int, source: str):
        self.num_classes, self.source = num_classes, source

    def __call__(self, batch: dict) -> dict:
        y = np.asarray(batch["y"])
        bad = (y < 0) | (y >= self.num_classes)
        if bad.any():
            raise DataError(
                f"{self.source} yields labels outside [0, {self.num_classes}) "
                f"(data.num_classes = {self.num_classes}): {sorted(set(y[bad].tolist()))[:5]} "
                f"in a batch of {y.size}. Set --config.data.num_classes (and model.num_classes) "
                f"to the dataset's class count, or fix the labels."
            )
        return batch


def make_dataset(
    source: Any,
    *,
    batch_size: int,
    seed: int,
    kind: str = "image",
    flip: bool = True,
    shard: HostShard | None = None,
    shuffle: bool = True,
    num_epochs: int | None = None,
    num_threads: int = 8,
    prefetch_buffer_size: int = 64,
    num_classes: int = 0,
    clip: Any = None,
) -> grain.IterDataset:
    """Build the training stream over a random-access `source`.

    Args:
      source: `ImageFolderSource` / `TfdsSource` (kind="image") or `LatentShardSource`
        (kind="latents").
      batch_size: examples per batch *on this host* (global batch / process count).
      seed: seed of the shuffle and the flips.
      flip: random horizontal flips (images) / random choice of the flipped latent copy.
      shard: this host's slice; None = `HostShard.from_jax()`.
      shuffle: global shuffle, reseeded each epoch.
      num_epochs: None repeats forever (training); an int stops after that many passes.
      num_threads, prefetch_buffer_size: grain read threads and their buffer.
      num_classes: > 0: every batch's labels are checked to lie in [0, num_classes).
      clip: kind="video": the `video_folder.RandomClip` taking each example's clip (and flip).

    Returns:
      A grain `IterDataset`; `it = iter(ds)` yields `{"x", "y"}` batches and has
      `it.get_state()` / `it.set_state(state)` for exact resume.
    """
    if kind not in ("image", "latents", "video"):
        raise DataError(f"kind must be 'image', 'latents' or 'video'; got {kind!r}.")
    if (kind == "video") != (clip is not None):
        raise DataError("kind='video' needs clip=RandomClip(...) (and only videos take one).")
    shard = shard or HostShard.from_jax()
    n = len(source)
    per_host = n // shard.count
    if per_host < batch_size:
        raise DataError(
            f"This host's shard holds {per_host} examples ({n} in {source!r} split over "
            f"{shard.count} hosts) but a host batch needs {batch_size}; use a smaller batch."
        )
    ds = grain.MapDataset.source(source)
    # Even per-host split: host k reads k, k + count, ... (the remainder is dropped).
    ds = ds[shard.index : per_host * shard.count : shard.count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if kind == "image":
        ds = ds.random_map(flip_image, seed=seed + 1) if flip else ds.map(no_flip_image)
    elif kind == "video":
        ds = ds.random_map(clip, seed=seed + 1)
    else:
        ds = ds.random_map(pick_latent, seed=seed + 1) if flip else ds.map(first_latent)
    ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
    )
    ds = ds.batch(batch_size, drop_remainder=True)
    if kind in ("image", "video"):
        ds = ds.map(images_to_float)
    if num_classes > 0:
        ds = ds.map(CheckLabels(num_classes, repr(source)))
    return ds


def host_batch_size(global_batch: int, process_count: int) -> int:
    """The per-host batch; raises `DataError` unless `global_batch` divides evenly."""
    if global_batch % process_count:
        raise DataError(
            f"Global batch {global_batch} is not divisible by the {process_count} processes; "
            f"choose a multiple of {process_count}."
        )
    return global_batch // process_count
