"""Build the training stream named by `config.data` (the only place the app reads data config).

`data.name` picks the dataset (see `configs/common.py`), `data.kwargs` its options; the result is a
grain `IterDataset` of `{"x": float32 [B_host, *data.shape], "y": int32 [B_host]}` batches whose
iterator has `get_state` / `set_state` (exact resume).
"""

from typing import Any

import grain
import ml_collections
import numpy as np

from nnx_imagenet.data.digits import NUM_CLASSES, default_digits_root, write_digits_tree
from nnx_imagenet.data.image_folder import ImageFolderSource
from nnx_imagenet.data.latent_shards import LatentShardSource
from nnx_imagenet.data.moving_digits import default_moving_digits_root, write_moving_digits_tree
from nnx_imagenet.data.pipeline import HostShard, host_batch_size, make_dataset
from nnx_imagenet.data.tfds_source import TfdsSource
from nnx_imagenet.data.video_folder import RandomClip, VideoFolderSource, clip_span
from nnx_imagenet.errors import DataError


class InMemorySource:
    """Read every element of a small source once and serve it from memory (the digits)."""

    def __init__(self, source: Any):
        items = [source[i] for i in range(len(source))]
        self._items = {k: np.stack([it[k] for it in items]) for k in items[0]}
        self._n = len(items)
        self.repr = f"InMemory({source!r})"

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self._items.items()}

    def __repr__(self) -> str:
        return self.repr


class SyntheticSource:
    """Seeded Gaussian examples of `shape` with uniform labels, for smoke runs without data.

    Items look like latent-shard items: `{"latents": [2, *shape], "label"}` (index 1 mirrored).
    """

    def __init__(self, shape: tuple[int, ...], num_classes: int, num_examples: int, seed: int = 0):
        self.shape, self.num_classes, self.n, self.seed = (
            tuple(shape),
            num_classes,
            num_examples,
            seed,
        )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, index))
        z = rng.standard_normal(self.shape).astype(np.float32)
        flipped = z[:, ::-1] if len(self.shape) == 3 else z
        label = rng.integers(self.num_classes) if self.num_classes else 0
        return {"latents": np.stack([z, flipped]), "label": np.int32(label)}

    def __repr__(self) -> str:
        return f"SyntheticSource(shape={self.shape}, n={self.n})"


def _root(kw: ml_collections.ConfigDict, name: str) -> str:
    if not kw.root:
        raise DataError(
            f"data.kwargs.root is empty for data.name={name!r}; pass "
            f"--config.data.kwargs.root=/path/to/data."
        )
    return kw.root


def build_source(config: ml_collections.ConfigDict, split: str | None = None) -> tuple[Any, str]:
    """The random-access source named by `config.data` and its kind ("image", "latents" or
    "video")."""
    name, kw = config.data.name, config.data.kwargs
    if name == "digits":
        root = write_digits_tree(kw.root or default_digits_root(), held_out=kw.held_out)
        src = ImageFolderSource(root, split or kw.split, 8, channels=1)
        return InMemorySource(src), "image"
    if name == "moving_digits":
        root = write_moving_digits_tree(
            kw.root or default_moving_digits_root(), num_frames=kw.video_frames,
            videos_per_digit=kw.videos_per_digit, held_out=kw.held_out,
        )  # fmt: skip
        span = clip_span(kw.num_frames, kw.stride)
        src = VideoFolderSource(root, split or kw.split, 32, channels=1, min_frames=span)
        return InMemorySource(src), "video"
    if name == "video":
        span = clip_span(kw.num_frames, kw.stride)
        return VideoFolderSource(
            _root(kw, name), split or kw.split, kw.resolution, channels=kw.channels,
            min_frames=span,
        ), "video"  # fmt: skip
    if name == "image_folder":
        return ImageFolderSource(_root(kw, name), split or kw.split, kw.resolution), "image"
    if name == "tfds":
        return TfdsSource(
            kw.name, split or kw.split, kw.resolution, data_dir=kw.data_dir or None
        ), "image"
    if name == "latents":
        return LatentShardSource(_root(kw, name)), "latents"
    if name == "synthetic":
        src = SyntheticSource(tuple(config.data.shape), config.data.num_classes, kw.num_examples)
        return src, "latents"
    raise DataError(
        f"Unknown data.name {name!r}; expected digits, image_folder, tfds, latents, synthetic, "
        f"video, moving_digits."
    )


def check_shape(
    config: ml_collections.ConfigDict,
    source: Any,
    kind: str,
    expected: tuple[int, ...] | None = None,
) -> None:
    """Raise `DataError` if the source's examples do not have `expected` (default
    `config.data.shape`; REPA's on-the-fly VAE runs read 8× larger images)."""
    item = source[0]
    if kind == "video":  # a whole video [T, H, W, C]; the run trains on clips of num_frames
        shape = (config.data.kwargs.num_frames, *item["video"].shape[1:])
    else:
        shape = tuple(item["image"].shape if kind == "image" else item["latents"].shape[1:])
    want = tuple(config.data.shape) if expected is None else tuple(expected)
    if shape != want:
        extra = "" if expected is None else f" (config.data.shape {tuple(config.data.shape)})"
        raise DataError(
            f"{source!r} yields examples of shape {shape}, but the run expects {want}{extra}; "
            f"set --config.data.shape (or data.kwargs.resolution) or use matching data."
        )
    n_cls = getattr(source, "num_classes", None)
    if config.data.name in ("digits", "moving_digits"):
        n_cls = NUM_CLASSES
    if n_cls and config.data.num_classes and n_cls != config.data.num_classes:
        raise DataError(
            f"{source!r} has {n_cls} classes but config.data.num_classes = "
            f"{config.data.num_classes}."
        )


def build_train_dataset(
    config: ml_collections.ConfigDict,
    *,
    shard: HostShard | None = None,
    source_shape: tuple[int, ...] | None = None,
) -> grain.IterDataset:
    """The per-host training stream of `config` (shard: default this JAX process's slice;
    source_shape: one example's shape when it differs from data.shape, e.g. REPA's raw images)."""
    shard = shard or HostShard.from_jax()
    source, kind = build_source(config)
    check_shape(config, source, kind, source_shape)
    kw = config.data.kwargs
    clip = None
    if kind == "video":
        clip = RandomClip(kw.num_frames, kw.stride, random_start=kw.random_start,
                          flip=bool(kw.get("flip", False)))  # fmt: skip
    return make_dataset(
        source,
        batch_size=host_batch_size(config.data.global_batch_size, shard.count),
        seed=config.seed,
        kind=kind,
        flip=bool(kw.get("flip", False)),
        shard=shard,
        num_threads=kw.get("num_threads", 4),
        num_classes=config.data.num_classes,
        clip=clip,
    )
