"""Pre-norm ViT layer shared by DINOv2 and the RAE decoder, named like HF transformers' DINOv2.

One layer (DINOv2's `Block`):

    h ← h + γ₁ ⊙ Attn(LN₁(h))            (layer_scale1.lambda1 = γ₁)
    h ← h + γ₂ ⊙ FFN(LN₂(h))             (layer_scale2.lambda1 = γ₂)

with multi-head softmax attention softmax(q kᵀ/√d_head) v and FFN either
fc2(GELU(fc1(x))) or SwiGLU: weights_out(SiLU(x₁) ⊙ x₂), [x₁, x₂] = weights_in(x) (ViT-g).
Attribute names mirror the HF checkpoint keys (`attention.attention.query`,
`attention.output.dense`, `mlp.fc1`, ...) so converters map paths one to one.

Tensor parallelism (`nnx_backbones.layers.parallel`): query/key/value and fc1 are
column-parallel (heads / hidden units over "tensor"), output.dense and fc2 row-parallel, with
one all-reduce per half-layer. SwiGLU's `weights_in` keeps DINOv2's `[D, 2H]` layout (x₁ then
x₂), which a contiguous split cannot divide by hidden unit, so it stays replicated over
"tensor" (its output is split locally, without communication).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.layers.attention import folded_attention
from nnx_backbones.layers.fusion import fusion_boundary
from nnx_backbones.layers.parallel import replicated, split


def swiglu_hidden_dim(hidden_size: int, mlp_ratio: float) -> int:
    """DINOv2's SwiGLU width: ⌊(⌊D·r⌋·2/3)⌋ rounded up to a multiple of 8 (4096 for ViT-g)."""
    hidden = int(hidden_size * mlp_ratio)
    return (int(hidden * 2 / 3) + 7) // 8 * 8


def multi_head_attention(q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int) -> jax.Array:
    """Softmax attention. q, k, v: `[B, T, D]` → `[B, T, D]`, heads split along D."""
    b, t, d = q.shape
    q, k, v = (split(a.reshape(b, -1, num_heads, d // num_heads), axis=2) for a in (q, k, v))
    return split(folded_attention(q, k, v), axis=2).reshape(b, t, d)


class _QKV(nnx.Module):
    def __init__(self, dim: int, *, qkv_bias: bool, dtype, rngs: nnx.Rngs):
        kw = dict(use_bias=qkv_bias, dtype=dtype, rngs=rngs)
        self.query = nnx.Linear(dim, dim, **kw)
        self.key = nnx.Linear(dim, dim, **kw)
        self.value = nnx.Linear(dim, dim, **kw)


class _Dense(nnx.Module):
    def __init__(self, dim: int, *, dtype, rngs: nnx.Rngs):
        self.dense = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)


class Attention(nnx.Module):
    """Self-attention: `attention.{query,key,value}` then `output.dense`."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, dtype, rngs):
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.attention = _QKV(dim, qkv_bias=qkv_bias, dtype=dtype, rngs=rngs)
        self.output = _Dense(dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        a = self.attention
        h = multi_head_attention(a.query(x), a.key(x), a.value(x), self.num_heads)
        return replicated(self.output.dense(h))


class LayerScale(nnx.Module):
    """Per-channel scale γ (DINOv2 LayerScale), stored as `lambda1`."""

    def __init__(self, dim: int, init: float = 1.0):
        self.lambda1 = nnx.Param(jnp.full((dim,), init, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.lambda1[...].astype(x.dtype)


class GeluMLP(nnx.Module):
    """fc2(GELU(fc1(x))) with exact (erf) GELU."""

    def __init__(self, dim: int, hidden: int, *, dtype, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return replicated(self.fc2(split(jax.nn.gelu(self.fc1(x), approximate=False))))


class SwiGLU(nnx.Module):
    """weights_out(SiLU(x₁) ⊙ x₂) with [x₁, x₂] = weights_in(x) split in halves."""

    def __init__(self, dim: int, hidden: int, *, dtype, rngs: nnx.Rngs):
        self.weights_in = nnx.Linear(dim, 2 * hidden, dtype=dtype, rngs=rngs)
        self.weights_out = nnx.Linear(hidden, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x1, x2 = jnp.split(self.weights_in(x), 2, axis=-1)
        return replicated(self.weights_out(split(jax.nn.silu(x1) * x2)))


class ViTLayer(nnx.Module):
    """One pre-norm transformer layer (see the module docstring). x: `[B, T, D]` → `[B, T, D]`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        swiglu: bool = False,
        layer_scale: float | None = 1.0,
        qkv_bias: bool = True,
        eps: float = 1e-6,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.norm1 = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)
        self.attention = Attention(dim, num_heads, qkv_bias=qkv_bias, dtype=dtype, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, rngs=rngs)
        if swiglu:
            self.mlp = SwiGLU(dim, swiglu_hidden_dim(dim, mlp_ratio), dtype=dtype, rngs=rngs)
        else:
            self.mlp = GeluMLP(dim, int(dim * mlp_ratio), dtype=dtype, rngs=rngs)
        has_scale = layer_scale is not None
        self.layer_scale1 = LayerScale(dim, layer_scale) if has_scale else None
        self.layer_scale2 = LayerScale(dim, layer_scale) if has_scale else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = fusion_boundary(replicated(x))  # an exact identity: see layers.fusion
        h = self.attention(self.norm1(x))
        x = fusion_boundary(x + (self.layer_scale1(h) if self.layer_scale1 is not None else h))
        h = self.mlp(self.norm2(x))
        return x + (self.layer_scale2(h) if self.layer_scale2 is not None else h)
