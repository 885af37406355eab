"""DINOv2 ViT (S/B/L/g, patch 14), with or without register tokens, as in HF transformers.

Forward pass (Oquab et al. 2023; registers: Darcet et al. 2024):

    x ← (x₀₁ − mean) / std                          ImageNet statistics, x₀₁ ∈ [0, 1]
    p ← PatchConv₁₄(x)                              [B, h·w, D], h = H/14, w = W/14
    z ← [cls, p] + interp(pos)                      pos learned on a 37×37 grid (518 px)
    z ← [z_cls, reg₁..reg_R, z_patches]             registers carry no position embedding
    z ← Layer_L ∘ … ∘ Layer_1(z);  out = LN(z)

`interp` is PyTorch's bicubic resize of the M×M position grid (align_corners=False, a = −0.75;
the with-registers models use the antialiased Pillow-style filter, a = −0.5), skipped when the
grid already matches and is square. Two conventions, chosen by `DINOv2Config.interpolate_offset`:

    "hf"        interpolate(size=(h, w))                      HF transformers 5.x (offset 0)
    "original"  interpolate(scale_factor=((h + 0.1)/M, (w + 0.1)/M))   facebookresearch/dinov2
                                                               hub models without registers

With a scale factor PyTorch samples the source at (i + ½)·M/(h + 0.1) − ½ rather than
(i + ½)·M/h − ½, so every resized position embedding, hence every token, differs. The hub
models with registers use offset 0 and antialias, i.e. the same numbers as HF. (Older
transformers releases used the hub's +0.1 scale factor, i.e. "original"; the fixtures pin
transformers 5.24.) EDM2's FD-DINOv2 runs the hub `dinov2_vitl14`, hence
`dinov2_config("l", interpolation="original")`.
Images come in channels-last in [−1, 1] (the project convention) unless `input_range=(0, 1)`
is passed.

Param names mirror the HF checkpoint (`embeddings.cls_token`, `encoder.layer.N.mlp.fc1`, ...);
`nnx_backbones.convert.dinov2` reads and writes that layout and also reads the hub `.pth`
layout (`blocks.N.attn.qkv`, `ls1.gamma`, ...) and transformers' in-memory names (`q_proj`).
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_backbones.errors import ShapeError
from nnx_backbones.vit import ViTLayer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DINOv2Config:
    """Architecture of one DINOv2 model (defaults: ViT-S/14 as released)."""

    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    swiglu: bool = False
    patch_size: int = 14
    image_size: int = 518  # the position grid is (image_size / patch_size)² = 37²
    num_registers: int = 0
    layer_norm_eps: float = 1e-6
    antialias_pos_interp: bool | None = None  # None: True iff num_registers > 0 (as HF)
    interpolate_offset: float = 0.0  # 0: resize to (h, w) (HF); 0.1: the hub models' scale factor

    @property
    def antialias(self) -> bool:
        if self.antialias_pos_interp is None:
            return self.num_registers > 0
        return self.antialias_pos_interp


_SIZES = {
    "s": dict(hidden_size=384, depth=12, num_heads=6),
    "b": dict(hidden_size=768, depth=12, num_heads=12),
    "l": dict(hidden_size=1024, depth=24, num_heads=16),
    "g": dict(hidden_size=1536, depth=40, num_heads=24, swiglu=True),
}


INTERPOLATIONS = ("hf", "original")


def dinov2_config(size: str, *, registers: bool = False, interpolation: str = "hf") -> DINOv2Config:
    """Released configs: `size` in {"s", "b", "l", "g"}; `registers` adds 4 register tokens.

    `interpolation="hf"` resizes position embeddings as HF transformers does, `"original"` as
    the facebookresearch/dinov2 hub models (offset 0.1 without registers; see module docstring).
    """
    if size not in _SIZES:
        raise ValueError(f"DINOv2 size must be one of {sorted(_SIZES)}; got {size!r}.")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"DINOv2 interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}."
        )
    offset = 0.1 if interpolation == "original" and not registers else 0.0
    return DINOv2Config(
        **_SIZES[size], num_registers=4 if registers else 0, interpolate_offset=offset
    )


# ----------------------------------------------------------------------------------------------
# PyTorch-compatible bicubic resize weights (static shapes, so plain NumPy at trace time).
# ----------------------------------------------------------------------------------------------
def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys cubic convolution kernel with parameter a (support |x| < 2)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(
    n_in: int, n_out: int, *, antialias: bool, scale: float | None = None
) -> np.ndarray:
    """`[n_out, n_in]` matrix M with `resize(v) = M @ v`, matching `torch.nn.functional.
    interpolate(mode="bicubic", align_corners=False, size=n_out, antialias=antialias)` in 1-D.

    `scale` is the source step per output pixel; PyTorch uses n_in / n_out when given a size
    and 1 / scale_factor when given a scale factor (the default here is the former).
    """
    scale = n_in / n_out if scale is None else scale
    m = np.zeros((n_out, n_in), np.float64)
    if not antialias:  # OpenCV-style: a = −0.75, replicate the border
        for i in range(n_out):
            src = scale * (i + 0.5) - 0.5
            x0 = int(np.floor(src))
            t = src - x0
            w = _cubic(np.array([t + 1, t, 1 - t, 2 - t]), -0.75)
            for j, wj in zip(range(x0 - 1, x0 + 3), w, strict=True):
                m[i, min(max(j, 0), n_in - 1)] += wj
        return m
    # Pillow-style: a = −0.5, kernel stretched by the scale when shrinking, renormalised.
    support = 2.0 * scale if scale >= 1 else 2.0
    inv = 1.0 / scale if scale >= 1 else 1.0
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = _cubic((j - center + 0.5) * inv, -0.5)
        m[i, lo:hi] = w / w.sum() if w.sum() != 0 else w
    return m


def resize_position_grid(
    grid: jax.Array, size: tuple[int, int], *, antialias: bool, offset: float = 0.0
) -> jax.Array:
    """Bicubic resize of a `[h, w, D]` position grid to `[size[0], size[1], D]` (see above).

    `offset > 0` resizes as `interpolate(scale_factor=((size[0] + offset) / h, ...))`, the
    facebookresearch/dinov2 convention; 0 as `interpolate(size=size)` (HF).
    """
    h, w, _ = grid.shape
    scales = [None, None]
    if offset:
        for axis, (n_in, n_out) in enumerate(((h, size[0]), (w, size[1]))):
            factor = float(n_out + offset) / n_in
            if math.floor(n_in * factor) != n_out:  # what PyTorch's output size would be
                raise ShapeError(
                    f"interpolate_offset={offset} gives a {math.floor(n_in * factor)}-long axis "
                    f"instead of {n_out}; use an offset in [0, 1)."
                )
            scales[axis] = 1.0 / factor
    mh = bicubic_matrix(h, size[0], antialias=antialias, scale=scales[0])
    mw = bicubic_matrix(w, size[1], antialias=antialias, scale=scales[1])
    mh, mw = jnp.asarray(mh, jnp.float32), jnp.asarray(mw, jnp.float32)
    out = jnp.einsum("ih,hwd->iwd", mh, grid.astype(jnp.float32))
    return jnp.einsum("jw,iwd->ijd", mw, out).astype(grid.dtype)


# ----------------------------------------------------------------------------------------------
# Network.
# ----------------------------------------------------------------------------------------------
class DINOv2Output(NamedTuple):
    """What `DINOv2.__call__` returns (all after the final LayerNorm, except `hidden`)."""

    cls_token: jax.Array  # [B, D]
    patch_tokens: jax.Array  # [B, h·w, D], row-major over the patch grid
    register_tokens: jax.Array  # [B, R, D] (R = 0 without registers)
    hidden: tuple[jax.Array, ...]  # [B, 1+R+h·w, D] after each requested layer (no final LN)


class _PatchEmbeddings(nnx.Module):
    def __init__(self, dim: int, patch: int, *, dtype, rngs: nnx.Rngs):
        self.projection = nnx.Conv(
            3, dim, (patch, patch), strides=(patch, patch), padding="VALID", dtype=dtype, rngs=rngs
        )


class _Embeddings(nnx.Module):
    def __init__(self, cfg: DINOv2Config, *, dtype, rngs: nnx.Rngs):
        d = cfg.hidden_size
        n = (cfg.image_size // cfg.patch_size) ** 2
        init = nnx.initializers.truncated_normal(0.02)
        self.cls_token = nnx.Param(init(rngs.params(), (1, 1, d), jnp.float32))
        self.mask_token = nnx.Param(jnp.zeros((1, d), jnp.float32))
        self.register_tokens = (
            nnx.Param(init(rngs.params(), (1, cfg.num_registers, d), jnp.float32))
            if cfg.num_registers
            else None
        )
        self.position_embeddings = nnx.Param(init(rngs.params(), (1, n + 1, d), jnp.float32))
        self.patch_embeddings = _PatchEmbeddings(d, cfg.patch_size, dtype=dtype, rngs=rngs)


class _Encoder(nnx.Module):
    def __init__(self, cfg: DINOv2Config, *, dtype, rngs: nnx.Rngs):
        self.layer = nnx.List(
            [
                ViTLayer(
                    cfg.hidden_size,
                    cfg.num_heads,
                    mlp_ratio=cfg.mlp_ratio,
                    swiglu=cfg.swiglu,
                    eps=cfg.layer_norm_eps,
                    dtype=dtype,
                    rngs=rngs,
                )
                for _ in range(cfg.depth)
            ]
        )


class DINOv2(nnx.Module):
    """DINOv2 feature extractor (frozen use: call it, do not train it).

    Args:
      config: `DINOv2Config`, e.g. `dinov2_config("b", registers=True)`.
      dtype: compute dtype (params stay float32).
    """

    def __init__(self, config: DINOv2Config, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = _Embeddings(config, dtype=dtype, rngs=rngs)
        self.encoder = _Encoder(config, dtype=dtype, rngs=rngs)
        self.layernorm = nnx.LayerNorm(
            config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, rngs=rngs
        )

    def preprocess(self, images: jax.Array, *, input_range: tuple[float, float] = (-1, 1)):
        """`[B, H, W, 3]` images in `input_range` → ImageNet-normalised pixels."""
        lo, hi = input_range
        x01 = (images.astype(jnp.float32) - lo) / (hi - lo)
        return (x01 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)

    def position_embeddings(self, h: int, w: int) -> jax.Array:
        """`[1, 1 + h·w, D]` position embeddings for an h×w patch grid (see module docstring)."""
        pos = self.embeddings.position_embeddings[...]
        n = pos.shape[1] - 1
        if h * w == n and h == w:
            return pos
        side = round(n**0.5)
        grid = pos[0, 1:].reshape(side, side, -1)
        grid = resize_position_grid(
            grid, (h, w), antialias=self.config.antialias, offset=self.config.interpolate_offset
        )
        return jnp.concatenate([pos[:, :1], grid.reshape(1, h * w, -1)], axis=1)

    def __call__(
        self,
        images: jax.Array,
        *,
        input_range: tuple[float, float] | None = (-1, 1),
        layers: tuple[int, ...] = (),
        final_norm_affine: bool = True,
    ) -> DINOv2Output:
        """Features of `images: [B, H, W, 3]`, H and W multiples of 14.

        Args:
          input_range: range of the input pixels, normalised with ImageNet mean/std; `None`
            means the input is already normalised.
          layers: 1-based layer indices whose raw outputs go to `DINOv2Output.hidden`.
          final_norm_affine: False drops the final LayerNorm's weight/bias (RAE's encoder).
        """
        cfg = self.config
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ShapeError(f"DINOv2 expects [B, H, W, 3] images; got {tuple(images.shape)}.")
        b, hh, ww, _ = images.shape
        p = cfg.patch_size
        if hh % p or ww % p:
            raise ShapeError(
                f"DINOv2 needs H and W that are multiples of the patch size {p}; got {hh}×{ww}. "
                f"Resize (e.g. to 224×224) first."
            )
        for k in layers:
            if not 1 <= k <= cfg.depth:
                raise ValueError(f"layers must be in 1..{cfg.depth}; got {k}.")
        x = images if input_range is None else self.preprocess(images, input_range=input_range)
        emb = self.embeddings
        z = emb.patch_embeddings.projection(x)
        h, w = hh // p, ww // p
        z = z.reshape(b, h * w, -1)
        cls = jnp.broadcast_to(emb.cls_token[...], (b, 1, z.shape[-1])).astype(z.dtype)
        z = jnp.concatenate([cls, z], axis=1) + self.position_embeddings(h, w).astype(z.dtype)
        r = cfg.num_registers
        if r:
            reg = jnp.broadcast_to(emb.register_tokens[...], (b, r, z.shape[-1])).astype(z.dtype)
            z = jnp.concatenate([z[:, :1], reg, z[:, 1:]], axis=1)
        hidden = []
        for k, layer in enumerate(self.encoder.layer, start=1):
            z = layer(z)
            if k in layers:
                hidden.append(z)
        if final_norm_affine:
            z = self.layernorm(z)
        else:
            z32 = z.astype(jnp.float32)
            mu = z32.mean(-1, keepdims=True)
            var = ((z32 - mu) ** 2).mean(-1, keepdims=True)
            z = ((z32 - mu) / jnp.sqrt(var + cfg.layer_norm_eps)).astype(z.dtype)
        return DINOv2Output(z[:, 0], z[:, 1 + r :], z[:, 1 : 1 + r], tuple(hidden))
