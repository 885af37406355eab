"""SD-VAE (AutoencoderKL): diffusers-layout import/export, forward parity, shapes, scaling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.sd_vae import export_sd_vae, load_sd_vae, materialize
from nnx_backbones.errors import ShapeError, WeightsError, WeightsNotFoundError
from nnx_backbones.sd_vae import AutoencoderKL, LatentScaling, VAEConfig
from nnx_backbones.weights.assign import variable_paths

TINY = VAEConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)


# ---------------------------------------------------------------------------------------------
# The published diffusers layout, written out independently of the model code.
# ---------------------------------------------------------------------------------------------
def diffusers_keys(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
    """Key → shape of a diffusers AutoencoderKL state dict (current attention names)."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        keys[f"{name}.weight"] = (cout, cin, k, k)
        keys[f"{name}.bias"] = (cout,)

    def norm(name, c):
        keys[f"{name}.weight"] = (c,)
        keys[f"{name}.bias"] = (c,)

    def resnet(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.conv_shortcut", cin, cout, 1)

    def mid(name, c):
        resnet(f"{name}.resnets.0", c, c)
        norm(f"{name}.attentions.0.group_norm", c)
        for lin in ("to_q", "to_k", "to_v", "to_out.0"):
            keys[f"{name}.attentions.0.{lin}.weight"] = (c, c)
            keys[f"{name}.attentions.0.{lin}.bias"] = (c,)
        resnet(f"{name}.resnets.1", c, c)

    ch, n, lat = cfg.block_out_channels, cfg.layers_per_block, cfg.latent_channels
    conv("encoder.conv_in", 3, ch[0], 3)
    cout = ch[0]
    for i, c in enumerate(ch):
        cin, cout = cout, c
        for j in range(n):
            resnet(f"encoder.down_blocks.{i}.resnets.{j}", cin if j == 0 else cout, cout)
        if i < len(ch) - 1:
            conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", cout, cout, 3)
    mid("encoder.mid_block", ch[-1])
    norm("encoder.conv_norm_out", ch[-1])
    conv("encoder.conv_out", ch[-1], 2 * lat, 3)
    conv("quant_conv", 2 * lat, 2 * lat, 1)
    conv("post_quant_conv", lat, lat, 1)
    rch = tuple(reversed(ch))
    conv("decoder.conv_in", lat, rch[0], 3)
    mid("decoder.mid_block", rch[0])
    cout = rch[0]
    for i, c in enumerate(rch):
        cin, cout = cout, c
        for j in range(n + 1):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", cin if j == 0 else cout, cout)
        if i < len(rch) - 1:
            conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", cout, cout, 3)
    norm("decoder.conv_norm_out", rch[-1])
    conv("decoder.conv_out", rch[-1], 3, 3)
    return keys


def random_checkpoint(cfg: VAEConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in diffusers_keys(cfg).items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        scale = 1 / math.sqrt(fan_in) if len(shape) > 1 else 0.2
        base = 1.0 if k.endswith(".weight") and len(shape) == 1 else 0.0  # norm gains near 1
        out[k] = (base + scale * rng.standard_normal(shape)).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------
# Independent NumPy forward pass on the torch-layout state dict (NHWC activations).
# ---------------------------------------------------------------------------------------------
def np_conv(x, sd, name, stride=1, pad=None):
    w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]  # [O, I, k, k]
    k = w.shape[-1]
    p = k // 2 if pad is None else pad
    if isinstance(p, int):
        p = ((p, p), (p, p))
    x = np.pad(x, ((0, 0), *p, (0, 0)))
    bsz, hh, ww, _ = x.shape
    ho, wo = (hh - k) // stride + 1, (ww - k) // stride + 1
    out = np.zeros((bsz, ho, wo, w.shape[0]))
    for di in range(k):
        for dj in range(k):
            patch = x[:, di : di + stride * ho : stride, dj : dj + stride * wo : stride, :]
            out += patch @ w[:, :, di, dj].T
    return out + b


def np_group_norm(x, sd, name, groups, eps=1e-6):
    b, h, w, c = x.shape
    g = x.reshape(b, h * w, groups, c // groups)
    mu = g.mean(axis=(1, 3), keepdims=True)
    var = g.var(axis=(1, 3), keepdims=True)
    y = ((g - mu) / np.sqrt(var + eps)).reshape(b, h, w, c)
    return y * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def np_silu(x):
    return x / (1 + np.exp(-x))


def np_resnet(x, sd, name, g):
    h = np_conv(np_silu(np_group_norm(x, sd, f"{name}.norm1", g)), sd, f"{name}.conv1")
    h = np_conv(np_silu(np_group_norm(h, sd, f"{name}.norm2", g)), sd, f"{name}.conv2")
    skip = np_conv(x, sd, f"{name}.conv_shortcut") if f"{name}.conv_shortcut.weight" in sd else x
    return skip + h


def np_attention(x, sd, name, g):
    b, h, w, c = x.shape
    t = np_group_norm(x, sd, f"{name}.group_norm", g).reshape(b, h * w, c)

    def lin(n, v):
        return v @ sd[f"{name}.{n}.weight"].T + sd[f"{name}.{n}.bias"]

    q, k, v = lin("to_q", t), lin("to_k", t), lin("to_v", t)
    s = q @ k.transpose(0, 2, 1) / np.sqrt(c)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    return x + lin("to_out.0", a @ v).reshape(b, h, w, c)


def np_mid(x, sd, name, g):
    x = np_resnet(x, sd, f"{name}.resnets.0", g)
    x = np_attention(x, sd, f"{name}.attentions.0", g)
    return np_resnet(x, sd, f"{name}.resnets.1", g)


def np_vae(x, sd, cfg):
    """Returns (mean, logvar, reconstruction from the mean)."""
    g, n, nb = cfg.norm_num_groups, cfg.layers_per_block, len(cfg.block_out_channels)
    h = np_conv(x, sd, "encoder.conv_in")
    for i in range(nb):
        for j in range(n):
            h = np_resnet(h, sd, f"encoder.down_blocks.{i}.resnets.{j}", g)
        if i < nb - 1:
            h = np_conv(h, sd, f"encoder.down_blocks.{i}.downsamplers.0.conv", 2, ((0, 1), (0, 1)))
    h = np_mid(h, sd, "encoder.mid_block", g)
    h = np_conv(np_silu(np_group_norm(h, sd, "encoder.conv_norm_out", g)), sd, "encoder.conv_out")
    moments = np_conv(h, sd, "quant_conv")
    mean, logvar = np.split(moments, 2, axis=-1)
    h = np_conv(np_conv(mean, sd, "post_quant_conv"), sd, "decoder.conv_in")
    h = np_mid(h, sd, "decoder.mid_block", g)
    for i in range(nb):
        for j in range(n + 1):
            h = np_resnet(h, sd, f"decoder.up_blocks.{i}.resnets.{j}", g)
        if i < nb - 1:
            h = h.repeat(2, axis=1).repeat(2, axis=2)
            h = np_conv(h, sd, f"decoder.up_blocks.{i}.upsamplers.0.conv")
    h = np_conv(np_silu(np_group_norm(h, sd, "decoder.conv_norm_out", g)), sd, "decoder.conv_out")
    return mean, np.clip(logvar, -30, 20), h


def loaded(sd: dict[str, np.ndarray], cfg: VAEConfig = TINY) -> AutoencoderKL:
    """A model built without random init (eval_shape + zeros), then filled from `sd`."""
    model = nnx.eval_shape(lambda: AutoencoderKL(cfg, rngs=nnx.Rngs(0)))
    materialize(model)
    load_sd_vae(model, sd)
    return model


@pytest.fixture(scope="module")
def tiny():
    sd = random_checkpoint(TINY)
    return loaded(sd), sd


@pytest.fixture(scope="module")
def tiny_out(tiny):
    """(x, mean, logvar, reconstruction) from one jitted pass of the tiny model."""
    model, _ = tiny
    x = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)

    @nnx.jit
    def run(m, x):
        mean, logvar = m.encode(x)
        return mean, logvar, m.decode(mean), m.encode_latents(x)

    return (x, *run(model, jnp.asarray(x)))


def test_every_published_key_is_consumed_and_every_param_set(tiny):
    model, sd = tiny
    exported = export_sd_vae(model)
    assert set(exported) == set(sd)  # same keys, nothing extra, nothing missing
    for k in sd:
        assert exported[k].shape == sd[k].shape
        np.testing.assert_array_equal(exported[k], sd[k])  # export ∘ import = identity
    fresh = loaded(exported)
    for a, b in zip(
        jax.tree.leaves(nnx.state(fresh)), jax.tree.leaves(nnx.state(model)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_strict_import_rejects_missing_extra_and_misshaped_keys(tiny):
    _, sd = tiny
    bad = dict(sd)
    bad.pop("decoder.conv_out.bias")
    bad["encoder.extra.weight"] = np.zeros(3, np.float32)
    bad["quant_conv.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(WeightsError) as e:
        loaded(bad)
    msg = str(e.value)
    assert "decoder.conv_out.bias" in msg and "encoder.extra.weight" in msg
    assert "quant_conv.weight" in msg


def test_legacy_attention_names_load_identically(tiny):
    _, sd = tiny
    legacy = {}
    for k, v in sd.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"),
                         ("to_out.0", "proj_attn")):  # fmt: skip
            k = k.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        if ".attentions.0.query.weight" in k:  # old LDM-style 1×1 conv weight
            v = v[:, :, None, None]
        legacy[k] = v
    assert any("proj_attn" in k for k in legacy)
    exported = export_sd_vae(loaded(legacy))
    for k in sd:
        np.testing.assert_array_equal(exported[k], sd[k])


def test_forward_matches_numpy_reference(tiny, tiny_out):
    _, sd = tiny
    x, mean, logvar, recon, _ = tiny_out
    ref_mean, ref_logvar, ref_recon = np_vae(x.astype(np.float64), sd, TINY)
    assert mean.shape == (2, 8, 8, 4) and recon.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(np.asarray(mean), ref_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(logvar), ref_logvar, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(recon), ref_recon, rtol=1e-4, atol=1e-4)


def test_full_size_shapes_256_to_32x32x4():
    model = nnx.eval_shape(lambda: AutoencoderKL(rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    mean, logvar = nnx.eval_shape(lambda m, x: m.encode(x), model, x)
    assert mean.shape == logvar.shape == (1, 32, 32, 4)
    out = nnx.eval_shape(lambda m, z: m.decode(z), model, mean)
    assert out.shape == (1, 256, 256, 3)
    # The released file: 108 encoder/quant_conv keys and a 49,490,199-parameter
    # post_quant_conv + decoder (published figures for the SD kl-f8 checkpoint).
    keys = diffusers_keys(VAEConfig())
    assert sum(1 for k in keys if k.startswith(("encoder.", "quant_conv."))) == 108
    paths = variable_paths(model)
    assert len(paths) == len(keys)
    dec = sum(math.prod(s) for p, s in paths.items() if p.startswith(("decoder.", "post_quant")))
    assert dec == 49_490_199


def test_latent_scaling_round_trip_and_sampling(tiny_out):
    _, mean, logvar, _, scaled = tiny_out
    np.testing.assert_allclose(scaled, 0.18215 * mean, rtol=1e-6)
    s = LatentScaling.from_stats(mean=(0.1, 0.2, 0.3, 0.4), std=(2.0, 4.0, 5.0, 8.0))
    z = jnp.ones((1, 2, 2, 4))
    np.testing.assert_allclose(s.apply(z)[0, 0, 0], [0.45, 0.2, 0.14, 0.075], rtol=1e-6)
    np.testing.assert_allclose(s.invert(s.apply(z)), z, rtol=1e-6)
    n = 400  # one call on n copies of the first example: z = μ + σ ε
    mu, lv = (np.broadcast_to(np.asarray(a[:1]), (n, *a.shape[1:])) for a in (mean, logvar))
    zs = np.asarray(AutoencoderKL.sample(jnp.asarray(mu), jnp.asarray(lv), jax.random.key(0)))
    sigma = np.exp(0.5 * np.asarray(logvar[0]))
    assert np.all(np.abs(zs.mean(0) - mean[0]) < 0.25 * sigma)
    np.testing.assert_allclose(zs.std(0), sigma, rtol=0.25)


def test_gradients_are_finite(tiny):
    model, _ = tiny
    x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (1, 8, 8, 3)), jnp.float32)
    grads = nnx.jit(nnx.grad(lambda m: jnp.mean((m(x) - x) ** 2)))(model)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert any(np.abs(np.asarray(g)).max() > 0 for g in leaves)


def test_bad_input_shapes_and_missing_weights(tmp_path):
    model = nnx.eval_shape(lambda: AutoencoderKL(TINY, rngs=nnx.Rngs(0)))
    with pytest.raises(ShapeError, match="multiples of 2"):
        model.encode(jnp.zeros((1, 7, 8, 3)))
    with pytest.raises(ShapeError, match="latents"):
        model.decode(jnp.zeros((1, 4, 4, 3)))
    from nnx_backbones.convert.sd_vae import pretrained_sd_vae

    with pytest.raises(WeightsNotFoundError) as e:
        pretrained_sd_vae("sd-vae-ft-mse", cache_dir=tmp_path, download=False)
    assert "huggingface.co/stabilityai/sd-vae-ft-mse" in str(e.value)
