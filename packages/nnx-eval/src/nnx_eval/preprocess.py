"""Pinned image preprocessing for the FID Inception (pytorch-fid convention).

    uint8 [B, H, W, 3]  →  x / 255  →  bilinear resize to 299×299  →  2·x − 1 ∈ [−1, 1]

The resize is `jax.image.resize(..., method="bilinear", antialias=False)`: half-pixel centres,
a 2-tap triangle filter, edge samples clamped — the same numbers as pytorch-fid's
`F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)` (no antialias), up to
float32 rounding (tested against a NumPy implementation of the PyTorch formula). Images already
299×299 pass through unchanged.

Known differences from other references (they shift FID by a few tenths, so do not mix them):
- ADM's TF evaluator feeds uint8 to the TF graph, which resizes with TF1 `resize_bilinear`
  (`align_corners=False`, *no* half-pixel offset) and maps to [−1, 1) with (x − 128) / 128.
- clean-fid resizes with PIL bicubic + antialias before the network.
For 256×256 ImageNet samples the three differ only in the resize; use the same convention for
reference statistics and samples (`nnx_eval.reference` always uses this one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nnx_eval.errors import InputError

INCEPTION_SIZE = 299


def check_uint8_images(images: np.ndarray | jax.Array, name: str = "images") -> None:
    """Raise `InputError` unless `images` is uint8 `[B, H, W, 3]`."""
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] != 3 or images.dtype != np.uint8:
        raise InputError(
            f"{name} must be uint8 [B, H, W, 3] (channels-last RGB in 0..255); got dtype "
            f"{images.dtype} shape {shape}. Convert with nnx_eval.generate.to_uint8 (from [−1, 1]) "
            "or np.asarray(img, np.uint8); grayscale needs np.repeat(x, 3, axis=-1)."
        )


def preprocess_for_inception(images: jax.Array, size: int = INCEPTION_SIZE) -> jax.Array:
    """uint8 `[B, H, W, 3]` → float32 `[B, size, size, 3]` in [−1, 1] (see module docstring)."""
    check_uint8_images(images)
    x = images.astype(jnp.float32) / 255.0
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, 3), method="bilinear", antialias=False)
    return 2.0 * x - 1.0
