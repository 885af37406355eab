"""LightningDiT: the contract (shapes, hidden tokens, presets), gradients for every parameter,
RoPE actually used, and option errors. Forward parity is in test_dit_parity.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.lightning_dit import LightningDiT
from nnx_backbones.weights.assign import variables


def build(seed: int = 0, **kw) -> LightningDiT:
    base = dict(
        input_size=8,
        patch_size=2,
        in_channels=3,
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_classes=3,
        qk_norm="rms",
    )
    model = nnx.eval_shape(lambda: LightningDiT(**(base | kw), rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    for path, var in variables(model).items():
        v = (1.0 if path.endswith("scale") else 0.0) + 0.2 * rng.standard_normal(
            var.get_value().shape
        )
        var.set_value(jnp.asarray(v, jnp.float32))
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.RngKey):
            var.set_value(jax.random.key(seed))
        elif isinstance(var, nnx.RngCount):
            var.set_value(jnp.zeros((), jnp.uint32))
    return model


def _inputs():
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    return x, jnp.linspace(0.1, 0.9, 4), jnp.arange(4)


def test_grads_finite_and_nonzero_for_every_parameter():
    # One block has every kind of parameter; jit compiles the backward pass once.
    model = build(1, depth=1, qk_norm="layer", use_r=True, learn_sigma=True)
    x, t, y = _inputs()
    w = jax.random.normal(jax.random.key(3), (4, 8, 8, 6))
    loss = lambda m: jnp.sum(m(x, t, r=0.5 * t, y=y, full_output=True) * w)  # noqa: E731
    grads = nnx.jit(nnx.grad(loss))(model)
    flat = nnx.to_flat_state(grads)
    assert len(flat) == len(variables(model))
    names = {p for p, _ in flat}
    assert ("blocks", 0, "attn", "q_norm", "bias") in names  # the LayerNorm qk-norm
    assert ("blocks", 0, "mlp", "w12", "kernel") in names  # SwiGLU
    for path, g in flat:
        g = np.asarray(g.get_value())
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, path


def test_contract_and_rope_changes_the_output():
    model = build(2)
    x, t, y = _inputs()
    out, hidden = model(x, t, y=y, return_hidden_at=2)
    assert out.shape == x.shape and hidden.shape == (4, 16, 32)
    # The same weights without RoPE give another function.
    plain = build(2, use_rope=False)
    assert not np.allclose(out, plain(x, t, y=y), atol=1e-3)
    with pytest.raises(ValueError, match="norm kind"):
        build(0, qk_norm="batch")


def test_presets_and_swiglu_width():
    model = nnx.eval_shape(
        lambda: LightningDiT.from_preset(
            "LightningDiT-B/1", input_size=16, in_channels=32, rngs=nnx.Rngs(0)
        )
    )
    assert model.hidden_size == 768 and model.depth == 12 and model.patch_size == 1
    # SwiGLU hidden = int(2/3 · 4 · 768) = 2048: w12 [768, 2, 2048], w3 [2048, 768].
    assert model.blocks[0].mlp.w12.kernel.shape == (768, 2, 2048)
    assert model.blocks[0].mlp.w3.kernel.shape == (2048, 768)
    assert model.blocks[0].norm1.rms.scale.shape == (768,)
