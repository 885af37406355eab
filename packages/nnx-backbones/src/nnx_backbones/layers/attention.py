"""Multi-head self-attention with a merged qkv projection (timm / DiT layout).

softmax(q kᵀ / √d_h) v per head, computed by `jax.nn.dot_product_attention` so the fused kernel
(cuDNN flash attention on GPU) is used where available. Optional qk-norm (separate norms for q
and k, over each head's channels) and 2-D RoPE on q and k.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.layers.norms import make_norm
from nnx_backbones.layers.position import apply_rope


class Attention(nnx.Module):
    """`x: [B, T, D]` → `[B, T, D]`; qkv output features ordered (3, heads, head_dim)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qk_norm: str | None = None,
        implementation: str | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads = {num_heads}.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.implementation = implementation
        kw = dict(
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=nnx.initializers.xavier_uniform(),
            rngs=rngs,
        )
        self.qkv = nnx.Linear(dim, 3 * dim, **kw)
        self.proj = nnx.Linear(dim, dim, **kw)
        self.q_norm = make_norm(qk_norm, self.head_dim, param_dtype=param_dtype)
        self.k_norm = make_norm(qk_norm, self.head_dim, param_dtype=param_dtype)

    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        """`x: [B, T, D]`, `rope`: optional (cos, sin) `[T, head_dim]` tables → `[B, T, D]`."""
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each [B, T, N, Dh]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = jax.nn.dot_product_attention(q, k, v, implementation=self.implementation)
        return self.proj(out.reshape(b, t, d))
