"""Jitted feature extractors: uint8 image batches in, host NumPy features out.

A *feature function* maps uint8 `[B, H, W, 3]` (NumPy or JAX) to `{name: np.ndarray [B, ...]}`.
`inception_feature_fn` wraps `InceptionV3FID` (preprocessing included). Batches are padded to
the largest batch size seen so far, so a short last batch does not trigger a recompile, and the
padding rows are dropped from the output.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from nnx_eval.inception import InceptionV3FID
from nnx_eval.inception_fold import fold_inception, is_folded
from nnx_eval.preprocess import INCEPTION_SIZE, check_uint8_images, preprocess_for_inception

FeatureFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def jit_feature_fn(
    model: nnx.Module, forward: Callable[[nnx.Module, jax.Array], dict[str, jax.Array]]
) -> FeatureFn:
    """`forward(model, uint8 images) -> dict` compiled once per padded batch shape."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, images):
        return forward(nnx.merge(graphdef, state), images)

    largest = 0

    def feature_fn(images) -> dict[str, np.ndarray]:
        nonlocal largest
        check_uint8_images(images)
        images = np.asarray(images)
        b = images.shape[0]
        largest = max(largest, b)
        if b < largest:
            pad = np.zeros((largest - b, *images.shape[1:]), images.dtype)
            images = np.concatenate([images, pad])
        out = run(state, images)
        return {k: np.asarray(v)[:b] for k, v in out.items()}

    return feature_fn


def inception_feature_fn(
    model: InceptionV3FID, size: int = INCEPTION_SIZE, *, fold: bool = True
) -> FeatureFn:
    """uint8 `[B, H, W, 3]` → `{pool [B, 2048], spatial [B, 2023], logits, logits_unbiased}`.

    `size` is the resize target: 299 for every reference number; smaller (≥ 75) only for tests.
    `fold` (default) runs the inference form of the network (`nnx_eval.inception_fold`: BatchNorm
    folded into the convs once here, sibling 1×1 convs fused into one matmul, 1×1 convs as dots
    on CPU), the same function to float32 rounding; `fold=False` runs `model` as loaded.
    """
    if fold and not is_folded(model):
        model = fold_inception(model)
    return jit_feature_fn(model, lambda m, images: m(preprocess_for_inception(images, size)))
