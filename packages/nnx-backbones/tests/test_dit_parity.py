"""Forward parity of DiT, LightningDiT and LightningDDT against independent references.

Every reference is written here from the papers / the original PyTorch code, not from the
package: DiT in NumPy (and in PyTorch when installed) reading the *release* state-dict layout,
so the same test also checks `convert.dit`; LightningDiT/DDT in NumPy with RoPE as complex
rotations. All weights are random and non-zero — adaLN and final layers included — since the
zero-initialised modulation would make a parity test pass vacuously.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.dit import export_dit, load_dit
from nnx_backbones.ddt import LightningDDT
from nnx_backbones.dit import DiT
from nnx_backbones.lightning_dit import LightningDiT
from nnx_backbones.weights.assign import variables

P, C, S, D, HEADS, DEPTH, K = 2, 3, 8, 32, 4, 2, 3  # patch, channels, side, width, heads, ...


# ---------------------------------------------------------------- reference pieces (NumPy)
def mae_pos_embed(dim: int, grid: int) -> np.ndarray:
    """MAE/DiT `get_2d_sincos_pos_embed`, transcribed."""
    grid_h = np.arange(grid, dtype=np.float32)
    grid_w = np.arange(grid, dtype=np.float32)
    g = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, grid, grid)

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(dim // 2, g[0]), one_d(dim // 2, g[1])], axis=1)


def timestep_embedding(t, dim=256, max_period=10000):
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half) / half)
    args = t[:, None] * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], axis=-1)


def silu(x):
    return x / (1 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ln(x, eps=1e-6):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def rms(x, w, eps=1e-6):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w


def lin(x, w, b):  # PyTorch layout: w [out, in]
    return x @ w.T + b


def attention(q, k, v):  # [B, N, T, dh]
    return softmax(q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])) @ v


# ---------------------------------------------------------------- DiT in the release layout
def random_release_state(rng, *, learn_sigma=True, use_r=False) -> dict[str, np.ndarray]:
    def n(*shape, s=0.2):
        return (s * rng.standard_normal(shape)).astype(np.float32)

    out_c = 2 * C if learn_sigma else C
    sd = {
        "pos_embed": mae_pos_embed(D, S // P)[None].astype(np.float32),
        "x_embedder.proj.weight": n(D, C, P, P),
        "x_embedder.proj.bias": n(D),
        "y_embedder.embedding_table.weight": n(K + 1, D),
        "final_layer.linear.weight": n(P * P * out_c, D),
        "final_layer.linear.bias": n(P * P * out_c),
        "final_layer.adaLN_modulation.1.weight": n(2 * D, D),
        "final_layer.adaLN_modulation.1.bias": n(2 * D),
    }
    for e in ("t_embedder", "r_embedder") if use_r else ("t_embedder",):
        sd |= {f"{e}.mlp.0.weight": n(D, 256), f"{e}.mlp.0.bias": n(D)}
        sd |= {f"{e}.mlp.2.weight": n(D, D), f"{e}.mlp.2.bias": n(D)}
    for i in range(DEPTH):
        b = f"blocks.{i}"
        sd |= {f"{b}.attn.qkv.weight": n(3 * D, D), f"{b}.attn.qkv.bias": n(3 * D)}
        sd |= {f"{b}.attn.proj.weight": n(D, D), f"{b}.attn.proj.bias": n(D)}
        sd |= {f"{b}.mlp.fc1.weight": n(4 * D, D), f"{b}.mlp.fc1.bias": n(4 * D)}
        sd |= {f"{b}.mlp.fc2.weight": n(D, 4 * D), f"{b}.mlp.fc2.bias": n(D)}
        sd |= {f"{b}.adaLN_modulation.1.weight": n(6 * D, D)}
        sd |= {f"{b}.adaLN_modulation.1.bias": n(6 * D)}
    return sd


def numpy_dit(sd, x_nhwc, t, y, r=None):
    """DiT.forward (facebookresearch/DiT models.py) in NumPy, NCHW as the original."""
    x = x_nhwc.transpose(0, 3, 1, 2).astype(np.float64)
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    b, _, h, w = x.shape
    xp = x.reshape(b, C, h // P, P, w // P, P)  # conv with kernel = stride = p
    tok = np.einsum("bchiwj,dcij->bhwd", xp, sd["x_embedder.proj.weight"]).reshape(b, -1, D)
    tok = tok + sd["x_embedder.proj.bias"] + sd["pos_embed"]

    def temb(name, tt):
        e = lin(timestep_embedding(tt * 1000), sd[f"{name}.mlp.0.weight"], sd[f"{name}.mlp.0.bias"])
        return lin(silu(e), sd[f"{name}.mlp.2.weight"], sd[f"{name}.mlp.2.bias"])

    c = temb("t_embedder", t) + sd["y_embedder.embedding_table.weight"][y]
    if r is not None:
        c = c + temb("r_embedder", r)
    for i in range(DEPTH):
        pre = f"blocks.{i}."
        mod = lin(
            silu(c), sd[pre + "adaLN_modulation.1.weight"], sd[pre + "adaLN_modulation.1.bias"]
        )
        sh1, sc1, g1, sh2, sc2, g2 = np.split(mod[:, None], 6, axis=-1)
        a = ln(tok) * (1 + sc1) + sh1
        qkv = lin(a, sd[pre + "attn.qkv.weight"], sd[pre + "attn.qkv.bias"])
        qkv = qkv.reshape(b, -1, 3, HEADS, D // HEADS).transpose(2, 0, 3, 1, 4)
        o = attention(qkv[0], qkv[1], qkv[2]).transpose(0, 2, 1, 3).reshape(b, -1, D)
        tok = tok + g1 * lin(o, sd[pre + "attn.proj.weight"], sd[pre + "attn.proj.bias"])
        m = ln(tok) * (1 + sc2) + sh2
        m = lin(
            gelu_tanh(lin(m, sd[pre + "mlp.fc1.weight"], sd[pre + "mlp.fc1.bias"])),
            sd[pre + "mlp.fc2.weight"],
            sd[pre + "mlp.fc2.bias"],
        )
        tok = tok + g2 * m
    fl = "final_layer."
    sh, sc = np.split(
        lin(silu(c), sd[fl + "adaLN_modulation.1.weight"], sd[fl + "adaLN_modulation.1.bias"])[
            :, None
        ],
        2,
        axis=-1,
    )
    out = lin(ln(tok) * (1 + sc) + sh, sd[fl + "linear.weight"], sd[fl + "linear.bias"])
    gh, gw, co = h // P, w // P, out.shape[-1] // (P * P)
    out = np.einsum("nhwpqc->nchpwq", out.reshape(b, gh, gw, P, P, co))
    return out.reshape(b, co, h, w).transpose(0, 2, 3, 1)  # back to channels-last


def torch_dit(sd, x_nhwc, t, y, r=None):
    """The same forward with torch.nn.functional (conv2d, layer_norm, SDPA)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    s = {k: torch.from_numpy(v.astype(np.float64)) for k, v in sd.items()}
    x = torch.from_numpy(x_nhwc.astype(np.float64)).permute(0, 3, 1, 2)
    tok = F.conv2d(x, s["x_embedder.proj.weight"], s["x_embedder.proj.bias"], stride=P)
    tok = tok.flatten(2).transpose(1, 2) + s["pos_embed"]

    def temb(name, tt):
        f = torch.from_numpy(timestep_embedding(tt * 1000))
        e = F.linear(f, s[f"{name}.mlp.0.weight"], s[f"{name}.mlp.0.bias"])
        return F.linear(F.silu(e), s[f"{name}.mlp.2.weight"], s[f"{name}.mlp.2.bias"])

    c = temb("t_embedder", t) + s["y_embedder.embedding_table.weight"][torch.from_numpy(y)]
    if r is not None:
        c = c + temb("r_embedder", r)
    b = x.shape[0]
    for i in range(DEPTH):
        p = f"blocks.{i}."
        mod = F.linear(
            F.silu(c), s[p + "adaLN_modulation.1.weight"], s[p + "adaLN_modulation.1.bias"]
        )
        sh1, sc1, g1, sh2, sc2, g2 = mod.unsqueeze(1).chunk(6, dim=-1)
        a = F.layer_norm(tok, (D,), eps=1e-6) * (1 + sc1) + sh1
        qkv = F.linear(a, s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, -1, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, D)
        tok = tok + g1 * F.linear(o, s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])
        m = F.layer_norm(tok, (D,), eps=1e-6) * (1 + sc2) + sh2
        m = F.gelu(F.linear(m, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"]), approximate="tanh")
        tok = tok + g2 * F.linear(m, s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"])
    fl = "final_layer."
    mod = F.linear(
        F.silu(c), s[fl + "adaLN_modulation.1.weight"], s[fl + "adaLN_modulation.1.bias"]
    )
    sh, sc = mod.unsqueeze(1).chunk(2, dim=-1)
    out = F.linear(
        F.layer_norm(tok, (D,), eps=1e-6) * (1 + sc) + sh,
        s[fl + "linear.weight"],
        s[fl + "linear.bias"],
    )
    gh = S // P
    co = out.shape[-1] // (P * P)
    out = torch.einsum("nhwpqc->nchpwq", out.reshape(b, gh, gh, P, P, co))
    return out.reshape(b, co, S, S).permute(0, 2, 3, 1).numpy()


def _inputs(rng):
    x = rng.standard_normal((4, S, S, C)).astype(np.float32)
    t = np.array([0.05, 0.3, 0.6, 0.9], np.float32)
    return x, t, np.array([0, 1, 2, K], np.int32)  # K = null label


def _tiny_dit(**kw) -> DiT:
    # Built abstractly (no initialiser runs): every parameter is then loaded from `sd`.
    return nnx.eval_shape(
        lambda: DiT(
            input_size=S,
            patch_size=P,
            in_channels=C,
            hidden_size=D,
            depth=DEPTH,
            num_heads=HEADS,
            num_classes=K,
            rngs=nnx.Rngs(0),
            **kw,
        )
    )


@pytest.mark.parametrize("use_r", [False, True])
def test_dit_matches_numpy_reference_from_release_layout(use_r):
    rng = np.random.default_rng(0)
    sd = random_release_state(rng, use_r=use_r)
    model = load_dit(_tiny_dit(learn_sigma=True, use_r=use_r), sd)
    x, t, y = _inputs(rng)
    r = np.array([0.1, 0.5, 0.2, 0.0], np.float32) if use_r else None
    got = np.asarray(
        model(
            jnp.asarray(x),
            jnp.asarray(t),
            y=jnp.asarray(y),
            r=None if r is None else jnp.asarray(r),
            full_output=True,
        )
    )
    want = numpy_dit(sd, x, t, y, r)
    assert got.shape == (4, S, S, 2 * C)
    assert np.abs(want).mean() > 0.1  # a non-trivial output
    # float32 vs float64: sin/cos of 1000·t alone carry ~1e-4 phase errors.
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    # Without full_output the learned-sigma half is dropped.
    np.testing.assert_array_equal(
        np.asarray(
            model(
                jnp.asarray(x),
                jnp.asarray(t),
                y=jnp.asarray(y),
                r=None if r is None else jnp.asarray(r),
            )
        ),
        got[..., :C],
    )
    # Export gives back the very same state dict.
    exported = export_dit(model)
    assert sorted(exported) == sorted(sd)
    for k in sd:
        np.testing.assert_allclose(exported[k], sd[k], atol=1e-6 if k == "pos_embed" else 0)


def test_dit_matches_torch_reference():
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    sd = random_release_state(rng)
    model = load_dit(_tiny_dit(learn_sigma=True), sd)
    x, t, y = _inputs(rng)
    got = np.asarray(model(jnp.asarray(x), jnp.asarray(t), y=jnp.asarray(y), full_output=True))
    np.testing.assert_allclose(got, torch_dit(sd, x, t, y), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- LightningDiT / DDT (NumPy)
def build(cls, seed: int, **kw) -> tuple[nnx.Module, dict[str, np.ndarray]]:
    """Build abstractly, give every parameter random non-zero values (norm scales 1 + noise);
    return the model and its parameters by dotted path (float64)."""
    model = nnx.eval_shape(lambda: cls(**kw, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    out = {}
    for path, var in variables(model).items():
        shape = var.get_value().shape
        scale_param = path.endswith("scale")
        v = (1.0 if scale_param else 0.0) + 0.2 * rng.standard_normal(shape)
        var.set_value(jnp.asarray(v, jnp.float32))
        out[path] = v.astype(np.float32).astype(np.float64)
    return model, out


def rope_complex(x, grid):
    """EVA 2-D RoPE as complex rotations: pair (2i, 2i+1) ↦ z·e^{iθ}; rows then columns."""
    tkn, dh = x.shape[2:]
    half = dh // 2
    f = 1.0 / 10000 ** (np.arange(0, half, 2) / half)
    hh, ww = np.divmod(np.arange(tkn), grid[1])
    theta = np.concatenate([hh[:, None] * f, ww[:, None] * f], axis=1)  # [T, dh/2]
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * theta)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def ref_block(p, pre, x, c, *, heads, grid, qk_norm, wo_shift, rope=True):
    """A LightningDiT block in NumPy; params by nnx path (kernels [in, out])."""

    def L(name, v):  # merged kernels ([D, 3, D] qkv, [D, 2, H] w12) flattened to [in, out]
        w = p[f"{pre}{name}.kernel"]
        return v @ w.reshape(w.shape[0], -1) + p[f"{pre}{name}.bias"].reshape(-1)

    def norm(name, v):
        return rms(v, p[f"{pre}{name}.rms.scale"])

    mod = L("adaLN_modulation", c)
    if mod.ndim == 2:
        mod = mod[:, None]
    if wo_shift:
        sc1, g1, sc2, g2 = np.split(mod, 4, axis=-1)
        sh1 = sh2 = 0.0
    else:
        sh1, sc1, g1, sh2, sc2, g2 = np.split(mod, 6, axis=-1)
    b, tkn, d = x.shape
    a = norm("norm1", x) * (1 + sc1) + sh1
    qkv = L("attn.qkv", a).reshape(b, tkn, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    if qk_norm == "rms":
        q, k = rms(q, p[f"{pre}attn.q_norm.scale"]), rms(k, p[f"{pre}attn.k_norm.scale"])
    elif qk_norm == "layer":
        q = ln(q) * p[f"{pre}attn.q_norm.scale"] + p[f"{pre}attn.q_norm.bias"]
        k = ln(k) * p[f"{pre}attn.k_norm.scale"] + p[f"{pre}attn.k_norm.bias"]
    if rope:
        q, k = rope_complex(q, grid), rope_complex(k, grid)
    o = attention(q, k, v).transpose(0, 2, 1, 3).reshape(b, tkn, d)
    x = x + g1 * L("attn.proj", o)
    m = norm("norm2", x) * (1 + sc2) + sh2
    hdim = p[f"{pre}mlp.w3.kernel"].shape[0]
    x12 = L("mlp.w12", m)
    return x + g2 * L("mlp.w3", silu(x12[..., :hdim]) * x12[..., hdim:])


def ref_head(p, h, c, grid):
    mod = c @ p["final_layer.adaLN_modulation.kernel"] + p["final_layer.adaLN_modulation.bias"]
    if mod.ndim == 2:
        mod = mod[:, None]
    sh, sc = np.split(mod, 2, axis=-1)
    out = rms(h, p["final_layer.norm_final.rms.scale"]) * (1 + sc) + sh
    out = out @ p["final_layer.linear.kernel"] + p["final_layer.linear.bias"]
    b = h.shape[0]
    co = out.shape[-1] // (P * P)
    out = out.reshape(b, grid[0], grid[1], P, P, co).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(b, grid[0] * P, grid[1] * P, co)


def ref_embed(p, name, x, dim, grid):
    b = x.shape[0]
    xp = x.reshape(b, grid[0], P, grid[1], P, C)
    tok = np.einsum("bhiwjc,ijcd->bhwd", xp, p[f"{name}.kernel"]).reshape(b, -1, dim)
    return tok + p[f"{name}.bias"] + mae_pos_embed(dim, grid[0])


def ref_temb(p, name, t):
    e = timestep_embedding(t * 1000) @ p[f"{name}.linear_1.kernel"] + p[f"{name}.linear_1.bias"]
    return silu(e) @ p[f"{name}.linear_2.kernel"] + p[f"{name}.linear_2.bias"]


@pytest.mark.parametrize(("qk_norm", "wo_shift"), [("rms", False), ("layer", True)])
def test_lightning_dit_matches_numpy_reference(qk_norm, wo_shift):
    model, p = build(
        LightningDiT,
        2,
        input_size=S,
        patch_size=P,
        in_channels=C,
        hidden_size=D,
        depth=DEPTH,
        num_heads=HEADS,
        num_classes=K,
        qk_norm=qk_norm,
        wo_shift=wo_shift,
    )
    rng = np.random.default_rng(3)
    x, t, y = _inputs(rng)
    grid = (S // P, S // P)
    h = ref_embed(p, "x_embedder", x.astype(np.float64), D, grid)
    c = silu(ref_temb(p, "t_embedder", t) + p["y_embedder.embedding_table.embedding"][y])
    for i in range(DEPTH):
        h = ref_block(
            p, f"blocks.{i}.", h, c, heads=HEADS, grid=grid, qk_norm=qk_norm, wo_shift=wo_shift
        )
    want = ref_head(p, h, c, grid)
    got = np.asarray(model(jnp.asarray(x), jnp.asarray(t), y=jnp.asarray(y)))
    assert np.abs(want).mean() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("widths", [(32, 48), (32, 32)])
def test_lightning_ddt_matches_numpy_reference(widths):
    d_enc, d_dec = widths
    model, p = build(
        LightningDDT,
        4,
        input_size=S,
        patch_size=P,
        in_channels=C,
        hidden_size=widths,
        depth=(2, 1),
        num_heads=(4, 4),
        num_classes=K,
    )
    assert (model.s_projector is None) == (d_enc == d_dec)
    rng = np.random.default_rng(5)
    x, t, y = _inputs(rng)
    grid = (S // P, S // P)
    t_emb = ref_temb(p, "t_embedder", t)
    c = silu(t_emb + p["y_embedder.embedding_table.embedding"][y])
    s = ref_embed(p, "s_embedder", x.astype(np.float64), d_enc, grid)
    for i in range(2):
        s = ref_block(
            p, f"encoder_blocks.{i}.", s, c, heads=4, grid=grid, qk_norm=None, wo_shift=False
        )
    s = silu(t_emb[:, None] + s)
    if d_enc != d_dec:
        s = s @ p["s_projector.kernel"] + p["s_projector.bias"]
    h = ref_embed(p, "x_embedder", x.astype(np.float64), d_dec, grid)
    h = ref_block(p, "decoder_blocks.0.", h, s, heads=4, grid=grid, qk_norm=None, wo_shift=False)
    want = ref_head(p, h, s, grid)
    got, hidden = model(jnp.asarray(x), jnp.asarray(t), y=jnp.asarray(y), return_hidden_at=3)
    assert hidden.shape == (4, grid[0] * grid[1], d_dec)
    assert np.abs(want).mean() > 0.1
    # Outputs reach |x| ~ 10²-10³ (random weights through two stacks): compare relative to scale.
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
