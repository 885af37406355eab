"""Periodic work: sample grids (nnx-samplers) and generation-based metrics (nnx-eval).

- `make_sample_fn(...)` → `sample_fn(key, labels, batch_size) -> x [B, *shape]`: noise
  x_init = σ(t_noise)·n at the interface's noise end (n for interfaces without an affine path),
  integrated by the configured sampler with optional classifier-free guidance.
- `save_grid(images, labels, path)`: PNG grid, one caption per cell (the label), images in
  [−1, 1] channels-last (1 or 3 channels; 2-D data is drawn as a scatter plot; videos
  `[N, T, H, W, C]` as one row of frames per video, captioned on its first frame).
- `generation_evaluator(...)`: an evaluator `(sample_fn, step) -> {name: value}` that runs
  `nnx_eval.generate.generate` into consumers (e.g. an Inception accumulator) and reduces them.
"""

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from nnx_eval.generate import generate
from nnx_samplers.guidance import ClassifierFreeGuidance
from nnx_train import fileio

SampleFn = Callable[[jax.Array, jax.Array | None, int], jax.Array]
Evaluator = Callable[[SampleFn, int], Mapping[str, float]]


def initial_noise(interface: Any, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """x at the noise end: σ(t_noise)·n for affine paths, else n ~ N(0, I)."""
    n = jax.random.normal(key, shape, jnp.float32)
    try:
        t = jnp.full((shape[0],), interface.time_domain.noise, jnp.float32)
        _, sigma = interface.alpha_sigma(t)
    except NotImplementedError:
        return n
    return interface.bcast_right(sigma, n) * n


def make_sample_fn(
    interface_fn: Callable[[], Any],
    sampler: Any,
    data_shape: Sequence[int],
    *,
    guidance: float = 0.0,
    guidance_channels: int = 0,
) -> SampleFn:
    """`sample_fn(key, labels [B] | None, batch_size) -> samples [B, *data_shape]` (jittable).

    Args:
      interface_fn: returns the interface holding the parameters to sample with.
      sampler: an nnx-samplers sampler (`sampler.sample(key, model, x_init, y=, guidance=)`).
      guidance: classifier-free guidance scale w (0 = none; needs labels).
      guidance_channels: guide only the first k channels (DiT's `forward_with_cfg`: 3); 0 = all.
    """
    channels = guidance_channels or None

    def sample_fn(key: jax.Array, labels: jax.Array | None, batch_size: int) -> jax.Array:
        interface = interface_fn()
        k_init, k_sample = jax.random.split(key)
        batch = labels.shape[0] if labels is not None else batch_size
        x_init = initial_noise(interface, k_init, (batch, *data_shape))
        cfg = (
            ClassifierFreeGuidance(scale=guidance, channels=channels)
            if guidance and labels is not None
            else None
        )
        return sampler.sample(k_sample, interface, x_init, y=labels, guidance=cfg).x

    return sample_fn


def save_grid(
    images: np.ndarray, labels: np.ndarray | None, path: str, *, columns: int = 0, cell: int = 64
) -> None:
    """Write a PNG grid of `images` ([N, H, W, C] in [−1, 1], C ∈ {1, 3}; videos [N, T, H, W, C]
    one per row; or [N, 2] points)."""
    images = np.asarray(images, np.float32)
    if images.ndim == 5:  # videos: a row of T frames each, the label on the first frame only
        n, frames = images.shape[:2]
        images, columns = images.reshape(n * frames, *images.shape[2:]), frames
        if labels is not None:
            labels = np.where(np.arange(n * frames) % frames == 0,
                              np.repeat(np.asarray(labels), frames), -1)  # fmt: skip
    if images.ndim == 2 and images.shape[1] == 2:
        png = _scatter(images)
    else:
        png = _grid(images, labels, columns, cell)
    buffer = io.BytesIO()
    png.save(buffer, format="PNG")
    fileio.makedirs(path.rsplit("/", 1)[0] if "/" in path else ".")
    with fileio.path(path).open("wb") as f:
        f.write(buffer.getvalue())


def _grid(images, labels, columns, cell) -> Image.Image:
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    pixels = np.clip(np.floor(images * 127.5 + 128.0), 0, 255).astype(np.uint8)
    if c == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    pixels = pixels[..., :3]
    scale = max(1, cell // max(h, w))
    caption = 12 if labels is not None else 0
    canvas = Image.new("RGB", (columns * w * scale, rows * (h * scale + caption)), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, col = divmod(i, columns)
        x0, y0 = col * w * scale, r * (h * scale + caption)
        tile = Image.fromarray(pixels[i]).resize((w * scale, h * scale), Image.NEAREST)
        canvas.paste(tile, (x0, y0 + caption))
        if labels is not None and labels[i] >= 0:
            draw.text((x0 + 1, y0), str(int(labels[i])), fill="black")
    return canvas


def _scatter(points, size: int = 256) -> Image.Image:
    canvas = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(canvas)
    lim = max(float(np.abs(points).max()), 1e-6) * 1.05
    for x, y in points:
        px, py = (x / lim + 1) * size / 2, (1 - y / lim) * size / 2
        draw.ellipse((px - 1, py - 1, px + 1, py + 1), fill="black")
    return canvas


def generation_evaluator(
    make_consumers: Callable[[], Sequence[Any]],
    reduce: Callable[[Sequence[Any]], Mapping[str, float]],
    *,
    num_images: int,
    batch_size: int,
    seed: int = 0,
    num_classes: int | None = None,
    decode_fn: Callable[[jax.Array], jax.Array] | None = None,
) -> Evaluator:
    """An evaluator that generates `num_images` with `nnx_eval.generate.generate` into fresh
    consumers and returns `reduce(consumers)` (e.g. FID from an Inception accumulator)."""

    def evaluate(sample_fn: SampleFn, step: int) -> Mapping[str, float]:
        consumers = list(make_consumers())
        generate(
            lambda key, labels: sample_fn(key, labels, batch_size),
            num_images,
            batch_size=batch_size,
            seed=seed,
            num_classes=num_classes,
            decode_fn=decode_fn,
            consumers=consumers,
            progress=False,
        )
        return dict(reduce(consumers))

    return evaluate
