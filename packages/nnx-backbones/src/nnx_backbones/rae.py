"""RAE: a Representation Autoencoder (Zheng et al. 2025, "Diffusion Transformers with
Representation Autoencoders"): a frozen DINOv2-with-registers encoder, a trainable ViT decoder
(MAE style), and per-position latent normalisation.

    encode:  x ∈ [−1, 1]^{H×W×3} → resize to the encoder size (bicubic) → DINOv2 (final LayerNorm
             without affine) → patch tokens, CLS and registers dropped → z ∈ R^{h×w×C}
             (+ during decoder training: z + σ ε, σ ~ U(0, noise_tau))
             ẑ = (z − μ_{ij}) / √(σ²_{ij} + ε)          per-position statistics μ, σ² ∈ R^{h×w×C}
    decode:  z = ẑ √(σ² + ε) + μ → Linear → [cls, tokens] + 2-D sin-cos positions → ViT layers →
             LayerNorm → Linear to p²·3 per token → unpatchify → ImageNet de-normalisation →
             x̂ ∈ ≈[−1, 1]^{hp×wp×3}

The encoder is frozen: `encode` stops gradients, and only `rae.decoder` should be given to the
optimizer (e.g. `nnx.Optimizer(rae, tx, wrt=nnx.All(nnx.Param, nnx.PathContains("decoder")))`).
Statistics come from `estimate_latent_stats` over encoded training images (or a released stats
file via `set_latent_stats`). Released decoders and `stat.pt` files load with
`nnx_backbones.convert.rae.load_rae_decoder` (pinned against the release's own code).
"""

from collections.abc import Iterable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_backbones.dinov2 import IMAGENET_MEAN, IMAGENET_STD, DINOv2, DINOv2Config
from nnx_backbones.errors import ShapeError
from nnx_backbones.vit import ViTLayer


@dataclass(frozen=True)
class RAEDecoderConfig:
    """ViT decoder; defaults: the paper's ViT-XL decoder (1152 wide, 28 layers, patch 16)."""

    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4096 / 1152
    patch_size: int = 16
    out_channels: int = 3
    layer_norm_eps: float = 1e-12  # the release's ViT-MAE decoder config


