"""DINOv2 (+registers): HF-layout import/export, forward parity, position interpolation, shapes."""

import math
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.dinov2 import config_for, export_dinov2, load_dinov2
from nnx_backbones.convert.sd_vae import materialize
from nnx_backbones.dinov2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DINOv2,
    DINOv2Config,
    bicubic_matrix,
    dinov2_config,
)
from nnx_backbones.errors import ShapeError, WeightsError, WeightsNotFoundError
from nnx_backbones.weights.assign import variable_paths

REG = DINOv2Config(hidden_size=32, depth=2, num_heads=2, image_size=42, num_registers=4)
SWIGLU = DINOv2Config(hidden_size=32, depth=2, num_heads=4, image_size=28, swiglu=True)


def hf_keys(cfg: DINOv2Config) -> dict[str, tuple[int, ...]]:
    """Key → shape of an HF Dinov2Model / Dinov2WithRegistersModel state dict."""
    d, p = cfg.hidden_size, cfg.patch_size
    n = (cfg.image_size // p) ** 2
    keys = {
        "embeddings.cls_token": (1, 1, d),
        "embeddings.mask_token": (1, d),
        "embeddings.position_embeddings": (1, n + 1, d),
        "embeddings.patch_embeddings.projection.weight": (d, 3, p, p),
        "embeddings.patch_embeddings.projection.bias": (d,),
        "layernorm.weight": (d,),
        "layernorm.bias": (d,),
    }
    if cfg.num_registers:
        keys["embeddings.register_tokens"] = (1, cfg.num_registers, d)
    for i in range(cfg.depth):
        pre = f"encoder.layer.{i}"
        for name in ("norm1", "norm2"):
            keys[f"{pre}.{name}.weight"] = keys[f"{pre}.{name}.bias"] = (d,)
        for name in ("attention.attention.query", "attention.attention.key",
                     "attention.attention.value", "attention.output.dense"):  # fmt: skip
            keys[f"{pre}.{name}.weight"], keys[f"{pre}.{name}.bias"] = (d, d), (d,)
        keys[f"{pre}.layer_scale1.lambda1"] = keys[f"{pre}.layer_scale2.lambda1"] = (d,)
        if cfg.swiglu:
            hid = (int(int(d * cfg.mlp_ratio) * 2 / 3) + 7) // 8 * 8
            keys[f"{pre}.mlp.weights_in.weight"], keys[f"{pre}.mlp.weights_in.bias"] = (
                (2 * hid, d),
                (2 * hid,),
            )
            keys[f"{pre}.mlp.weights_out.weight"] = (d, hid)
            keys[f"{pre}.mlp.weights_out.bias"] = (d,)
        else:
            hid = int(d * cfg.mlp_ratio)
            keys[f"{pre}.mlp.fc1.weight"], keys[f"{pre}.mlp.fc1.bias"] = (hid, d), (hid,)
            keys[f"{pre}.mlp.fc2.weight"], keys[f"{pre}.mlp.fc2.bias"] = (d, hid), (d,)
    return keys


def random_checkpoint(cfg: DINOv2Config, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in hf_keys(cfg).items():
        scale = (
            1 / math.sqrt(math.prod(shape[1:])) if k.endswith("weight") and len(shape) > 1 else 0.3
        )
        base = 1.0 if k.endswith(("norm1.weight", "norm2.weight", "layernorm.weight")) else 0.0
        out[k] = (base + scale * rng.standard_normal(shape)).astype(np.float32)
    return out


def loaded(cfg: DINOv2Config, sd) -> DINOv2:
    model = nnx.eval_shape(lambda: DINOv2(cfg, rngs=nnx.Rngs(0)))
    materialize(model)
    load_dinov2(model, sd)
    return model


# ---------------------------------------------------------------------------------------------
# Independent NumPy reference.
# ---------------------------------------------------------------------------------------------
def ref_resize_1d(v: np.ndarray, n_out: int, antialias: bool) -> np.ndarray:
    """torch.nn.functional.interpolate(bicubic, align_corners=False) along axis 0, by loops."""
    n_in = v.shape[0]
    s = n_in / n_out
    out = np.zeros((n_out, *v.shape[1:]))

    def k(x, a):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    for i in range(n_out):
        if not antialias:
            src = s * (i + 0.5) - 0.5
            x0 = math.floor(src)
            for j in range(x0 - 1, x0 + 3):
                out[i] += k(src - j, -0.75) * v[min(max(j, 0), n_in - 1)]
        else:
            c = s * (i + 0.5)
            support, inv = (2 * s, 1 / s) if s >= 1 else (2.0, 1.0)
            js = range(max(int(c - support + 0.5), 0), min(int(c + support + 0.5), n_in))
            ws = [k((j - c + 0.5) * inv, -0.5) for j in js]
            out[i] = sum(w * v[j] for w, j in zip(ws, js, strict=True)) / sum(ws)
    return out


def ref_ln(x, w=None, b=None, eps=1e-6):
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return y if w is None else y * w + b


def ref_dinov2(images01, sd, cfg, affine=True):
    """images in [0, 1], NHWC → (final tokens, [hidden after each layer])."""
    x = (images01 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    b, hh, ww, _ = x.shape
    p, d = cfg.patch_size, cfg.hidden_size
    h, w = hh // p, ww // p
    patches = x.reshape(b, h, p, w, p, 3).transpose(0, 1, 3, 5, 2, 4).reshape(b, h * w, 3 * p * p)
    wproj = sd["embeddings.patch_embeddings.projection.weight"].reshape(d, -1)
    z = patches @ wproj.T + sd["embeddings.patch_embeddings.projection.bias"]
    pos = sd["embeddings.position_embeddings"][0]
    side = math.isqrt(pos.shape[0] - 1)
    grid = pos[1:].reshape(side, side, d)
    if not (h == w == side):
        aa = cfg.num_registers > 0
        grid = ref_resize_1d(grid, h, aa)
        grid = ref_resize_1d(grid.transpose(1, 0, 2), w, aa).transpose(1, 0, 2)
    z = np.concatenate([np.broadcast_to(sd["embeddings.cls_token"], (b, 1, d)), z], 1)
    z = z + np.concatenate([pos[:1], grid.reshape(h * w, d)])[None]
    if cfg.num_registers:
        reg = np.broadcast_to(sd["embeddings.register_tokens"], (b, cfg.num_registers, d))
        z = np.concatenate([z[:, :1], reg, z[:, 1:]], 1)
    hidden = []
    for i in range(cfg.depth):
        pre = f"encoder.layer.{i}."

        def lin(name, v, pre=pre):
            return v @ sd[pre + name + ".weight"].T + sd[pre + name + ".bias"]

        a = ref_ln(z, sd[pre + "norm1.weight"], sd[pre + "norm1.bias"])
        heads = cfg.num_heads
        q, k, v = (
            lin(f"attention.attention.{n}", a).reshape(b, -1, heads, d // heads)
            for n in ("query", "key", "value")
        )
        s = np.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(d // heads)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("bhqk,bkhc->bqhc", s, v).reshape(b, -1, d)
        z = z + sd[pre + "layer_scale1.lambda1"] * lin("attention.output.dense", o)
        m = ref_ln(z, sd[pre + "norm2.weight"], sd[pre + "norm2.bias"])
        if cfg.swiglu:
            x1, x2 = np.split(lin("mlp.weights_in", m), 2, axis=-1)
            m = lin("mlp.weights_out", x1 / (1 + np.exp(-x1)) * x2)
        else:
            from scipy.special import erf

            u = lin("mlp.fc1", m)
            m = lin("mlp.fc2", 0.5 * u * (1 + erf(u / math.sqrt(2))))
        z = z + sd[pre + "layer_scale2.lambda1"] * m
        hidden.append(z)
    if affine:
        return ref_ln(z, sd["layernorm.weight"], sd["layernorm.bias"]), hidden
    return ref_ln(z), hidden


@pytest.mark.parametrize("cfg", [REG, SWIGLU], ids=["registers", "swiglu"])
def test_every_published_key_is_consumed_and_every_param_set(cfg):
    sd = random_checkpoint(cfg)
    model = loaded(cfg, sd)
    exported = export_dinov2(model)
    assert set(exported) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(exported[k], sd[k])
    again = export_dinov2(loaded(cfg, exported))
    assert all(np.array_equal(again[k], sd[k]) for k in sd)
    bad = dict(sd)
    bad.pop("encoder.layer.1.mlp." + ("weights_out.bias" if cfg.swiglu else "fc2.bias"))
    bad["embeddings.position_embeddings"] = np.zeros((1, 7, 32), np.float32)
    with pytest.raises(WeightsError, match="position_embeddings"):
        loaded(cfg, bad)
    prefixed = {f"dinov2.{k}": v for k, v in sd.items()}  # Dinov2ForImageClassification
    assert set(export_dinov2(loaded(cfg, prefixed))) == set(sd)
    no_mask = {k: v for k, v in sd.items() if k != "embeddings.mask_token"}
    np.testing.assert_array_equal(export_dinov2(loaded(cfg, no_mask))["embeddings.mask_token"], 0)


@pytest.mark.parametrize(
    "cfg, size", [(REG, 28), (REG, 42), (SWIGLU, 56)], ids=["reg-down", "reg-same", "glu-up"]
)
def test_forward_matches_numpy_reference(cfg, size):
    sd = random_checkpoint(cfg, seed=1)
    model = loaded(cfg, sd)
    x01 = np.random.default_rng(2).uniform(0, 1, (2, size, size, 3))
    out = model(jnp.asarray(2 * x01 - 1, jnp.float32), layers=(1, 2))
    ref, hidden = ref_dinov2(x01, sd, cfg)
    r = cfg.num_registers
    tol = dict(rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(out.cls_token, ref[:, 0], **tol)
    np.testing.assert_allclose(out.register_tokens, ref[:, 1 : 1 + r], **tol)
    np.testing.assert_allclose(out.patch_tokens, ref[:, 1 + r :], **tol)
    for got, want in zip(out.hidden, hidden, strict=True):
        np.testing.assert_allclose(got, want, **tol)
    if cfg is REG and size == 28:
        plain = model(jnp.asarray(x01, jnp.float32), input_range=(0, 1), final_norm_affine=False)
        ref_plain, _ = ref_dinov2(x01, sd, cfg, affine=False)
        np.testing.assert_allclose(plain.patch_tokens, ref_plain[:, 1 + r :], **tol)


def test_bicubic_weights_closed_form():
    # Same size: identity, with and without antialiasing.
    for aa in (False, True):
        np.testing.assert_allclose(bicubic_matrix(5, 5, antialias=aa), np.eye(5), atol=1e-12)
        for n_in, n_out in ((37, 16), (4, 7), (5, 2)):
            np.testing.assert_allclose(bicubic_matrix(n_in, n_out, antialias=aa).sum(1), 1.0)
    # 2 → 4 (no antialias): output 0 sits at source −0.25, so t = 0.75 and the Keys weights
    # (a = −0.75) of the taps at −2, −1, 0, 1 fold onto index 0 except the last.
    a = -0.75

    def w(x):
        return (a + 2) * x**3 - (a + 3) * x**2 + 1 if x <= 1 else a * (x**3 - 5 * x**2 + 8 * x - 4)

    row = bicubic_matrix(2, 4, antialias=False)[0]
    np.testing.assert_allclose(row, [w(1.75) + w(0.75) + w(0.25), w(1.25)], atol=1e-12)


def test_full_size_shapes_and_parameter_counts():
    model = nnx.eval_shape(lambda: DINOv2(dinov2_config("b", registers=True), rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    out = nnx.eval_shape(lambda m, x: m(x, layers=(4,)), model, x)
    assert out.cls_token.shape == (2, 768)
    assert out.patch_tokens.shape == (2, 16 * 16, 768)
    assert out.register_tokens.shape == (2, 4, 768)
    assert out.hidden[0].shape == (2, 1 + 4 + 256, 768)
    paths = variable_paths(model)
    assert paths["embeddings.position_embeddings"] == (1, 1 + 37 * 37, 768)
    assert len(paths) == len(hf_keys(config_for("dinov2-vitb14-reg")))
    # Published sizes (timm vit_*_patch14_dinov2, which has no mask token): 22.06M, 86.58M,
    # 304.37M, 1136.48M parameters. Counted on a 1-layer build: embeddings + norm + L · layer.
    for size, millions in (("s", 22.06), ("b", 86.58), ("l", 304.37), ("g", 1136.48)):
        cfg = dinov2_config(size)
        one = nnx.eval_shape(lambda c=cfg: DINOv2(replace(c, depth=1), rngs=nnx.Rngs(0)))
        sizes = {p: math.prod(s) for p, s in variable_paths(one).items() if "mask" not in p}
        layer = sum(n for p, n in sizes.items() if p.startswith("encoder.layer.0."))
        count = sum(sizes.values()) + (cfg.depth - 1) * layer
        assert round(count / 1e6, 2) == millions, (size, count)
    g = nnx.eval_shape(lambda: DINOv2(replace(dinov2_config("g"), depth=1), rngs=nnx.Rngs(0)))
    assert variable_paths(g)["encoder.layer.0.mlp.weights_in.kernel"] == (1536, 8192)


def test_bad_inputs_and_missing_weights(tmp_path):
    model = nnx.eval_shape(lambda: DINOv2(REG, rngs=nnx.Rngs(0)))
    with pytest.raises(ShapeError, match="multiples of the patch size 14"):
        model(jnp.zeros((1, 30, 28, 3)))
    with pytest.raises(ShapeError, match=r"\[B, H, W, 3\]"):
        model(jnp.zeros((1, 3, 28, 28)))
    from nnx_backbones.convert.dinov2 import pretrained_dinov2

    with pytest.raises(WeightsNotFoundError) as e:
        pretrained_dinov2("dinov2-vitb14-reg", cache_dir=tmp_path, download=False)
    assert "facebook/dinov2-with-registers-base" in str(e.value)
    with pytest.raises(WeightsError, match="not a DINOv2"):
        config_for("sd-vae-ft-ema")
