"""LightningDDT (DiT^DH): contract, block numbering of hidden tokens, equal and unequal widths,
gradients for every parameter. Forward parity is in test_dit_parity.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.ddt import LightningDDT
from nnx_backbones.errors import ShapeError
from nnx_backbones.weights.assign import variables


def build(seed: int = 0, **kw) -> LightningDDT:
    base = dict(
        input_size=8,
        patch_size=2,
        in_channels=3,
        hidden_size=(32, 48),
        depth=(2, 1),
        num_heads=(4, 4),
        num_classes=3,
    )
    model = nnx.eval_shape(lambda: LightningDDT(**(base | kw), rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    for path, var in variables(model, nnx.Variable).items():  # params and the Fourier W
        if isinstance(var, nnx.RngKey | nnx.RngCount):
            continue
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
    model = build(1, use_r=True, depth=(1, 1))
    x, t, y = _inputs()
    w = jax.random.normal(jax.random.key(3), x.shape)
    loss = lambda m: jnp.sum(m(x, t, r=0.5 * t, y=y) * w)  # noqa: E731
    grads = nnx.to_flat_state(nnx.jit(nnx.grad(loss))(model))
    assert len(grads) == len(variables(model))
    assert any(p[0] == "s_projector" for p, _ in grads)
    for path, g in grads:
        g = np.asarray(g.get_value())
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, path


def test_hidden_numbering_and_widths():
    model = build(2)
    x, t, y = _inputs()
    out, h2 = model(x, t, y=y, return_hidden_at=2)  # last trunk block: encoder width
    _, h3 = model(x, t, y=y, return_hidden_at=3)  # first head block: decoder width
    assert out.shape == x.shape and h2.shape == (4, 16, 32) and h3.shape == (4, 16, 48)
    with pytest.raises(ValueError, match=r"not in 1\.\.3"):
        model(x, t, y=y, return_hidden_at=4)
    with pytest.raises(ShapeError, match=r"\[B, 8, 8, 3\]"):
        model(x[:, :4], t, y=y)
    same = build(3, hidden_size=(32, 32), num_classes=None)
    assert same.s_projector is None and same(x, t).shape == x.shape
    with pytest.raises(ValueError, match="unconditional"):
        same(x, t, y=y)
