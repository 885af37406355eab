"""FD-DINOv2 (Stein et al. 2023): the Fréchet distance in DINOv2 ViT-L/14 feature space.

Features, as EDM2's `calculate_metrics.DINOv2Detector` (fast "torch" resize mode):

    uint8 [B, H, W, 3] → bicubic resize to 224×224 with antialias (`jax.image.resize`,
    Keys a = −0.5, = torch's `interpolate(antialias=True)`) → /255 → ImageNet mean/std
    → hub `dinov2_vitl14` → CLS token after the final LayerNorm

The network is EDM2's `torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')`, i.e. the
original hub model, whose position embeddings (37×37 grid, 16×16 at 224²) are resized with
`interpolate_offset = 0.1` (`scale_factor = 16.1/37`), not HF's `size=16`: the loader builds
`nnx_backbones.dinov2.DINOv2` with `interpolation="original"`. The weights are the same numbers
in either file: the registered `dinov2-vitl14` (HF `facebook/dinov2-large`) or the hub's
`dinov2_vitl14_pretrain.pth` via `path=`. Pinned by a golden fixture of EDM2's detector around
a hub ViT (`tests/fixtures/fd_dinov2`, rel 1e-4). dgm-eval resizes with PIL bicubic instead;
the difference is small but do not mix the two. Statistics are plain `GaussianStats` (save them
with `reference.save_edm_stats`), and the distance is `fid.fid_from_stats`.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from nnx_backbones.dinov2 import DINOv2
from nnx_eval.accumulate import MetricAccumulator
from nnx_eval.features import FeatureFn, jit_feature_fn

DINOV2_SIZE = 224
FD_DINOV2_WEIGHTS = "dinov2-vitl14"
FD_DINOV2_INTERPOLATION = "original"  # the hub model's position-embedding resize (EDM2)


def load_fd_dinov2_model(
    name: str = FD_DINOV2_WEIGHTS,
    *,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    allow_unverified: bool = False,
    interpolation: str = FD_DINOV2_INTERPOLATION,
) -> DINOv2:
    """DINOv2 with released weights via the backbones registry (ViT-L/14 by default).

    `interpolation="original"` (default) is the hub model EDM2 runs; `"hf"` gives HF
    transformers' position-embedding resize (not EDM2's numbers).
    """
    from nnx_backbones.convert.dinov2 import pretrained_dinov2

    return pretrained_dinov2(
        name,
        path=path,
        cache_dir=cache_dir,
        download=download,
        allow_unverified=allow_unverified,
        interpolation=interpolation,
    )


def preprocess_for_dinov2(images: jax.Array, size: int = DINOV2_SIZE) -> jax.Array:
    """uint8 `[B, H, W, 3]` → float32 `[B, size, size, 3]` in [0, 255], bicubic + antialias."""
    x = images.astype(jnp.float32)
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, 3), method="bicubic", antialias=True)
    return x


def dinov2_feature_fn(model: DINOv2, size: int = DINOV2_SIZE) -> FeatureFn:
    """uint8 `[B, H, W, 3]` → `{"dinov2": CLS token [B, D]}` (D = 1024 for ViT-L)."""

    def forward(m: DINOv2, images: jax.Array) -> dict[str, jax.Array]:
        out = m(preprocess_for_dinov2(images, size), input_range=(0.0, 255.0))
        return {"dinov2": out.cls_token.astype(jnp.float32)}

    return jit_feature_fn(model, forward)


def dinov2_accumulator(feature_fn: FeatureFn, *, keep: int = 0) -> MetricAccumulator:
    """Accumulator of DINOv2 CLS statistics (`stats()["dinov2"]`) for FD-DINOv2.

    `keep > 0` also stores that many feature vectors (for precision/recall or KID in DINOv2
    space).
    """
    return MetricAccumulator(
        feature_fn, stats_keys=("dinov2",), keep_key="dinov2" if keep else None, keep=keep
    )
