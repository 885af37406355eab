"""EDM2 UNet: magnitude preservation, block parity with a NumPy transcription of EDM2, contract."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.contract import Backbone
from nnx_backbones.edm2_unet import (
    Block,
    EDM2Config,
    EDM2UNet,
    MPConv,
    MPFourier,
    edm2_config,
    mp_cat,
    mp_silu,
    mp_sum,
    normalize,
)
from nnx_backbones.errors import ShapeError
from nnx_backbones.weights.assign import variable_paths

TINY = EDM2Config(
    img_resolution=8,
    img_channels=3,
    num_classes=10,
    model_channels=16,
    channel_mult=(1, 2),
    num_blocks=1,
    attn_resolutions=(4,),
    channels_per_head=8,
)
# One resolution level, no encoder blocks: conv_in → dec in0 (attention), in1, block0 (skip
# concat) → out_conv. Compiling the backward pass is the expensive part of this file.
ONE_LEVEL = EDM2Config(
    **{**TINY.__dict__, "channel_mult": (1,), "num_blocks": 0, "attn_resolutions": ()}
)
N = 200_000


def numpy_init(factory, seed: int = 0, gains: float = 1.0):
    """`factory()` built under eval_shape, then filled with NumPy draws of EDM2's init (N(0, 1)
    weights, 2π·N(0, 1) frequencies, 2π·U(0, 1) phases) and gains set to `gains`: no
    per-parameter JAX compiles."""
    module = nnx.eval_shape(factory)
    rng = np.random.default_rng(seed)
    for path, node in nnx.iter_graph(module):
        if not isinstance(node, nnx.Variable):
            continue
        value = node.get_value()
        name = str(path[-1])
        if not isinstance(value, jax.ShapeDtypeStruct) or path[0] == "rngs":
            continue
        if name == "weight":
            new = rng.standard_normal(value.shape)
        elif name in ("emb_gain", "out_gain"):
            new = np.full(value.shape, gains)
        elif name == "freqs":
            new = 2 * np.pi * rng.standard_normal(value.shape)
        else:
            assert name == "phases", path
            new = 2 * np.pi * rng.uniform(size=value.shape)
        node.set_value(jnp.asarray(new, value.dtype))
    if hasattr(module, "rngs"):
        module.rngs = nnx.Rngs(seed, label_dropout=seed + 1, dropout=seed + 2)
    return module


def second_moment(x) -> float:
    return float(np.mean(np.square(np.asarray(x, np.float64))))


def build(cfg: EDM2Config, seed: int = 0, gains: float = 1.0) -> EDM2UNet:
    return numpy_init(lambda: EDM2UNet(cfg, rngs=nnx.Rngs(0)), seed, gains)


def test_mp_primitives_preserve_unit_magnitude():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    a = jax.random.normal(k1, (N,))
    b = jax.random.normal(k2, (N,))
    assert abs(second_moment(mp_silu(a)) - 1) < 0.01  # Eq. 81: E[SiLU(x)²] = 0.596²
    for t in (0.3, 0.5, 0.8):
        assert abs(second_moment(mp_sum(a, b, t)) - 1) < 0.015  # Eq. 88
    np.testing.assert_allclose(mp_sum(1.0, 0.0, 0.3), 0.7 / math.sqrt(0.49 + 0.09), rtol=1e-6)
    cat = mp_cat(a.reshape(-1, 40), b.reshape(-1, 40)[:, :10], t=0.3)  # Eq. 103
    assert cat.shape[-1] == 50 and abs(second_moment(cat) - 1) < 0.015
    x = jax.random.normal(k3, (4096, 64)) * 3.0 + 0.5
    np.testing.assert_allclose(second_moment(normalize(x)), 1.0, rtol=1e-3)


@nnx.jit
def layer_moments(lin, conv, fourier, x, img, t):
    y = lin(x)
    return (
        jnp.mean(y**2, axis=0),  # per output channel
        jnp.mean(lin(x, gain=2.0) ** 2) / jnp.mean(y**2),
        jnp.mean(conv(img)[:, 1:-1, 1:-1] ** 2),  # interior: no zero padding
        jnp.mean(fourier(t) ** 2),
    )


def test_mp_layers_preserve_unit_magnitude():
    lin = numpy_init(lambda: MPConv(96, 48, rngs=nnx.Rngs(0)))
    conv = numpy_init(lambda: MPConv(16, 8, (3, 3), rngs=nnx.Rngs(0)))
    fourier = numpy_init(lambda: MPFourier(4096, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(1)
    x, img, t = (jnp.asarray(rng.standard_normal(s), jnp.float32)
                 for s in ((8192, 96), (16, 18, 18, 16), (64,)))  # fmt: skip
    per_channel, gain_ratio, conv_m2, fourier_m2 = layer_moments(lin, conv, fourier, x, img, t)
    # Unit-norm weights per output channel → unit variance out of unit-variance input (Eq. 47).
    np.testing.assert_allclose(per_channel, 1.0, atol=0.1)
    np.testing.assert_allclose(gain_ratio, 4.0, rtol=1e-5)
    assert abs(float(conv_m2) - 1) < 0.05
    assert abs(float(fourier_m2) - 1) < 0.03  # Eq. 75: E[2 cos²] = 1
    # A whole block (down-sampling, skip conv, attention) with unit-variance input.
    x = jax.random.normal(jax.random.key(4), (8, 16, 16, 8))
    emb = jax.random.normal(jax.random.key(5), (8, 12))
    out = run_block(make_block(), x, emb)
    assert out.shape == (8, 8, 8, 16)
    assert 0.75 < second_moment(out) < 1.33


# ---------------------------------------------------------------------------------------------
# NumPy transcription of EDM2's PyTorch Block (NCHW, weights [O, I, kh, kw]).
# ---------------------------------------------------------------------------------------------
def np_normalize(x, dim, eps=1e-4):
    norm = np.sqrt((x**2).sum(axis=dim, keepdims=True))
    n = np.prod([x.shape[d] for d in np.atleast_1d(dim)])
    return x / (eps + norm / np.sqrt(n))


def np_mpconv(x, w_nnx, gain=1.0):
    w = w_nnx.transpose(3, 2, 0, 1) if w_nnx.ndim == 4 else w_nnx.T  # to torch layout
    w = np_normalize(w, dim=tuple(range(1, w.ndim)))
    w = w * (gain / np.sqrt(np.prod(w.shape[1:])))
    if w.ndim == 2:
        return x @ w.T
    k = w.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    h, wd = x.shape[2], x.shape[3]
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i : i + h, j : j + wd], w[:, :, i, j])
    return out


def np_block(blk: Block, x, emb):
    """EDM2 Block.forward (enc flavor, down-resampling, attention) in NumPy, NCHW."""

    def W(m):
        return np.asarray(m.weight[...], np.float64)

    def silu(v):
        return v / (1 + np.exp(-v)) / 0.596

    def msum(a, b, t):
        return (a + t * (b - a)) / np.sqrt((1 - t) ** 2 + t**2)

    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))  # filter [1, 1], stride 2
    x = np_mpconv(x, W(blk.conv_skip))
    x = np_normalize(x, dim=1)
    y = np_mpconv(silu(x), W(blk.conv_res0))
    cc = np_mpconv(emb, W(blk.emb_linear), gain=float(blk.emb_gain[...])) + 1
    y = silu(y * cc[:, :, None, None])
    y = np_mpconv(y, W(blk.conv_res1))
    x = msum(x, y, blk.res_balance)
    y = np_mpconv(x, W(blk.attn_qkv))
    y = y.reshape(y.shape[0], blk.num_heads, -1, 3, y.shape[2] * y.shape[3])
    q, k, v = np.moveaxis(np_normalize(y, dim=2), 3, 0)
    s = np.einsum("nhcq,nhck->nhqk", q, k / np.sqrt(q.shape[2]))
    s = np.exp(s - s.max(axis=3, keepdims=True))
    s /= s.sum(axis=3, keepdims=True)
    y = np.einsum("nhqk,nhck->nhcq", s, v)
    y = np_mpconv(y.reshape(*x.shape), W(blk.attn_proj))
    return np.clip(msum(x, y, blk.attn_balance), -256, 256)


def make_block() -> Block:
    return numpy_init(
        lambda: Block(8, 16, 12, resample_mode="down", attention=True, channels_per_head=4,
                      rngs=nnx.Rngs(0)), seed=5, gains=0.7,
    )  # fmt: skip


@nnx.jit
def run_block(blk, x, emb):
    return blk(x, emb)


def test_block_matches_numpy_transcription_of_edm2():
    blk = make_block()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 16, 8))
    emb = rng.standard_normal((8, 12))
    got = run_block(blk, jnp.asarray(x, jnp.float32), jnp.asarray(emb, jnp.float32))
    ref = np_block(blk, x.transpose(0, 3, 1, 2), emb).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@nnx.jit
def forward_and_grads(net, x, t, y):
    """One compiled pass: output, hidden tokens after encoder unit 1, and parameter gradients."""

    def loss(n):
        out, hidden = n(x, t, y=y, train=True, return_hidden_at=1)
        return jnp.mean(out**2), (out, hidden)

    (_, (out, hidden)), grads = nnx.value_and_grad(loss, has_aux=True)(net)
    return out, hidden, grads


X = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
T = jnp.log(jnp.array([0.1, 1.0, 5.0, 40.0])) / 4  # c_noise = ln(σ)/4


@nnx.jit
def forward(net, x, t, y):
    return net(x, t, y=y, return_hidden_at=3)


def test_contract_shapes_and_unit_scale():
    net = build(TINY)
    assert isinstance(net, Backbone)
    assert net.enc_names[:3] == ("8x8_conv", "8x8_block0", "4x4_down")
    out, hidden = forward(net, X, T, jnp.array([0, 3, 9, 10]))
    assert out.shape == X.shape and hidden.shape == (4, 4 * 4, 16)  # after the down block
    assert 0.2 < second_moment(out) < 5.0  # unit-scale output once out_gain = 1
    with pytest.raises(ShapeError):
        net(jnp.zeros((1, 8, 8, 4)), T[:1])
    with pytest.raises(ShapeError):
        net(X, T[:2])
    with pytest.raises(ValueError, match="does not take r"):
        net(X, T, r=T)


def test_labels_null_label_and_gradients():
    net = build(ONE_LEVEL)
    out, hidden, grads = forward_and_grads(net, X, T, jnp.array([0, 3, 9, 10]))
    assert out.shape == X.shape and hidden.shape == (4, 8 * 8, 16)
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert all(np.abs(np.asarray(g)).sum() > 0 for g in leaves)  # every parameter is used
    null, _, _ = forward_and_grads(net, X, T, jnp.full((4,), 10))
    assert not np.allclose(out[:3], null[:3], atol=1e-3)  # a real label changes the output
    np.testing.assert_allclose(out[3], null[3], rtol=1e-5, atol=1e-6)  # label 10 is the null


@nnx.jit
def run_block_dropout(blk, x, emb, key):
    return blk(x, emb, key)


def test_block_dropout_is_keyed_and_unbiased():
    blk = make_block()
    blk.dropout = 0.5
    x = jax.random.normal(jax.random.key(4), (8, 16, 16, 8))
    emb = jax.random.normal(jax.random.key(5), (8, 12))
    k1, k2 = jax.random.split(jax.random.key(6))
    a, b = run_block_dropout(blk, x, emb, k1), run_block_dropout(blk, x, emb, k1)
    np.testing.assert_array_equal(a, b)  # same key → same result
    c = run_block_dropout(blk, x, emb, k2)
    assert not np.allclose(a, c, atol=1e-3)
    clean = run_block(make_block(), x, emb)
    # Inverted dropout keeps the magnitude: E[out²] stays near the no-dropout value.
    assert 0.5 < second_moment(a) / second_moment(clean) < 2.0


def test_initial_output_is_zero_and_weight_normalization_keeps_outputs():
    net = build(ONE_LEVEL, gains=0.0)
    out, _, _ = forward_and_grads(net, X, T, jnp.array([0, 3, 9, 10]))
    np.testing.assert_array_equal(out, 0.0)  # out_gain starts at 0 (EDM2)
    net = build(ONE_LEVEL)
    before, _, _ = forward_and_grads(net, X, T, jnp.array([0, 3, 9, 10]))
    net.normalize_weights()
    for _, node in nnx.iter_graph(net):
        if isinstance(node, MPConv):
            w = np.asarray(node.weight[...])
            rms = np.sqrt((w**2).reshape(-1, w.shape[-1]).mean(0))
            np.testing.assert_allclose(rms, 1.0, rtol=1e-3)
    after, _, _ = forward_and_grads(net, X, T, jnp.array([0, 3, 9, 10]))
    np.testing.assert_allclose(after, before, rtol=1e-3, atol=1e-4)


def test_published_sizes():
    # Parameter counts of the paper's ImageNet-512 models (Table 2): XS 125M, M 498M, XXL 1523M.
    for size, millions in (("xs", 125), ("m", 498), ("xxl", 1523)):
        net = nnx.eval_shape(lambda s=size: EDM2UNet(edm2_config(s), rngs=nnx.Rngs(0)))
        count = sum(math.prod(s) for s in variable_paths(net).values())
        assert round(count / 1e6) == millions, (size, count)
    net = nnx.eval_shape(lambda: EDM2UNet(edm2_config("xs"), rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((2, 64, 64, 4), jnp.float32)
    t = jax.ShapeDtypeStruct((2,), jnp.float32)
    out = nnx.eval_shape(lambda n, x, t: n(x, t, y=jnp.zeros((2,), jnp.int32)), net, x, t)
    assert out.shape == (2, 64, 64, 4)
    with pytest.raises(ValueError, match="'xs', 's', 'm'"):
        edm2_config("huge")
