"""The evaluation sampling loop: N samples from a sampling *function*, sharded over all devices.

    generate(sample_fn, n, batch_size=..., seed=..., consumers=[acc])

For global batch b (samples b·B … b·B + B − 1):

1. labels — `i mod num_classes` for sample i with `equal_per_class=True` (class counts differ
   by at most one), else uniform draws from `fold_in(label_key, i)`; `None` without classes;
2. `images = sample_fn(fold_in(sample_key, b), labels)` under `jax.jit` with the labels sharded
   over a 1-D mesh of all devices (`"data"` axis) and the key replicated;
3. `decode_fn(images)` if given (e.g. a VAE decoder: latents → images in [−1, 1]);
4. uint8 conversion `floor(127.5·x + 128)` clipped to [0, 255] (EDM's rounding); a sample with
   a NaN or Inf anywhere raises `InputError` naming how many (the cast would make it a black
   image that FID / IS / sFID score quietly);
5. each process passes its own slice (its addressable shards, `jax.process_index()`) to every
   consumer: `consumer.update(images [b, H, W, 3] uint8 np, labels [b] | None, indices [b])`.

Samples depend only on (seed, batch_size, sample index), not on the number of devices or hosts:
the keys are per global batch and JAX's partitionable threefry draws the same numbers for any
sharding. The last batch is generated in full (static shapes, no recompile) and trimmed to n.
After the loop every consumer with a `sync()` method is synced (multi-host all-reduce).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nnx_eval.errors import InputError


class Consumer(Protocol):
    def update(
        self, images: np.ndarray, labels: np.ndarray | None, indices: np.ndarray
    ) -> None: ...


def to_uint8(x: jax.Array) -> jax.Array:
    """Images in [−1, 1] → uint8 via floor(127.5·x + 128), clipped (EDM's convention)."""
    return jnp.clip(jnp.floor(x * 127.5 + 128.0), 0, 255).astype(jnp.uint8)


def sample_labels(
    seed: int, indices: np.ndarray, num_classes: int, equal_per_class: bool
) -> np.ndarray:
    """Labels `[len(indices)]` int32 of the given global sample indices (see module docstring)."""
    if equal_per_class:
        return (np.asarray(indices) % num_classes).astype(np.int32)
    return np.asarray(_draw_labels(seed, jnp.asarray(indices, jnp.uint32), num_classes), np.int32)


@functools.partial(jax.jit, static_argnums=2)
def _draw_labels(seed: int, indices: jax.Array, num_classes: int) -> jax.Array:
    label_key = jax.random.fold_in(jax.random.key(seed), 1)

    def one(i):
        return jax.random.randint(jax.random.fold_in(label_key, i), (), 0, num_classes)

    return jax.vmap(one)(indices)


def _local_rows(x: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """This process's rows of a batch-sharded array and their row indices (sorted)."""
    shards = {}
    for s in x.addressable_shards:
        start = s.index[0].start or 0
        shards[start] = np.asarray(s.data)
    starts = sorted(shards)
    rows = np.concatenate([shards[s] for s in starts])
    idx = np.concatenate([np.arange(s, s + shards[s].shape[0]) for s in starts])
    return rows, idx


def generate(
    sample_fn: Callable[[jax.Array, jax.Array | None], jax.Array],
    n: int,
    *,
    batch_size: int,
    seed: int,
    num_classes: int | None = None,
    equal_per_class: bool = False,
    decode_fn: Callable[[jax.Array], jax.Array] | None = None,
    consumers: Sequence[Consumer] = (),
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
) -> int:
    """Generate `n` samples and feed them to `consumers` (see the module docstring).

    Args:
      sample_fn: `(key, labels [B] int32 | None) -> images [B, H, W, C]` in [−1, 1] (or
        latents when `decode_fn` is given); must be jittable.
      n: number of samples.
      batch_size: global batch size B; a multiple of the number of devices.
      seed: base seed; same seed and batch size → same samples on any device count.
      num_classes: number of classes for conditional models (`None`: unconditional).
      equal_per_class: labels cycle through the classes instead of being drawn at random.
      decode_fn: optional jittable `latents -> images in [−1, 1]`.
      consumers: objects with `update(images, labels, indices)` (e.g. `MetricAccumulator`).
      devices: devices of the 1-D data mesh (default `jax.devices()`, every host's).
      progress: tqdm progress bar on process 0.
    Returns:
      The number of samples generated (`n`).
    """
    from tqdm.auto import tqdm

    devices = list(devices) if devices is not None else jax.devices()
    if n < 1 or batch_size < 1 or batch_size % len(devices):
        raise InputError(
            f"generate needs n ≥ 1 and batch_size a positive multiple of the {len(devices)} "
            f"devices; got n={n}, batch_size={batch_size}. Round batch_size up to a multiple "
            f"of {len(devices)}."
        )
    if equal_per_class and num_classes is None:
        raise InputError("equal_per_class=True needs num_classes.")
    mesh = Mesh(np.asarray(devices), ("data",))
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    sample_key = jax.random.fold_in(jax.random.key(seed), 0)

    def step(key, labels):
        x = sample_fn(key, labels)
        if decode_fn is not None:
            x = decode_fn(x)
        finite = jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1)
        return to_uint8(x), finite

    step_jit = jax.jit(
        step,
        in_shardings=(replicated, batch_sharding if num_classes else None),
        out_shardings=(batch_sharding, batch_sharding),
    )
    num_batches = math.ceil(n / batch_size)
    bar = tqdm(total=n, unit="img", desc="generate", disable=not progress or jax.process_index())
    for b in range(num_batches):
        first = b * batch_size
        indices = np.arange(first, first + batch_size)
        labels_np = labels = None
        if num_classes is not None:
            labels_np = sample_labels(seed, indices, num_classes, equal_per_class)
            labels = jax.make_array_from_callback(
                (batch_size,), batch_sharding, lambda idx: labels_np[idx]
            )
        key = jax.device_put(jax.random.fold_in(sample_key, b), replicated)
        images, finite = step_jit(key, labels)
        rows, local = _local_rows(images)
        keep = first + local < n
        rows, local = rows[keep], local[keep]
        bad = int(np.sum(~_local_rows(finite)[0][keep]))
        if bad:
            bar.close()
            raise InputError(
                f"{bad} of the {len(local)} samples of batch {b} (samples {first}–"
                f"{first + batch_size - 1}) contain NaN or Inf; metrics on them would score "
                f"black images. The model or sampler diverged: check the checkpoint (its "
                f"training loss), the guidance scale and the number of sampling steps."
            )
        if rows.shape[0]:
            local_labels = None if labels_np is None else labels_np[local]
            for consumer in consumers:
                consumer.update(rows, local_labels, first + local)
        bar.update(min(batch_size, n - first))
    bar.close()
    for consumer in consumers:
        if hasattr(consumer, "sync"):
            consumer.sync()
    return n
