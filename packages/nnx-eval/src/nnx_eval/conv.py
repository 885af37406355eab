"""2-D convolution for inference, channels-last, with a backend-specific lowering.

    y[b, i, j, o] = Σ_{p, q, c} x_pad[b, s·i + p, s·j + q, c] · W[p, q, c, o]

A 1×1, stride-1, unpadded convolution is the matmul `x @ W[0, 0]`. XLA:CPU runs its convolution
emitter well below the matmul roofline for those shapes (≈ 3× slower than the equivalent dot on
the Inception 1×1 shapes, bench/README.md), so on CPU they are lowered as a dot. Strided k×k
convolutions are ≈ 2× slower again than patch extraction + one matmul
(`[B, H', W', kh·kw·C_in] @ W.reshape(kh·kw·C_in, C_out)`), so on CPU they take that form.
Stride-1 k×k convolutions with few input channels on a large grid (C_in ≤ 80, H ≥ 64: the
Inception stem) run as kh matmuls over row patches (kw shifted copies side by side,
K = kw·C_in): `Σ_p rows[:, p : p + H'] @ W[p].reshape(kw·C_in, C_out)` (the whole network 1.13×
faster than with XLA's convolution there); the other stride-1 k×k ones stay convolutions
(full patches, kh·kw× the input, are memory bound: 1.3–3× slower). Other backends always get
`lax.conv_general_dilated`.
"""

from __future__ import annotations

import jax
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]
ROW_PATCH_MAX_CHANNELS = 80  # stride-1 k×k convs with C_in ≤ this and H ≥ the next: row patches
ROW_PATCH_MIN_SIZE = 64


def conv2d(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding
) -> jax.Array:
    """x: [B, H, W, C_in], kernel: [kh, kw, C_in, C_out] → [B, H', W', C_out] (no bias)."""
    is_pointwise = kernel.shape[:2] == (1, 1) and tuple(strides) == (1, 1)
    unpadded = all(p == (0, 0) for p in padding)
    if jax.default_backend() == "cpu" and is_pointwise and unpadded:
        return x @ kernel[0, 0]
    row_patches = (
        min(kernel.shape[:2]) > 1
        and kernel.shape[2] <= ROW_PATCH_MAX_CHANNELS
        and x.shape[1] >= ROW_PATCH_MIN_SIZE
        and tuple(strides) == (1, 1)
    )
    if jax.default_backend() == "cpu" and row_patches:
        return _row_patch_conv(x, kernel, padding)
    if jax.default_backend() == "cpu" and max(strides) > 1:
        patches = _patches(x, padding, kernel.shape[:2], strides)
        return patches @ kernel.reshape(-1, kernel.shape[-1])
    return lax.conv_general_dilated(
        x, kernel, tuple(strides), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _patches(
    x: jax.Array, padding: Padding, window: tuple[int, int], strides: tuple[int, int]
) -> jax.Array:
    """[B, H, W, C] → [B, H', W', kh·kw·C], ordered (p, q, c) like `W.reshape(-1, C_out)`."""
    (kh, kw), (sh, sw) = window, strides
    x = jax.numpy.pad(x, ((0, 0), *padding, (0, 0)))
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    cols = [
        x[:, p : p + sh * (ho - 1) + 1 : sh, q : q + sw * (wo - 1) + 1 : sw, :]
        for p in range(kh)
        for q in range(kw)
    ]
    return jax.numpy.concatenate(cols, axis=-1)


def _row_patch_conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
    """Stride-1 conv as kh matmuls over row patches `[B, H_pad, W', kw·C_in]`."""
    kh, kw, c_in, c_out = kernel.shape
    x = jax.numpy.pad(x, ((0, 0), *padding, (0, 0)))
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    rows = jax.numpy.concatenate([x[:, :, q : q + wo, :] for q in range(kw)], axis=-1)
    out = rows[:, 0:ho] @ kernel[0].reshape(kw * c_in, c_out)
    for p in range(1, kh):
        out = out + rows[:, p : p + ho] @ kernel[p].reshape(kw * c_in, c_out)
    return out
