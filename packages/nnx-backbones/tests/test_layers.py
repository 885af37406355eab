"""Layers against closed forms: patchify, sin-cos table, RoPE (relative-position shift), norms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.errors import ShapeError
from nnx_backbones.layers.adaln import modulate
from nnx_backbones.layers.norms import RMSNorm, layer_norm
from nnx_backbones.layers.patch import PatchEmbed, patchify, unpatchify
from nnx_backbones.layers.position import apply_rope, rope_2d, rope_2d_grid, sincos_pos_embed_2d


def test_patchify_layout_and_inverse():
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 3)).astype(np.float32)
    tok = np.asarray(patchify(jnp.asarray(x), 2))
    assert tok.shape == (2, 6, 12)
    # Token (gi, gj) feature (i, j, c) is pixel (2gi + i, 2gj + j, c); tokens row-major.
    gi, gj, i, j, c = 1, 2, 1, 0, 2
    assert tok[1, gi * 3 + gj, (i * 2 + j) * 3 + c] == x[1, 2 * gi + i, 2 * gj + j, c]
    np.testing.assert_array_equal(np.asarray(unpatchify(jnp.asarray(tok), (2, 3), 2)), x)
    with pytest.raises(ShapeError, match="not divisible"):
        patchify(jnp.zeros((1, 5, 4, 3)), 2)


def test_patch_embed_is_a_strided_conv():
    emb = nnx.eval_shape(lambda: PatchEmbed(2, 3, 5, rngs=nnx.Rngs(0)))  # no initialiser run
    emb.kernel.set_value(jax.random.normal(jax.random.key(0), (2, 2, 3, 5)))
    emb.bias.set_value(jnp.arange(5.0))
    x = jax.random.normal(jax.random.key(1), (1, 4, 4, 3))
    conv = jax.lax.conv_general_dilated(
        x, emb.kernel[...], (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(emb(x), conv.reshape(1, 4, 5) + jnp.arange(5.0), atol=1e-5)
    with pytest.raises(ShapeError, match="3 input channels"):
        emb(jnp.zeros((1, 4, 4, 2)))


def test_sincos_table_closed_form():
    dim, gh, gw = 8, 3, 5
    table = sincos_pos_embed_2d(dim, (gh, gw))
    assert table.shape == (gh * gw, dim)
    for h, w in [(0, 0), (2, 4), (1, 3)]:
        omega = 1.0 / 10000 ** (np.arange(2) / 2.0)  # dim/4 = 2 frequencies per axis
        want = np.concatenate(
            [np.sin(w * omega), np.cos(w * omega), np.sin(h * omega), np.cos(h * omega)]
        )
        np.testing.assert_allclose(table[h * gw + w], want, atol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
    head_dim = 16
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((1, 1, 1, head_dim)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((1, 1, 1, head_dim)), jnp.float32)

    def score(pq, pk):
        cq = rope_2d(head_dim, jnp.array([pq[0]]), jnp.array([pq[1]]))
        ck = rope_2d(head_dim, jnp.array([pk[0]]), jnp.array([pk[1]]))
        return float(jnp.sum(apply_rope(q, *cq) * apply_rope(k, *ck)))

    base = score((1, 2), (3, 0))
    for dh, dw in [(5, 0), (0, 7), (-1, 3), (11, 13)]:
        assert score((1 + dh, 2 + dw), (3 + dh, 0 + dw)) == pytest.approx(base, abs=1e-4)
    # ... and it does depend on the relative position, along both axes.
    assert abs(score((1, 2), (4, 0)) - base) > 1e-3
    assert abs(score((1, 2), (3, 1)) - base) > 1e-3
    # Rotation preserves norms; position (0, 0) is the identity.
    c0 = rope_2d_grid(head_dim, (1, 1))
    np.testing.assert_allclose(apply_rope(q, *c0), q, atol=1e-6)


def test_rope_matches_complex_rotation():
    # Pair (2i, 2i+1) as a complex number z rotated by e^{i·pos·f}: first half rows, second cols.
    head_dim, gh, gw = 8, 2, 3
    cos, sin = rope_2d_grid(head_dim, (gh, gw))
    x = np.random.default_rng(1).standard_normal((1, gh * gw, 1, head_dim)).astype(np.float32)
    got = np.asarray(apply_rope(jnp.asarray(x), cos, sin))
    f = 1.0 / 10000 ** (np.arange(0, 4, 2) / 4)  # axis_dim = 4 → 2 frequencies
    for tkn in range(gh * gw):
        h, w = divmod(tkn, gw)
        angles = np.concatenate([h * f, w * f])
        z = x[0, tkn, 0, 0::2] + 1j * x[0, tkn, 0, 1::2]
        zr = z * np.exp(1j * angles)
        np.testing.assert_allclose(got[0, tkn, 0, 0::2], zr.real, atol=1e-5)
        np.testing.assert_allclose(got[0, tkn, 0, 1::2], zr.imag, atol=1e-5)


def test_norms_and_modulate_closed_form():
    x = np.random.default_rng(2).standard_normal((2, 3, 6)).astype(np.float32) * 3 + 1
    ln = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(layer_norm(jnp.asarray(x)), ln, atol=1e-5)
    norm = RMSNorm(6)
    norm.scale.set_value(jnp.arange(1.0, 7.0))
    rms = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * np.arange(1.0, 7.0)
    np.testing.assert_allclose(norm(jnp.asarray(x)), rms, rtol=1e-5)
    shift, scale = np.ones((2, 6)), np.full((2, 6), 2.0)
    np.testing.assert_allclose(modulate(x, shift, scale), 3 * x + 1, rtol=1e-6)
    np.testing.assert_allclose(modulate(x, None, scale[:, None] * np.ones((2, 3, 6))), 3 * x)


def test_label_embedder_rejects_out_of_range_labels_outside_jit():
    from nnx_backbones.embeddings import LabelEmbedder
    from nnx_backbones.errors import LabelError

    emb = LabelEmbedder(3, 8, 0.0, rngs=nnx.Rngs(0))
    assert emb(jnp.array([0, 2, 3])).shape == (3, 8)  # 3 = the null label
    with pytest.raises(LabelError, match=r"2 of 3 labels lie outside \[0, 3\].*\[4, -1\]"):
        emb(jnp.array([4, 1, -1]))
    out = nnx.jit(lambda m, y: m(y))(emb, jnp.array([0, 1]))  # traced: no check, no host sync
    assert out.shape == (2, 8)
