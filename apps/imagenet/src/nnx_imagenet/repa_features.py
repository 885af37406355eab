"""REPA's batch encoder: raw image batches → `{"x": what the DiT learns, "x_feature": tokens}`.

REPA (Yu et al. 2025) encodes on the fly: each training batch of images in [−1, 1] goes through

    x         = SD-VAE latents (posterior mean, scaled)   or the images themselves (pixel runs)
    x_feature = DINOv2(resize_bicubic(images, R×R)).patch_tokens     [B, (R/14)², feature_dim]

(R = 224 in the paper: 16×16 = 256 tokens = the 32×32 latent grid of a patch-2 DiT). The encoder
runs jitted on this host's first local device and its outputs go back to the host before the
trainer shards the batch; `EncodedIterator` forwards the grain iterator state so resumes stay exact.

`interface.encoder` names the feature network: a registry name (`dinov2-vitb14`, weights through
`nnx_backbones.convert.dinov2.pretrained_dinov2`, which fails with the path and URL when offline)
or `random-tiny` — a 1-layer, 32-wide DINOv2 with random weights, for the offline smoke preset
only (its features mean nothing). `interface.latent_encoder` names the SD-VAE (`sd-vae-ft-ema`)
or is "" for pixel runs.
"""

import json
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from nnx_imagenet.errors import ConfigError

RANDOM_TINY = "random-tiny"
VAE_FACTOR = 8  # SD kl-f8: 8× spatial downsampling


def is_repa(config: ml_collections.ConfigDict) -> bool:
    return config.interface.get("name", "") == "imagenet.repa"


def encoder_patch_size(encoder: str) -> int:
    return 14  # every DINOv2 (released and the tiny random one)


def build_feature_net(encoder: str) -> nnx.Module:
    """The frozen DINOv2 named `encoder` (weights from the registry) or the tiny random one."""
    from nnx_backbones.dinov2 import DINOv2, DINOv2Config

    if encoder == RANDOM_TINY:
        cfg = DINOv2Config(hidden_size=32, depth=1, num_heads=2, image_size=56)
        return DINOv2(cfg, rngs=nnx.Rngs(0))
    if not encoder.startswith("dinov2-"):
        raise ConfigError(
            f"interface.encoder = {encoder!r} is not supported; expected a DINOv2 weights name "
            f"(dinov2-vit{{s,b,l,g}}14[-reg]) or {RANDOM_TINY!r} (random, smoke runs only)."
        )
    from nnx_backbones.convert.dinov2 import pretrained_dinov2

    return pretrained_dinov2(encoder)


def feature_dim_of(encoder: str) -> int:
    """Channels of the encoder's patch tokens (checked against interface.feature_dim)."""
    if encoder == RANDOM_TINY:
        return 32
    from nnx_backbones.convert.dinov2 import config_for

    return config_for(encoder).hidden_size


def make_batch_encoder(config: ml_collections.ConfigDict) -> Callable[[dict], dict]:
    """`{"x": images [b, H, W, 3] in [−1, 1], "y"}` → `{"x", "y", "x_feature"}` (NumPy)."""
    iface = config.interface
    resolution = int(iface.encoder_resolution)
    feature_net = build_feature_net(iface.encoder)
    latent_net = None
    if iface.latent_encoder:
        from nnx_backbones.convert.sd_vae import pretrained_sd_vae

        latent_net = pretrained_sd_vae(iface.latent_encoder)
    graph, params = nnx.split((feature_net, latent_net))

    @jax.jit
    def encode(params, images):
        feature_net, latent_net = nnx.merge(graph, params)
        b = images.shape[0]
        resized = jax.image.resize(images, (b, resolution, resolution, 3), "bicubic")
        feats = feature_net(resized, input_range=(-1, 1)).patch_tokens
        x = images if latent_net is None else latent_net.encode_latents(images)
        return x, feats.astype(jnp.float32)

    def apply(batch: dict) -> dict:
        images = np.asarray(batch["x"], np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ConfigError(
                f"REPA's batch encoder needs RGB image batches [b, H, W, 3] in [-1, 1]; got "
                f"x of shape {images.shape}. Use an image dataset (image_folder, tfds; the "
                f"smoke preset uses synthetic 8×8×3), not pre-encoded latents."
            )
        x, feats = encode(params, images)
        return {**batch, "x": np.asarray(x), "x_feature": np.asarray(feats)}

    return apply


def source_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Shape of one raw image the data pipeline must yield for a REPA config."""
    shape = tuple(config.data.shape)
    if config.interface.latent_encoder:
        h, w, _ = shape
        return (h * VAE_FACTOR, w * VAE_FACTOR, 3)
    return shape


class EncodedIterator:
    """`encode(batch)` for each batch of `inner`; grain iterator state forwarded (bytes, as
    grain's orbax handler expects from a non-`DatasetIterator`)."""

    def __init__(self, inner: Iterator[dict], encode: Callable[[dict], dict]):
        self.inner, self.encode = inner, encode

    def __iter__(self) -> "EncodedIterator":
        return self

    def __next__(self) -> dict:
        return self.encode(next(self.inner))

    def get_state(self) -> bytes:
        return json.dumps(self.inner.get_state()).encode()

    def set_state(self, state: Any) -> None:
        self.inner.set_state(json.loads(state) if isinstance(state, bytes | str) else state)

    def start_prefetch(self) -> None:
        if hasattr(self.inner, "start_prefetch"):
            self.inner.start_prefetch()
