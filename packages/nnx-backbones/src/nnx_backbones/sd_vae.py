"""Stable Diffusion's KL autoencoder (AutoencoderKL, f8, 4 latent channels), channels-last.

    encode:  x ∈ [−1, 1]^{H×W×3} → Encoder → quant_conv → (μ, log σ²)      [B, H/8, W/8, 4] each
    sample:  z = μ + exp(½ log σ²) ⊙ ε,  log σ² clipped to [−30, 20]      (as diffusers)
    decode:  z → post_quant_conv → Decoder → x̂ ∈ ≈[−1, 1]
    latents: z_scaled = (z − shift) · scale        SD: shift 0, scale 0.18215; or per-channel
             mean/std (`LatentScaling.from_stats`)

Encoder = conv_in, down blocks (ResNet blocks; stride-2 conv after all but the last, padded
(0, 1) on the bottom/right), mid block (ResNet, single-head self-attention, ResNet),
GroupNorm-SiLU-conv_out. The decoder mirrors it with nearest-2× upsampling + conv. GroupNorm
uses 32 groups and ε = 1e-6. Attribute names mirror the diffusers checkpoint keys
(`encoder.down_blocks.0.resnets.1.norm1`, `mid_block.attentions.0.to_q`, `to_out.0`, ...);
`nnx_backbones.convert.sd_vae` reads and writes that layout.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_backbones.errors import ShapeError


@dataclass(frozen=True)
class VAEConfig:
    """AutoencoderKL architecture; the defaults are SD's kl-f8 (sd-vae-ft-ema / ft-mse)."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    in_channels: int = 3
    out_channels: int = 3
    eps: float = 1e-6

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class LatentScaling:
    """z_scaled = (z − shift) · scale, with scalars or per-channel `[C]` tuples."""

    shift: float | tuple[float, ...] = 0.0
    scale: float | tuple[float, ...] = 0.18215

    @classmethod
    def sd(cls) -> "LatentScaling":
        """Stable Diffusion's scalar factor 0.18215."""
        return cls(0.0, 0.18215)

    @classmethod
    def from_stats(cls, mean, std) -> "LatentScaling":
        """Per-channel standardisation (z − mean_c) / std_c, e.g. from dataset latents."""
        std = np.asarray(std, np.float64)
        return cls(tuple(np.asarray(mean, np.float64).tolist()), tuple((1.0 / std).tolist()))

    def apply(self, z: jax.Array) -> jax.Array:
        return (z - jnp.asarray(self.shift, z.dtype)) * jnp.asarray(self.scale, z.dtype)

    def invert(self, z_scaled: jax.Array) -> jax.Array:
        return z_scaled / jnp.asarray(self.scale, z_scaled.dtype) + jnp.asarray(
            self.shift, z_scaled.dtype
        )


def _conv(cin, cout, k, *, dtype, rngs, stride=1, pad=None):
    p = k // 2 if pad is None else pad
    return nnx.Conv(
        cin,
        cout,
        (k, k),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        dtype=dtype,
        rngs=rngs,
    )


