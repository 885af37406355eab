"""adaLN(-Zero) transformer block and final layer (DiT, Peebles & Xie 2023, Fig. 3).

Block, with a condition c already passed through SiLU (per example `[B, Dc]` or per token
`[B, T, Dc]`):
    (shift₁, scale₁, gate₁, shift₂, scale₂, gate₂) = Linear(c)            (chunk order as DiT)
    x ← x + gate₁ · Attn(modulate(Norm(x), shift₁, scale₁))
    x ← x + gate₂ · MLP(modulate(Norm(x), shift₂, scale₂))
with modulate(x, shift, scale) = x · (1 + scale) + shift. Without shift (LightningDiT's
`wo_shift`) the Linear has 4 chunks (scale₁, gate₁, scale₂, gate₂). The modulation Linear is
zero-initialised (adaLN-Zero), so every block starts as the identity. The residual stream
passes a `fusion_boundary` (an exact identity) before each addition, so XLA:CPU computes it
once per block instead of once per consumer.

Parallelism (`layers.parallel`): the residual stream is pinned to (batch, context, replicated
features); attention and MLP are Megatron column → row pairs; the modulation Linear is
column-parallel and its small `[B, k·D]` output is gathered (an all-gather of activations, not of
weights). `causal_block` passes a frame-causal mask to the attention (the video DiT).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.layers.attention import Attention
from nnx_backbones.layers.feedforward import GeluMLP, SwiGLU, swiglu_hidden
from nnx_backbones.layers.fusion import fusion_boundary
from nnx_backbones.layers.norms import RMSNorm, layer_norm
from nnx_backbones.layers.parallel import gathered, replicated


def modulate(x: jax.Array, shift: jax.Array | None, scale: jax.Array) -> jax.Array:
    """x · (1 + scale) + shift; shift/scale `[B, D]` broadcast over tokens, or `[B, T, D]`."""
    if scale.ndim == 2:
        scale = scale[:, None]
        shift = None if shift is None else shift[:, None]
    y = x * (1 + scale)
    return y if shift is None else y + shift


def _zero_linear(d_in: int, d_out: int, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nnx.initializers.zeros,
        rngs=rngs,
    )


class _Norm(nnx.Module):
    """LayerNorm without affine (DiT) or RMSNorm with scale (LightningDiT), eps = 1e-6."""

    def __init__(self, dim: int, use_rmsnorm: bool, param_dtype):
        self.rms = RMSNorm(dim, param_dtype=param_dtype) if use_rmsnorm else None

    def __call__(self, x: jax.Array) -> jax.Array:
        return layer_norm(x) if self.rms is None else self.rms(x)


class AdaLNBlock(nnx.Module):
    """One adaLN transformer block (see the module docstring).

    Args:
      dim, num_heads, mlp_ratio: width, heads, MLP hidden = mlp_ratio · dim.
      cond_dim: width of the condition (default `dim`).
      use_rmsnorm, use_swiglu, qk_norm, wo_shift: LightningDiT options (all off = DiT).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        cond_dim: int | None = None,
        use_rmsnorm: bool = False,
        use_swiglu: bool = False,
        qk_norm: str | None = None,
        wo_shift: bool = False,
        attn_implementation: str | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.wo_shift = wo_shift
        self.norm1 = _Norm(dim, use_rmsnorm, param_dtype)
        self.attn = Attention(
            dim, num_heads, qk_norm=qk_norm, implementation=attn_implementation, **kw
        )
        self.norm2 = _Norm(dim, use_rmsnorm, param_dtype)
        if use_swiglu:
            self.mlp = SwiGLU(dim, swiglu_hidden(dim, mlp_ratio), **kw)
        else:
            self.mlp = GeluMLP(dim, int(dim * mlp_ratio), **kw)
        chunks = 4 if wo_shift else 6
        self.adaLN_modulation = _zero_linear(
            cond_dim or dim, chunks * dim, dtype, param_dtype, rngs
        )

    def __call__(
        self,
        x: jax.Array,
        c: jax.Array,
        rope: tuple[jax.Array, jax.Array] | None = None,
        *,
        causal_block: int | None = None,
        causal_window: int | None = None,
        cache: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    ) -> jax.Array | tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """`x: [B, T, D]`, `c: [B, Dc]` or `[B, T, Dc]` (after SiLU) → `[B, T, D]`;
        `causal_block`: tokens per causal block (frame) for the attention, None = full;
        `causal_window`: earlier blocks (frames) visible, None = all;
        `cache`: the attention's KV cache (`Attention`), then → `(out, (k, v))`."""
        mod = gathered(self.adaLN_modulation(c))
        mod = jnp.split(mod, 4 if self.wo_shift else 6, axis=-1)
        if self.wo_shift:
            (scale1, gate1, scale2, gate2), shift1, shift2 = mod, None, None
        else:
            shift1, scale1, gate1, shift2, scale2, gate2 = mod
        if gate1.ndim == 2:
            gate1, gate2 = gate1[:, None], gate2[:, None]
        x = fusion_boundary(replicated(x))
        h = self.attn(
            modulate(self.norm1(x), shift1, scale1),
            rope,
            causal_block=causal_block,
            causal_window=causal_window,
            cache=cache,
        )
        if cache is not None:
            h, kv = h
        x = fusion_boundary(x + gate1 * h)
        out = x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return out if cache is None else (out, kv)


class FinalLayer(nnx.Module):
    """Norm → modulate(shift, scale) → Linear to p·p·C_out features (both Linears zero-init)."""

    def __init__(
        self,
        dim: int,
        out_features: int,
        *,
        cond_dim: int | None = None,
        use_rmsnorm: bool = False,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.norm_final = _Norm(dim, use_rmsnorm, param_dtype)
        self.linear = _zero_linear(dim, out_features, dtype, param_dtype, rngs)
        self.adaLN_modulation = _zero_linear(cond_dim or dim, 2 * dim, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        """`x: [B, T, D]`, `c: [B, Dc]` or `[B, T, Dc]` (after SiLU) → `[B, T, out_features]`."""
        shift, scale = jnp.split(gathered(self.adaLN_modulation(c)), 2, axis=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))