def sincos_2d(dim: int, h: int, w: int) -> np.ndarray:
    """MAE's fixed 2-D sin-cos embedding `[h·w, dim]`: first half encodes the column (x),
    second half the row (y); each half is [sin(p ω_k), cos(p ω_k)], ω_k = 10000^(−2k/(dim/2))."""
    if dim % 4:
        raise ValueError(f"sin-cos embedding needs dim divisible by 4; got {dim}.")

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2))
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64))
    rows, cols = rows.T, cols.T  # [h, w], row-major token order
    return np.concatenate([one_d(dim // 2, cols), one_d(dim // 2, rows)], axis=1)


class RAEDecoder(nnx.Module):
    """Tokens `[B, h, w, C]` → ImageNet-normalised pixels `[B, h·p, w·p, 3]`."""

    def __init__(self, latent_dim: int, cfg: RAEDecoderConfig, *, dtype=jnp.float32, rngs):
        d = cfg.hidden_size
        self.config = cfg
        self.decoder_embed = nnx.Linear(latent_dim, d, dtype=dtype, rngs=rngs)
        self.cls_token = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, 1, d)))
        self.layers = nnx.List(
            [
                ViTLayer(
                    d,
                    cfg.num_heads,
                    mlp_ratio=cfg.mlp_ratio,
                    layer_scale=None,
                    eps=cfg.layer_norm_eps,
                    dtype=dtype,
                    rngs=rngs,
                )
                for _ in range(cfg.depth)
            ]
        )
        self.decoder_norm = nnx.LayerNorm(d, epsilon=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
        p = cfg.patch_size
        self.decoder_pred = nnx.Linear(d, p * p * cfg.out_channels, dtype=dtype, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        b, h, w, _ = z.shape
        cfg = self.config
        x = self.decoder_embed(z.reshape(b, h * w, -1))
        cls = jnp.broadcast_to(self.cls_token[...], (b, 1, x.shape[-1])).astype(x.dtype)
        pos = np.concatenate([np.zeros((1, x.shape[-1])), sincos_2d(x.shape[-1], h, w)])
        x = jnp.concatenate([cls, x], axis=1) + jnp.asarray(pos, x.dtype)[None]
        for layer in self.layers:
            x = layer(x)
        x = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        p, c = cfg.patch_size, cfg.out_channels
        x = x.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5)  # unpatchify
        return x.reshape(b, h * p, w * p, c)


class RAE(nnx.Module):
    """Frozen DINOv2 encoder + trainable ViT decoder + per-position latent normalisation.

    Args:
      encoder_config: DINOv2 config (the paper: ViT-B/14 with registers, `dinov2_config("b",
        registers=True)`); load its weights with `convert.dinov2.load_dinov2(rae.encoder, ...)`.
      decoder_config: `RAEDecoderConfig`.
      encoder_input_size: images are resized to this square size before encoding (224).
      noise_tau: decoder-training noise level (σ ~ U(0, noise_tau)); 0 disables it.
      eps: ε of the latent normalisation.
    """

    def __init__(
        self,
        encoder_config: DINOv2Config,
        decoder_config: RAEDecoderConfig = RAEDecoderConfig(),
        *,
        encoder_input_size: int = 224,
        noise_tau: float = 0.0,
        eps: float = 1e-5,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if encoder_input_size % encoder_config.patch_size:
            raise ShapeError(
                f"encoder_input_size {encoder_input_size} must be a multiple of the encoder patch "
                f"size {encoder_config.patch_size}."
            )
        self.encoder_input_size = encoder_input_size
        self.noise_tau = noise_tau
        self.eps = eps
        self.rngs = rngs
        g = encoder_input_size // encoder_config.patch_size
        c = encoder_config.hidden_size
        self.latent_shape = (g, g, c)
        self.encoder = DINOv2(encoder_config, dtype=dtype, rngs=rngs)
        self.decoder = RAEDecoder(c, decoder_config, dtype=dtype, rngs=rngs)
        self.latent_mean = nnx.Variable(jnp.zeros(self.latent_shape, jnp.float32))
        self.latent_var = nnx.Variable(jnp.ones(self.latent_shape, jnp.float32))

    @property
    def output_size(self) -> int:
        return self.latent_shape[0] * self.decoder.config.patch_size

    def set_latent_stats(self, mean, var) -> None:
        """Per-position statistics `[h, w, C]` (or `[C, h, w]` as RAE's stat.pt stores them)."""
        mean, var = np.asarray(mean, np.float32), np.asarray(var, np.float32)
        if mean.ndim == 4:  # [1, C, h, w]
            mean, var = mean[0], var[0]
        if mean.shape != self.latent_shape and mean.shape[1:] + mean.shape[:1] == self.latent_shape:
            mean, var = mean.transpose(1, 2, 0), var.transpose(1, 2, 0)
        if mean.shape != self.latent_shape or var.shape != self.latent_shape:
            raise ShapeError(
                f"latent stats must have shape {self.latent_shape} (h, w, C); got mean "
                f"{mean.shape}, var {var.shape}."
            )
        self.latent_mean.set_value(jnp.asarray(mean))  # also on an abstract (eval_shape) RAE
        self.latent_var.set_value(jnp.asarray(var))

    def features(self, images: jax.Array) -> jax.Array:
        """Raw (unnormalised) encoder tokens `[B, h, w, C]` of images in [−1, 1], no gradient."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ShapeError(f"RAE expects [B, H, W, 3] images; got {tuple(images.shape)}.")
        s = self.encoder_input_size
        if images.shape[1:3] != (s, s):
            images = jax.image.resize(images, (images.shape[0], s, s, 3), "cubic")
        out = self.encoder(images, final_norm_affine=False)
        g = self.latent_shape[0]
        z = out.patch_tokens.reshape(images.shape[0], g, g, -1)
        return jax.lax.stop_gradient(z)

    def normalize(self, z: jax.Array) -> jax.Array:
        """ẑ = (z − μ) / √(σ² + ε) per position."""
        return (z - self.latent_mean[...]) / jnp.sqrt(self.latent_var[...] + self.eps)

    def denormalize(self, z_hat: jax.Array) -> jax.Array:
        """z = ẑ √(σ² + ε) + μ (inverse of `normalize`)."""
        return z_hat * jnp.sqrt(self.latent_var[...] + self.eps) + self.latent_mean[...]

    def encode(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """Images `[B, H, W, 3]` in [−1, 1] → normalised latents `[B, h, w, C]`.

        With `train=True` and `noise_tau > 0`, adds σ ε (σ ~ U(0, noise_tau)) before
        normalisation, drawing from the `noise` stream (decoder training).
        """
        z = self.features(images)
        if train and self.noise_tau > 0:
            k1, k2 = jax.random.split(self.rngs.noise())
            sigma = self.noise_tau * jax.random.uniform(k1, (z.shape[0], 1, 1, 1), z.dtype)
            z = z + sigma * jax.random.normal(k2, z.shape, z.dtype)
        return self.normalize(z)

    def decode(self, z_hat: jax.Array) -> jax.Array:
        """Normalised latents `[B, h, w, C]` → images `[B, h·p, w·p, 3]` in ≈[−1, 1]."""
        if z_hat.ndim != 4 or tuple(z_hat.shape[1:]) != self.latent_shape:
            raise ShapeError(
                f"RAE.decode expects latents [B, {', '.join(map(str, self.latent_shape))}]; got "
                f"{tuple(z_hat.shape)}."
            )
        x = self.decoder(self.denormalize(z_hat))
        x01 = x * jnp.asarray(IMAGENET_STD, x.dtype) + jnp.asarray(IMAGENET_MEAN, x.dtype)
        return 2 * x01 - 1

    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """Reconstruction `decode(encode(images))`."""
        return self.decode(self.encode(images, train=train))


def estimate_latent_stats(rae: RAE, batches: Iterable[jax.Array]) -> tuple[np.ndarray, np.ndarray]:
    """Per-position mean and variance `[h, w, C]` of `rae.features` over image batches
    (float64 sums of z and z², population variance). Set them with `rae.set_latent_stats`."""
    n, s1, s2 = 0, 0.0, 0.0
    features = nnx.jit(lambda m, x: m.features(x))
    for images in batches:
        z = np.asarray(features(rae, images), np.float64)
        n += z.shape[0]
        s1 = s1 + z.sum(0)
        s2 = s2 + (z**2).sum(0)
    if n == 0:
        raise ValueError("estimate_latent_stats needs at least one batch of images.")
    mean = s1 / n
    return mean, np.maximum(s2 / n - mean**2, 0.0)
