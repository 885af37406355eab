"""RAE: shapes, per-position normalisation, decoder parity with NumPy, frozen encoder."""

import math
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.dinov2 import IMAGENET_MEAN, IMAGENET_STD, DINOv2Config, dinov2_config
from nnx_backbones.errors import ShapeError
from nnx_backbones.rae import RAE, RAEDecoderConfig, estimate_latent_stats, sincos_2d

ENC = DINOv2Config(hidden_size=16, depth=1, num_heads=2, image_size=28, num_registers=4)
DEC = RAEDecoderConfig(hidden_size=32, depth=1, num_heads=2, mlp_ratio=2.0, patch_size=16)


def build(seed: int = 0) -> RAE:
    """Tiny RAE (2×2 latent grid, 32×32 output) with NumPy-drawn params (no per-param compiles)."""
    rae = nnx.eval_shape(lambda: RAE(ENC, DEC, encoder_input_size=28, noise_tau=0.5,
                                     rngs=nnx.Rngs(0)))  # fmt: skip
    rng = np.random.default_rng(seed)
    for path, node in nnx.iter_graph(rae):
        if isinstance(node, nnx.Variable) and path[0] != "rngs":
            v = node.get_value()
            if isinstance(v, jax.ShapeDtypeStruct):
                name = str(path[-1])
                if name == "latent_var":
                    new = np.ones(v.shape)
                elif name == "scale":
                    new = 1 + 0.1 * rng.standard_normal(v.shape)
                else:
                    new = rng.standard_normal(v.shape) / math.sqrt(max(v.shape[0], 1))
                node.set_value(jnp.asarray(new, v.dtype))
    rae.rngs = nnx.Rngs(seed, noise=seed + 1)
    return rae


