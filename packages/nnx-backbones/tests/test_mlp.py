"""MLP backbone: NumPy parity (random non-zero weights), shapes for [B, D] and [B, T, D],
labels / conditioning arrays / second time r, hidden tokens, gradients and input errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.contract import Backbone
from nnx_backbones.errors import ShapeError
from nnx_backbones.mlp import MLP
from nnx_backbones.weights.assign import variables


def build(seed: int = 0, **kw) -> tuple[MLP, dict[str, np.ndarray]]:
    """Abstract build, then random non-zero parameters (LayerNorm scales 1 + noise)."""
    base = dict(width=16, depth=2)
    model = nnx.eval_shape(lambda: MLP(**(base | kw), rngs=nnx.Rngs(0, label_dropout=1)))
    rng = np.random.default_rng(seed)
    params = {}
    for path, var in variables(model).items():
        v = (1.0 if path.endswith("scale") else 0.0) + 0.3 * rng.standard_normal(
            var.get_value().shape
        )
        var.set_value(jnp.asarray(v, jnp.float32))
        params[path] = v.astype(np.float32).astype(np.float64)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.RngKey):
            var.set_value(jax.random.key(seed))
        elif isinstance(var, nnx.RngCount):
            var.set_value(jnp.zeros((), jnp.uint32))
    return model, params


def numpy_mlp(p, x, t, r=None, y=None, cond=None):
    def lin(name, v):
        return v @ p[f"{name}.kernel"] + p[f"{name}.bias"]

    def ln(name, v):
        v = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-6)
        return v * p[f"{name}.scale"] + p[f"{name}.bias"]

    def silu(v):
        return v / (1 + np.exp(-v))

    def temb(name, tt):
        freqs = np.exp(-math.log(10_000) * np.arange(32) / 32)
        args = 1000 * tt[:, None] * freqs
        f = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
        return lin(f"{name}.linear_2", silu(lin(f"{name}.linear_1", f)))

    emb = temb("t_embed", t)
    if r is not None:
        emb = emb + temb("r_embed", r)
    if y is not None:
        emb = emb + p["y_embed.embedding_table.embedding"][y]
    if cond is not None:
        emb = emb + lin("y_embed", cond.reshape(len(cond), -1))
    emb = silu(emb)
    h = lin("input_proj", x.reshape(len(x), -1))
    for k in range(2):
        b = f"blocks.{k}"
        h = h + lin(f"{b}.fc_out", silu(lin(f"{b}.fc_in", ln(f"{b}.norm", h)) + emb))
    return lin("output_proj", ln("out_norm", h)).reshape(x.shape)


def test_labels_and_r_match_numpy_reference():
    model, p = build(0, data_shape=(2,), num_classes=3, use_r=True)
    assert isinstance(model, Backbone)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2)).astype(np.float32)
    t, r, y = np.array([0.0, 0.2, 0.5, 1.0], np.float32), np.full(4, 0.1, np.float32), np.arange(4)
    got = model(jnp.asarray(x), jnp.asarray(t), r=jnp.asarray(r), y=jnp.asarray(y))
    want = numpy_mlp(p, x, t, r=r, y=y)
    assert np.abs(want).mean() > 0.1
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-3)
    # y=None is the null label (3); labels are dropped to it with train=True at rate 1.
    np.testing.assert_allclose(
        model(jnp.asarray(x), jnp.asarray(t), r=jnp.asarray(r)),
        numpy_mlp(p, x, t, r=r, y=np.full(4, 3)),
        rtol=1e-3,
        atol=1e-3,
    )


def test_action_chunks_with_observation_conditioning():
    model, p = build(2, data_shape=(5, 3), cond_dim=6)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    obs = rng.standard_normal((4, 2, 3)).astype(np.float32)  # flattened to 6 features
    t = np.linspace(0, 1, 4).astype(np.float32)
    out, hidden = model(jnp.asarray(x), jnp.asarray(t), y=jnp.asarray(obs), return_hidden_at=2)
    assert out.shape == (4, 5, 3) and hidden.shape == (4, 16)
    np.testing.assert_allclose(np.asarray(out), numpy_mlp(p, x, t, cond=obs), rtol=1e-3, atol=1e-3)


def test_label_dropout_and_grads():
    model, _ = build(4, data_shape=(2,), num_classes=3, label_dropout=1.0, use_r=True)
    x, t, y = jnp.ones((4, 2)), jnp.linspace(0.1, 0.9, 4), jnp.arange(4)
    null = jnp.full((4,), 3)
    np.testing.assert_allclose(model(x, t, r=t, y=y, train=True), model(x, t, r=t, y=null))
    assert not np.allclose(model(x, t, r=t, y=y), model(x, t, r=t, y=null))
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(jnp.sin(m(x, t, r=0.5 * t, y=y)))))(model)
    flat = nnx.to_flat_state(grads)
    assert len(flat) == len(variables(model))
    for path, g in flat:
        g = np.asarray(g.get_value())
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, path


def test_bad_inputs_raise():
    model, _ = build(5, data_shape=(2,))
    x, t = jnp.ones((3, 2)), jnp.ones(3)
    with pytest.raises(ShapeError, match=r"\[B, 2\]"):
        model(jnp.ones((3, 4)), t)
    with pytest.raises(ShapeError, match="t must have shape"):
        model(x, jnp.ones(2))
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, y=jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="use_r=False"):
        model(x, t, r=t)
    with pytest.raises(ValueError, match=r"not in 1\.\.2"):
        model(x, t, return_hidden_at=5)
    labelled, _ = build(5, data_shape=(2,), num_classes=3)
    with pytest.raises(ShapeError, match="integer labels"):
        labelled(x, t, y=jnp.ones(3))
    with pytest.raises(ValueError, match="not both"):
        MLP((2,), num_classes=3, cond_dim=2, rngs=nnx.Rngs(0))
