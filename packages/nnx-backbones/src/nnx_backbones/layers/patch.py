"""Patchify channels-last images into tokens and back, and the patch embedding (a strided conv).

Token order is row-major over the patch grid (as `Conv2d(...).flatten(2).transpose(1, 2)` in
PyTorch); within a token, features are ordered (row in patch, column in patch, channel), which is
the order DiT's final linear layer uses (`unpatchify`'s `nhwpqc`).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.errors import ShapeError


def patchify(x: jax.Array, p: int) -> jax.Array:
    """`x: [B, H, W, C]` → `[B, (H/p)·(W/p), p·p·C]`, features ordered (p_row, p_col, C)."""
    b, h, w, c = x.shape
    if h % p or w % p:
        raise ShapeError(
            f"Image size {h}×{w} is not divisible by the patch size {p}; crop or pad the input "
            f"or build the network with a patch size that divides it."
        )
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: jax.Array, grid: tuple[int, int], p: int) -> jax.Array:
    """`[B, gh·gw, p·p·C]` → `[B, gh·p, gw·p, C]` (inverse of `patchify`)."""
    b, _, d = tokens.shape
    gh, gw = grid
    c = d // (p * p)
    x = tokens.reshape(b, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * p, gw * p, c)


class PatchEmbed(nnx.Module):
    """Non-overlapping p×p patches → linear projection: a Conv2d with kernel = stride = p.

    The kernel is stored in nnx.Conv's layout `[p, p, C_in, D]` (PyTorch's `[D, C_in, p, p]`
    transposed) and applied as one matmul on the patchified input.
    """

    def __init__(
        self,
        patch_size: int,
        in_channels: int,
        hidden_size: int,
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        p = patch_size
        self.patch_size = p
        self.dtype = dtype
        # Xavier-uniform on the flattened [D, C·p·p] weight, as DiT's initialize_weights.
        init = nnx.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=3)
        self.kernel = nnx.Param(init(rngs.params(), (p, p, in_channels, hidden_size), param_dtype))
        self.bias = nnx.Param(jnp.zeros((hidden_size,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """`x: [B, H, W, C_in]` → tokens `[B, (H/p)·(W/p), D]`."""
        p = self.patch_size
        k = self.kernel[...]
        if x.shape[-1] != k.shape[2]:
            raise ShapeError(
                f"PatchEmbed expects {k.shape[2]} input channels (x: [B, H, W, {k.shape[2]}]); "
                f"got x.shape = {tuple(x.shape)}."
            )
        tokens = patchify(x.astype(self.dtype), p)
        w = k.reshape(p * p * k.shape[2], k.shape[3]).astype(self.dtype)
        return tokens @ w + self.bias[...].astype(self.dtype)
