"""Position information for patch tokens: the fixed 2-D sin-cos table and 2-D rotary embedding.

`sincos_pos_embed_2d` reproduces MAE/DiT's `get_2d_sincos_pos_embed` exactly (including its
quirk that the first half of the channels encodes the column index w and the second half the
row index h). `rope_2d` is EVA/LightningDiT's `VisionRotaryEmbeddingFast`: the first half of each
head's channels rotates with the row h, the second half with the column w, in adjacent pairs.
`rope_2d_interleaved_grid` is DDT's (MCG-NJU) `precompute_freqs_cis_2d`: pair 2k rotates with
the column, pair 2k+1 with the row, both at frequency θ^(−4k/head_dim), positions spread over
[0, scale] (linspace) whatever the grid size. `rope_1d` rotates every channel pair with one
position (the frame index of the video DiT): at position 0 it is the identity.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """[M] positions → [M, dim]: [sin(pos·ω), cos(pos·ω)], ω_i = 10000^(−2i/dim)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int]) -> np.ndarray:
    """Fixed 2-D sin-cos position table `[gh·gw, dim]` (float32), row-major token order."""
    gh, gw = grid
    w_pos, h_pos = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
    table = np.concatenate([_sincos_1d(dim // 2, w_pos), _sincos_1d(dim // 2, h_pos)], axis=1)
    return table.astype(np.float32)


def rope_2d(
    head_dim: int, pos_h: jax.Array, pos_w: jax.Array, *, theta: float = 10_000.0
) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables `[T, head_dim]` for tokens at rows `pos_h: [T]` and columns `pos_w: [T]`.

    Each axis gets head_dim/2 channels with frequencies θ^(−2i/(head_dim/2)), each frequency used
    by an adjacent channel pair: angle[2i] = angle[2i+1] = pos·f_i.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4; got head_dim = {head_dim}.")
    axis_dim = head_dim // 2
    freqs = 1.0 / theta ** (jnp.arange(0, axis_dim, 2, dtype=jnp.float32) / axis_dim)
    freqs = jnp.repeat(freqs, 2)  # (f0, f0, f1, f1, ...)
    angles = jnp.concatenate(
        [pos_h.astype(jnp.float32)[:, None] * freqs, pos_w.astype(jnp.float32)[:, None] * freqs],
        axis=-1,
    )
    return jnp.cos(angles), jnp.sin(angles)


def rope_1d(
    head_dim: int, pos: jax.Array, *, theta: float = 10_000.0
) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables `[T, head_dim]` for tokens at positions `pos: [T]`: channel pair i turns by
    pos·θ^(−2i/head_dim) (angle[2i] = angle[2i+1])."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim; got head_dim = {head_dim}.")
    freqs = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles = pos.astype(jnp.float32)[:, None] * jnp.repeat(freqs, 2)
    return jnp.cos(angles), jnp.sin(angles)


def rope_2d_grid(head_dim: int, grid: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """`rope_2d` for the row-major token order of a `gh × gw` patch grid."""
    gh, gw = grid
    h, w = jnp.meshgrid(jnp.arange(gh), jnp.arange(gw), indexing="ij")
    return rope_2d(head_dim, h.reshape(-1), w.reshape(-1))


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate adjacent channel pairs: `x: [B, T, N, Dh]`, `cos, sin: [T, Dh]` → like x.

    (x_{2i}, x_{2i+1}) ↦ (x_{2i} cos − x_{2i+1} sin, x_{2i+1} cos + x_{2i} sin).
    """
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    cos, sin = cos[:, None, :].astype(x.dtype), sin[:, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def rope_2d_interleaved_grid(
    head_dim: int, grid: tuple[int, int], *, theta: float = 10_000.0, scale: float = 16.0
) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables `[gh·gw, head_dim]` of DDT's 2-D RoPE (row-major tokens): channel pair
    (4k, 4k+1) turns by x·f_k, pair (4k+2, 4k+3) by y·f_k, f_k = θ^(−4k/head_dim),
    x = linspace(0, scale, gw)[column], y = linspace(0, scale, gh)[row]."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4; got head_dim = {head_dim}.")
    gh, gw = grid
    y, x = jnp.meshgrid(jnp.linspace(0.0, scale, gh), jnp.linspace(0.0, scale, gw), indexing="ij")
    freqs = 1.0 / theta ** (jnp.arange(0, head_dim, 4, dtype=jnp.float32) / head_dim)
    angles = jnp.stack([x.reshape(-1, 1) * freqs, y.reshape(-1, 1) * freqs], axis=-1)  # [T, k, 2]
    angles = jnp.repeat(angles.reshape(gh * gw, -1), 2, axis=-1)  # each pair's angle twice
    return jnp.cos(angles), jnp.sin(angles)
