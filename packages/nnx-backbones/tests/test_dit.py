"""DiT: preset shapes and parameter counts (eval_shape), the contract, label dropout, gradients,
remat, bf16 compute, checkpoint files round trip and strict import errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.contract import Backbone
from nnx_backbones.convert.dit import export_dit, load_dit, save_dit
from nnx_backbones.dit import DiT, dit_config
from nnx_backbones.embeddings import LabelEmbedder
from nnx_backbones.errors import ShapeError, WeightsError
from nnx_backbones.weights.assign import variables
from nnx_backbones.weights.io import read_state_dict, write_state_dict

# DiT paper (Table 4, 256×256 → 32×32×4 latents, 1000 classes, learned sigma): parameters.
PAPER_PARAMS = {"S/2": 33e6, "B/2": 130e6, "L/2": 458e6, "XL/2": 675e6}


def _abstract(name: str, **kw) -> DiT:
    return nnx.eval_shape(
        lambda: DiT.from_preset(
            name,
            input_size=32,
            in_channels=4,
            num_classes=1000,
            learn_sigma=True,
            rngs=nnx.Rngs(0),
            **kw,
        )
    )


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_paper(name):
    count = sum(x.size for x in jax.tree.leaves(nnx.state(_abstract(name), nnx.Param)))
    assert abs(count - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.01, count


@pytest.mark.parametrize("size", ["S", "B", "L", "XL"])
def test_preset_shapes_for_every_patch_size(size):
    # Depth is set to 1 here (tracing 28 blocks 16 times is slow); the full-depth presets are
    # traced by the parameter-count test above, and every block has the same shapes.
    hidden, depth, heads = {
        "S": (384, 12, 6),
        "B": (768, 12, 12),
        "L": (1024, 24, 16),
        "XL": (1152, 28, 16),
    }[size]
    for patch in (1, 2, 4, 8):
        cfg = dit_config(f"DiT-{size}/{patch}")
        assert cfg == dict(hidden_size=hidden, depth=depth, num_heads=heads, patch_size=patch)
        model = nnx.eval_shape(
            lambda: DiT(
                **(cfg | dict(depth=1)),
                input_size=32,
                in_channels=4,
                num_classes=1000,
                learn_sigma=True,
                rngs=nnx.Rngs(0),
            )
        )
        graphdef, state = nnx.split(model)
        assert state["x_embedder"]["kernel"].shape == (patch, patch, 4, hidden)
        assert state["final_layer"]["linear"]["kernel"].shape == (hidden, patch * patch * 8)
        assert state["blocks"][0]["attn"]["qkv"]["kernel"].shape == (hidden, 3, hidden)
        assert model.blocks[0].attn.num_heads == heads

        def fwd(state, x, t, y):
            return nnx.merge(graphdef, state)(x, t, y=y, return_hidden_at=1, full_output=True)

        x = jax.ShapeDtypeStruct((2, 32, 32, 4), jnp.float32)
        t = jax.ShapeDtypeStruct((2,), jnp.float32)
        y = jax.ShapeDtypeStruct((2,), jnp.int32)
        out, hid = jax.eval_shape(fwd, state, x, t, y)
        assert out.shape == (2, 32, 32, 8)
        assert hid.shape == (2, (32 // patch) ** 2, hidden)
    with pytest.raises(ValueError, match="Unknown DiT preset"):
        dit_config("M/3")


def _tiny(seed: int | None = 0, **kw) -> DiT:
    """A tiny DiT. With a seed it is built abstractly (no initialiser runs, which keeps the
    suite fast) and every parameter gets random non-zero N(0, 0.2²) values; seed=None runs the
    real initialisers."""
    base = dict(
        input_size=8,
        patch_size=2,
        in_channels=3,
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_classes=3,
        learn_sigma=True,
    )
    make = lambda: DiT(**(base | kw), rngs=nnx.Rngs(0, label_dropout=1))  # noqa: E731
    if seed is None:
        return make()
    model = nnx.eval_shape(make)
    rng = np.random.default_rng(seed)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            shape = var.get_value().shape
            var.set_value(jnp.asarray(0.2 * rng.standard_normal(shape), var.get_value().dtype))
        elif isinstance(var, nnx.RngKey):
            var.set_value(jax.random.key(seed))
        elif isinstance(var, nnx.RngCount):
            var.set_value(jnp.zeros((), jnp.uint32))
    return model


def _inputs(b=4):
    x = jax.random.normal(jax.random.key(0), (b, 8, 8, 3))
    return x, jnp.linspace(0.1, 0.9, b), jnp.arange(b) % 4  # labels 0, 1, 2 and null 3


def test_contract_hidden_and_errors():
    model = _tiny()
    assert isinstance(model, Backbone)
    x, t, y = _inputs()
    out, hidden = model(x, t, y=y, return_hidden_at=1)
    assert out.shape == x.shape and hidden.shape == (4, 16, 32)
    with pytest.raises(ShapeError, match=r"\[B, 8, 8, 3\]"):
        model(x[..., :2], t, y=y)
    with pytest.raises(ShapeError, match="t must have shape"):
        model(x, t[:2], y=y)
    with pytest.raises(ShapeError, match="integer class labels"):
        model(x, t, y=t)
    with pytest.raises(ValueError, match="use_r=False"):
        model(x, t, r=t, y=y)
    with pytest.raises(ValueError, match=r"not in 1\.\.2"):
        model(x, t, y=y, return_hidden_at=3)
    with pytest.raises(ValueError, match="unconditional"):
        _tiny(num_classes=None)(x, t, y=y)


def test_hidden_is_the_output_of_block_k():
    model = _tiny()
    x, t, y = _inputs()
    _, h1 = model(x, t, y=y, return_hidden_at=1)
    c = nnx.silu(model.condition(t, None, y, False))
    h = model.x_embedder(x) + model.pos_embed()
    np.testing.assert_allclose(h1, model.blocks[0](h, c), atol=1e-5)


def test_adaln_zero_init_blocks_are_identities_and_output_is_zero():
    model = _tiny(seed=None)
    x, t, y = _inputs()
    out, h2 = model(x, t, y=y, return_hidden_at=2)
    np.testing.assert_array_equal(out, 0.0)  # zero final layer
    np.testing.assert_allclose(h2, model.x_embedder(x) + model.pos_embed(), atol=1e-6)
    assert float(jnp.std(model.x_embedder.kernel[...])) > 0  # the rest is not zero


def test_label_dropout_rate_and_eval_never_drops():
    emb = LabelEmbedder(10, 8, 0.3, rngs=nnx.Rngs(0, label_dropout=3))
    y = jnp.arange(20_000) % 10
    dropped = np.asarray(emb.drop_labels(y)) == 10
    # Binomial(20000, 0.3): 5 standard deviations = 0.016.
    assert abs(dropped.mean() - 0.3) < 0.016
    table = emb.embedding_table.embedding[...]
    np.testing.assert_array_equal(emb(y[:50], train=False), table[y[:50]])
    # Through the network: p = 1 means every label becomes the null label; train=False keeps y.
    model = _tiny(class_dropout_prob=1.0)
    x, t, y = _inputs()
    null = jnp.full_like(y, 3)
    np.testing.assert_allclose(model(x, t, y=y, train=True), model(x, t, y=null), atol=1e-6)
    assert not np.allclose(model(x, t, y=y), model(x, t, y=null), atol=1e-3)
    np.testing.assert_allclose(model(x, t), model(x, t, y=null), atol=1e-6)  # y=None → null


def test_grads_finite_and_nonzero_for_every_parameter():
    # Labels 0, 1, 2 and the null label 3 all appear, so every embedding row gets a gradient.
    # One block has every kind of parameter; jit compiles the backward pass once.
    model = _tiny(seed=1, use_r=True, depth=1)
    x, t, y = _inputs()
    w = jax.random.normal(jax.random.key(9), (4, 8, 8, 6))
    loss = lambda m: jnp.sum(m(x, t, r=0.5 * t, y=y, full_output=True) * w)  # noqa: E731
    grads = nnx.jit(nnx.grad(loss))(model)
    grads = nnx.to_flat_state(grads)
    assert len(grads) == len(variables(model))
    for path, g in grads:
        g = np.asarray(g.get_value())
        assert np.all(np.isfinite(g)), path
        assert np.abs(g).max() > 0, path


def test_remat_wraps_each_block_in_a_checkpoint():
    model, remat = _tiny(seed=2), _tiny(seed=2, remat=True)
    x, t, y = _inputs()

    def loss(m):
        return jnp.sum(m(x, t, y=y))

    # The gradient's jaxpr holds one checkpoint (remat2) region per block, only with remat.
    prims = [str(jax.make_jaxpr(lambda m: nnx.grad(loss)(m))(m)) for m in (model, remat)]
    assert prims[0].count("remat2[") == 0
    assert prims[1].count("remat2[") >= 2


def test_bf16_compute_with_f32_params():
    model, ref = _tiny(seed=3, dtype=jnp.bfloat16), _tiny(seed=3)
    assert all(v.get_value().dtype == jnp.float32 for v in variables(model).values())
    x, t, y = _inputs()
    out = nnx.jit(lambda m, x, t, y: m(x, t, y=y))(model, x, t, y)
    want = ref(x, t, y=y)
    assert out.dtype == jnp.float32
    err = float(jnp.max(jnp.abs(out - want)) / jnp.max(jnp.abs(want)))
    assert 0 < err < 0.05  # bf16 rounding, not garbage


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt"])
def test_checkpoint_file_round_trip_is_exact(tmp_path, suffix):
    if suffix == ".pt":
        pytest.importorskip("torch")
    model = _tiny(seed=4)
    save_dit(model, tmp_path / f"dit{suffix}")
    sd = read_state_dict(tmp_path / f"dit{suffix}")
    assert sd["x_embedder.proj.weight"].shape == (32, 3, 2, 2)
    assert sd["blocks.1.attn.qkv.weight"].shape == (96, 32)
    assert sd["final_layer.linear.weight"].shape == (2 * 2 * 6, 32)
    assert sd["pos_embed"].shape == (1, 16, 32)
    other = load_dit(_tiny(seed=7), tmp_path / f"dit{suffix}")
    for (p1, a), (p2, b) in zip(
        nnx.to_flat_state(nnx.state(model, nnx.Param)),
        nnx.to_flat_state(nnx.state(other, nnx.Param)),
        strict=True,
    ):
        assert p1 == p2
        np.testing.assert_array_equal(a.get_value(), b.get_value())


def test_training_checkpoint_ema_entry(tmp_path):
    torch = pytest.importorskip("torch")
    model = _tiny(seed=5)
    sd = {k: torch.from_numpy(v.copy()) for k, v in export_dit(model).items()}
    bad = {k: v * 0 for k, v in sd.items()}
    torch.save({"model": bad, "ema": sd, "args": None}, tmp_path / "0400000.pt")
    other = load_dit(_tiny(seed=6), tmp_path / "0400000.pt", key="ema")
    np.testing.assert_array_equal(
        other.blocks[0].attn.qkv.kernel[...], model.blocks[0].attn.qkv.kernel[...]
    )


def test_strict_import_lists_every_problem(tmp_path):
    model = _tiny()
    sd = export_dit(model)
    # A checkpoint without learned sigma, one block more and a stray key, one key missing.
    sd["final_layer.linear.weight"] = np.zeros((12, 32), np.float32)
    sd["blocks.2.attn.qkv.weight"] = np.zeros((96, 32), np.float32)
    sd["ema_decay"] = np.zeros(())
    del sd["blocks.0.mlp.fc2.bias"]
    write_state_dict(tmp_path / "bad.safetensors", sd)
    before = np.asarray(model.final_layer.linear.kernel[...]).copy()
    with pytest.raises(WeightsError) as err:
        load_dit(model, tmp_path / "bad.safetensors")
    msg = str(err.value)
    for needle in (
        "blocks.2.attn.qkv.weight",
        "ema_decay",
        "blocks.0.mlp.fc2.bias",
        "final_layer.linear.weight",
        "(32, 24)",
        "(32, 12)",
        "bad.safetensors",
    ):
        assert needle in msg, needle
    np.testing.assert_array_equal(model.final_layer.linear.kernel[...], before)
    # A checkpoint for another resolution: pos_embed and nothing else is wrong.
    sd = export_dit(_tiny(input_size=16))
    with pytest.raises(WeightsError, match="pos_embed"):
        load_dit(_tiny(), sd)