class ResnetBlock(nnx.Module):
    """h = conv2(SiLU(GN(conv1(SiLU(GN(x)))))); out = shortcut(x) + h."""

    def __init__(self, cin: int, cout: int, cfg: VAEConfig, *, dtype, rngs: nnx.Rngs):
        g, eps = cfg.norm_num_groups, cfg.eps
        self.norm1 = nnx.GroupNorm(cin, num_groups=g, epsilon=eps, dtype=dtype, rngs=rngs)
        self.conv1 = _conv(cin, cout, 3, dtype=dtype, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=g, epsilon=eps, dtype=dtype, rngs=rngs)
        self.conv2 = _conv(cout, cout, 3, dtype=dtype, rngs=rngs)
        self.conv_shortcut = _conv(cin, cout, 1, dtype=dtype, rngs=rngs) if cin != cout else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = self.conv2(nnx.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class AttentionBlock(nnx.Module):
    """Single-head self-attention over the H·W positions, with GroupNorm and a residual."""

    def __init__(self, c: int, cfg: VAEConfig, *, dtype, rngs: nnx.Rngs):
        self.group_norm = nnx.GroupNorm(
            c, num_groups=cfg.norm_num_groups, epsilon=cfg.eps, dtype=dtype, rngs=rngs
        )
        self.to_q = nnx.Linear(c, c, dtype=dtype, rngs=rngs)
        self.to_k = nnx.Linear(c, c, dtype=dtype, rngs=rngs)
        self.to_v = nnx.Linear(c, c, dtype=dtype, rngs=rngs)
        self.to_out = nnx.List([nnx.Linear(c, c, dtype=dtype, rngs=rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        t = self.group_norm(x).reshape(b, h * w, c)
        q, k, v = self.to_q(t), self.to_k(t), self.to_v(t)
        logits = jnp.einsum("bqc,bkc->bqk", q, k) / np.sqrt(c).astype(np.float32)
        a = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = self.to_out[0](jnp.einsum("bqk,bkc->bqc", a, v))
        return x + out.reshape(b, h, w, c)


class MidBlock(nnx.Module):
    def __init__(self, c: int, cfg: VAEConfig, *, dtype, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResnetBlock(c, c, cfg, dtype=dtype, rngs=rngs) for _ in range(2)])
        self.attentions = nnx.List([AttentionBlock(c, cfg, dtype=dtype, rngs=rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Downsample(nnx.Module):
    """Pad (0, 1) at the bottom/right, then a 3×3 conv with stride 2 (diffusers, padding=0)."""

    def __init__(self, c: int, *, dtype, rngs: nnx.Rngs):
        self.conv = _conv(c, c, 3, stride=2, pad=0, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))


class Upsample(nnx.Module):
    """Nearest-neighbour 2× then a 3×3 conv."""

    def __init__(self, c: int, *, dtype, rngs: nnx.Rngs):
        self.conv = _conv(c, c, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class DownBlock(nnx.Module):
    def __init__(self, cin, cout, cfg: VAEConfig, *, last: bool, dtype, rngs: nnx.Rngs):
        n = cfg.layers_per_block
        self.resnets = nnx.List(
            [
                ResnetBlock(cin if i == 0 else cout, cout, cfg, dtype=dtype, rngs=rngs)
                for i in range(n)
            ]
        )
        self.downsamplers = None if last else nnx.List([Downsample(cout, dtype=dtype, rngs=rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for r in self.resnets:
            x = r(x)
        return x if self.downsamplers is None else self.downsamplers[0](x)


class UpBlock(nnx.Module):
    def __init__(self, cin, cout, cfg: VAEConfig, *, last: bool, dtype, rngs: nnx.Rngs):
        n = cfg.layers_per_block + 1
        self.resnets = nnx.List(
            [
                ResnetBlock(cin if i == 0 else cout, cout, cfg, dtype=dtype, rngs=rngs)
                for i in range(n)
            ]
        )
        self.upsamplers = None if last else nnx.List([Upsample(cout, dtype=dtype, rngs=rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for r in self.resnets:
            x = r(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class Encoder(nnx.Module):
    """`[B, H, W, 3]` → `[B, H/f, W/f, 2·latent_channels]` (mean and log-variance)."""

    def __init__(self, cfg: VAEConfig, *, dtype, rngs: nnx.Rngs):
        ch = cfg.block_out_channels
        self.conv_in = _conv(cfg.in_channels, ch[0], 3, dtype=dtype, rngs=rngs)
        self.down_blocks = nnx.List(
            [
                DownBlock(ch[max(i - 1, 0)], c, cfg, last=i == len(ch) - 1, dtype=dtype, rngs=rngs)
                for i, c in enumerate(ch)
            ]
        )
        self.mid_block = MidBlock(ch[-1], cfg, dtype=dtype, rngs=rngs)
        self.conv_norm_out = nnx.GroupNorm(
            ch[-1], num_groups=cfg.norm_num_groups, epsilon=cfg.eps, dtype=dtype, rngs=rngs
        )
        self.conv_out = _conv(ch[-1], 2 * cfg.latent_channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for blk in self.down_blocks:
            x = blk(x)
        x = self.mid_block(x)
        return self.conv_out(nnx.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
    """`[B, h, w, latent_channels]` → `[B, h·f, w·f, 3]`."""

    def __init__(self, cfg: VAEConfig, *, dtype, rngs: nnx.Rngs):
        ch = tuple(reversed(cfg.block_out_channels))
        self.conv_in = _conv(cfg.latent_channels, ch[0], 3, dtype=dtype, rngs=rngs)
        self.mid_block = MidBlock(ch[0], cfg, dtype=dtype, rngs=rngs)
        self.up_blocks = nnx.List(
            [
                UpBlock(ch[max(i - 1, 0)], c, cfg, last=i == len(ch) - 1, dtype=dtype, rngs=rngs)
                for i, c in enumerate(ch)
            ]
        )
        self.conv_norm_out = nnx.GroupNorm(
            ch[-1], num_groups=cfg.norm_num_groups, epsilon=cfg.eps, dtype=dtype, rngs=rngs
        )
        self.conv_out = _conv(ch[-1], cfg.out_channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for blk in self.up_blocks:
            x = blk(x)
        return self.conv_out(nnx.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
    """SD's KL-regularised autoencoder (see the module docstring).

    Args:
      config: `VAEConfig()` for SD's kl-f8.
      scaling: latent scaling used by `encode_latents` / `decode_latents`.
      dtype: compute dtype (params stay float32).
    """

    def __init__(
        self,
        config: VAEConfig = VAEConfig(),
        *,
        scaling: LatentScaling = LatentScaling(),
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.config = config
        self.scaling = scaling
        c = config.latent_channels
        self.encoder = Encoder(config, dtype=dtype, rngs=rngs)
        self.quant_conv = _conv(2 * c, 2 * c, 1, dtype=dtype, rngs=rngs)
        self.post_quant_conv = _conv(c, c, 1, dtype=dtype, rngs=rngs)
        self.decoder = Decoder(config, dtype=dtype, rngs=rngs)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`x: [B, H, W, 3]` in [−1, 1] → (mean, logvar), each `[B, H/8, W/8, 4]`."""
        f = self.config.downsample_factor
        if (
            x.ndim != 4
            or x.shape[-1] != self.config.in_channels
            or x.shape[1] % f
            or x.shape[2] % f
        ):
            raise ShapeError(
                f"AutoencoderKL.encode expects [B, H, W, {self.config.in_channels}] with H, W "
                f"multiples of {f}; got {tuple(x.shape)}."
            )
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    @staticmethod
    def sample(mean: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
        """z = μ + σ ε with ε ~ N(0, I) drawn from `key`."""
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        return mean + jnp.exp(0.5 * logvar) * eps

    def decode(self, z: jax.Array) -> jax.Array:
        """Unscaled latents `[B, h, w, 4]` → images `[B, 8h, 8w, 3]` (≈[−1, 1])."""
        if z.ndim != 4 or z.shape[-1] != self.config.latent_channels:
            raise ShapeError(
                f"AutoencoderKL.decode expects [B, h, w, {self.config.latent_channels}] latents; "
                f"got {tuple(z.shape)}."
            )
        return self.decoder(self.post_quant_conv(z))

    def encode_latents(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Scaled latents for diffusion: sample (or the mean if `key` is None), then scale."""
        mean, logvar = self.encode(x)
        z = mean if key is None else self.sample(mean, logvar, key)
        return self.scaling.apply(z)

    def decode_latents(self, z_scaled: jax.Array) -> jax.Array:
        """Inverse of `encode_latents`: unscale, then decode."""
        return self.decode(self.scaling.invert(z_scaled))

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Reconstruction x → z → x̂ (posterior mean unless a `key` is given)."""
        mean, logvar = self.encode(x)
        return self.decode(mean if key is None else self.sample(mean, logvar, key))
