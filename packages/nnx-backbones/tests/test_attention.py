"""Attention paths agree: the CPU "folded" path against a NumPy softmax reference and against
`jax.nn.dot_product_attention`, values and gradients; bad implementation names are rejected."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.layers.attention import Attention, folded_attention, multi_head_attention


def _reference(q, k, v):
    """NumPy float64 softmax(q kᵀ / √d) v per head; q: [B, T, N, d], k, v: [B, S, N, d]."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("btnd,bsnd->bnts", q, k) / np.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnd->btnd", w, v)


def _qkv(t=5, s=7, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), 3)
    shapes = [(2, t, 3, 8), (2, s, 3, 8), (2, s, 3, 8)]
    return [jax.random.normal(kk, sh).astype(dtype) for kk, sh in zip(keys, shapes, strict=True)]


def test_folded_matches_reference_and_jax():
    q, k, v = _qkv()
    np.testing.assert_allclose(folded_attention(q, k, v), _reference(q, k, v), atol=1e-5)
    w = jax.random.normal(jax.random.key(1), q.shape)

    def loss(fn):
        return lambda q, k, v: jnp.sum(w * fn(q, k, v))

    xla = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")  # noqa: E731
    for g_folded, g_xla in zip(
        jax.grad(loss(folded_attention), argnums=(0, 1, 2))(q, k, v),
        jax.grad(loss(xla), argnums=(0, 1, 2))(q, k, v),
        strict=True,
    ):
        np.testing.assert_allclose(g_folded, g_xla, atol=1e-5)


def test_folded_bf16_keeps_dtype_and_accuracy():
    q, k, v = _qkv(dtype=jnp.bfloat16)
    out = folded_attention(q, k, v)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), _reference(q, k, v), atol=3e-2)


def test_default_on_cpu_is_folded_and_names_are_checked():
    q, k, v = _qkv(t=7)
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(multi_head_attention(q, k, v), folded_attention(q, k, v))
    np.testing.assert_allclose(multi_head_attention(q, k, v, "xla"), _reference(q, k, v), atol=1e-5)
    with pytest.raises(ValueError, match="folded"):
        multi_head_attention(q, k, v, "flash")
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        Attention(24, 3, implementation="flash", rngs=nnx.Rngs(0))
