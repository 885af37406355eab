"""Normalisations: LayerNorm without affine (DiT's adaLN blocks) and RMSNorm (LightningDiT).

Statistics are computed in float32 whatever the compute dtype, then cast back.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """(x − mean) / sqrt(var + eps) over the last axis, no learned scale or shift."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class RMSNorm(nnx.Module):
    """x / sqrt(mean(x²) + eps) · scale over the last axis (scale initialised to one)."""

    def __init__(
        self,
        dim: int,
        *,
        eps: float = 1e-6,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        ms = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        return (x32 * jax.lax.rsqrt(ms + self.eps) * self.scale[...]).astype(x.dtype)


class LayerNorm(nnx.Module):
    """LayerNorm with a learned scale and shift (used for qk-norm)."""

    def __init__(
        self,
        dim: int,
        *,
        eps: float = 1e-6,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = layer_norm(x.astype(jnp.float32), self.eps) * self.scale[...] + self.bias[...]
        return y.astype(x.dtype)


def make_norm(kind: str | None, dim: int, *, param_dtype: jnp.dtype) -> Callable | None:
    """`"rms"` → RMSNorm, `"layer"` → affine LayerNorm, None → no norm (for qk-norm)."""
    if kind is None:
        return None
    if kind == "rms":
        return RMSNorm(dim, param_dtype=param_dtype)
    if kind == "layer":
        return LayerNorm(dim, param_dtype=param_dtype)
    raise ValueError(f"norm kind must be 'rms', 'layer' or None; got {kind!r}.")