def np_decoder(rae: RAE, z: np.ndarray) -> np.ndarray:
    """NumPy reference of the decoder on unnormalised tokens z: [B, h, w, C] → pixels in [−1, 1]."""
    dec = rae.decoder

    def p(v):
        return np.asarray(v[...], np.float64)

    def lin(m, x):
        return x @ p(m.kernel) + p(m.bias)

    def ln(m, x, eps=1e-6):
        y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
        return y * p(m.scale) + p(m.bias)

    b, h, w, _ = z.shape
    d = DEC.hidden_size
    x = lin(dec.decoder_embed, z.reshape(b, h * w, -1))
    x = np.concatenate([np.broadcast_to(p(dec.cls_token), (b, 1, d)), x], axis=1)
    pos = np.zeros((1 + h * w, d))
    for i in range(h):
        for j in range(w):
            for k in range(d // 4):
                om = 10000 ** (-k / (d // 4))
                pos[1 + i * w + j, [k, d // 4 + k, d // 2 + k, 3 * d // 4 + k]] = [
                    math.sin(j * om), math.cos(j * om), math.sin(i * om), math.cos(i * om)
                ]  # fmt: skip
    x = x + pos
    for layer in dec.layers:
        a = ln(layer.norm1, x)
        nh, dh = DEC.num_heads, d // DEC.num_heads
        att = layer.attention.attention
        q, k, v = (lin(m, a).reshape(b, -1, nh, dh) for m in (att.query, att.key, att.value))
        s = np.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(dh)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + lin(
            layer.attention.output.dense, np.einsum("bhqk,bkhc->bqhc", s, v).reshape(b, -1, d)
        )
        from scipy.special import erf

        u = lin(layer.mlp.fc1, ln(layer.norm2, x))
        x = x + lin(layer.mlp.fc2, 0.5 * u * (1 + erf(u / math.sqrt(2))))
    y = lin(dec.decoder_pred, ln(dec.decoder_norm, x))[:, 1:]
    ps = DEC.patch_size
    img = np.zeros((b, h * ps, w * ps, 3))
    for i in range(h):
        for j in range(w):
            img[:, i * ps : (i + 1) * ps, j * ps : (j + 1) * ps] = y[:, i * w + j].reshape(
                b, ps, ps, 3
            )
    return 2 * (img * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) - 1


@pytest.fixture(scope="module")
def rae():
    return build()


IMAGES = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)), jnp.float32)


def test_sincos_matches_mae_layout():
    pos = sincos_2d(8, 3, 2)  # dim 8: per half 2 frequencies ω = 1, 1/100
    assert pos.shape == (6, 8)
    i, j = 2, 1  # token row 2, column 1 → index 5
    want = [math.sin(j), math.sin(j / 100), math.cos(j), math.cos(j / 100),
            math.sin(i), math.sin(i / 100), math.cos(i), math.cos(i / 100)]  # fmt: skip
    np.testing.assert_allclose(pos[i * 2 + j], want, atol=1e-12)


def test_shapes_stats_and_decoder_parity(rae):
    stats = estimate_latent_stats(rae, [IMAGES[:2], IMAGES[2:]])
    assert stats[0].shape == stats[1].shape == (2, 2, 16)
    rae.set_latent_stats(*stats)

    @nnx.jit
    def run(m, x):
        raw = m.features(x)
        z = m.encode(x)
        return raw, z, m.decode(z), m.encode(x, train=True), m.encode(x, train=True)

    raw, z, recon, noisy1, noisy2 = run(rae, IMAGES)
    assert raw.shape == z.shape == (4, 2, 2, 16) and recon.shape == (4, 32, 32, 3)
    # Normalised over the same images: zero mean, unit variance at every position (up to ε).
    np.testing.assert_allclose(np.asarray(z).mean(0), 0.0, atol=1e-4)
    var = np.asarray(raw, np.float64).var(0)
    np.testing.assert_allclose(np.asarray(z).var(0), var / (var + 1e-5), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(rae.denormalize(rae.normalize(raw)), raw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(recon, np_decoder(rae, np.asarray(raw, np.float64)), atol=2e-4)
    # Noise augmentation (train=True only): fresh σ ε on every draw from the `noise` stream.
    assert not np.allclose(noisy1, z, atol=1e-3) and not np.allclose(noisy1, noisy2, atol=1e-3)
    # Stats in RAE's stat.pt layout [1, C, h, w] are accepted too.
    rae.set_latent_stats(stats[0].transpose(2, 0, 1)[None], stats[1].transpose(2, 0, 1)[None])
    np.testing.assert_allclose(rae.latent_mean[...], stats[0], rtol=1e-6)


def test_decoder_gradients_finite_and_encoder_frozen(rae):
    @nnx.jit
    def grads(m, x):
        return nnx.grad(lambda m: jnp.mean((m(x, train=True) - x) ** 2))(m)

    g = grads(rae, IMAGES[:2])
    dec = [np.asarray(v) for v in jax.tree.leaves(nnx.state(g.decoder, nnx.Param))]
    enc = [np.asarray(v) for v in jax.tree.leaves(nnx.state(g.encoder, nnx.Param))]
    assert all(np.isfinite(a).all() for a in dec) and all(np.abs(a).sum() > 0 for a in dec)
    assert all(np.all(a == 0) for a in enc)  # stop_gradient: the encoder is frozen


def test_bad_shapes(rae):
    with pytest.raises(ShapeError, match=r"\[B, 2, 2, 16\]"):
        rae.decode(jnp.zeros((1, 3, 3, 16)))
    with pytest.raises(ShapeError, match="latent stats"):
        rae.set_latent_stats(np.zeros((3, 3, 16)), np.ones((3, 3, 16)))
    with pytest.raises(ShapeError, match="multiple of the encoder patch"):
        RAE(ENC, DEC, encoder_input_size=30, rngs=nnx.Rngs(0))


def test_paper_configuration_shapes():
    # ViT-B/14-reg encoder at 224 → 16×16×768 latents; ViT-XL/16 decoder → 256×256 (depth 1 here:
    # shapes do not depend on depth, and tracing 12 + 28 layers is slow).
    enc = replace(dinov2_config("b", registers=True), depth=1)
    rae = nnx.eval_shape(lambda: RAE(enc, replace(RAEDecoderConfig(), depth=1), rngs=nnx.Rngs(0)))
    assert rae.latent_shape == (16, 16, 768) and rae.output_size == 256
    x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    z = nnx.eval_shape(lambda m, x: m.encode(x), rae, x)
    assert z.shape == (2, 16, 16, 768)
    out = nnx.eval_shape(lambda m, z: m.decode(z), rae, z)
    assert out.shape == (2, 256, 256, 3)
