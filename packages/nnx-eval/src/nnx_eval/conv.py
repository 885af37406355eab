"""2-D convolution for inference, channels-last, with a backend-specific lowering.

    y[b, i, j, o] = Σ_{p, q, c} x_pad[b, s·i + p, s·j + q, c] · W[p, q, c, o]

A 1×1, stride-1, unpadded convolution is the matmul `x @ W[0, 0]`. XLA:CPU runs its convolution
emitter well below the matmul roofline for those shapes (≈ 3× slower than the equivalent dot on
the Inception 1×1 shapes, bench/README.md), so on CPU they are lowered as a dot. Strided k×k
convolutions are ≈ 2× slower again than patch extraction + one matmul
(`[B, H', W', kh·kw·C_in] @ W.reshape(kh·kw·C_in, C_out)`), so on CPU they take that form; the
stride-1 k×k ones stay convolutions (there the patches, kh·kw× the input, are memory bound and
the matmul form measured 1.3–3× slower). Other backends always get `lax.conv_general_dilated`.
"""

from __future__ import annotations

import jax
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]


def conv2d(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding
) -> jax.Array:
    """x: [B, H, W, C_in], kernel: [kh, kw, C_in, C_out] → [B, H', W', C_out] (no bias)."""
    is_pointwise = kernel.shape[:2] == (1, 1) and tuple(strides) == (1, 1)
    unpadded = all(p == (0, 0) for p in padding)
    if jax.default_backend() == "cpu" and is_pointwise and unpadded:
        return x @ kernel[0, 0]
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
