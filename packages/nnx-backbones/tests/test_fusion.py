"""fusion_boundary: an exact identity under every transform, and a fusion boundary on XLA:CPU.

The second property is checked on the compiled train-step HLO of a stack of adaLN blocks: the
largest fused computation must not grow with depth. Without the boundary it grows linearly (the
residual stream and its cotangent are recomputed from the first block inside each consumer), which
the control case shows, so the check can fail.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.layers import adaln
from nnx_backbones.layers.adaln import AdaLNBlock
from nnx_backbones.layers.fusion import fusion_boundary


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_identity_for_every_value(dtype):
    x = jnp.asarray([1.5, -0.0, 0.0, jnp.inf, -jnp.inf, jnp.nan, 1e-30, -3e38], dtype)
    for arr in (x, x[::-1], x.reshape(2, 4)):
        y = jax.jit(fusion_boundary)(arr)
        assert y.dtype == arr.dtype and y.shape == arr.shape
        # Bitwise equal, so -0.0 keeps its sign and nan stays nan, whatever comes first.
        np.testing.assert_array_equal(
            np.asarray(y).view(np.uint16 if dtype == jnp.bfloat16 else np.uint32),
            np.asarray(arr).view(np.uint16 if dtype == jnp.bfloat16 else np.uint32),
        )
    assert fusion_boundary(jnp.zeros((0, 3))).shape == (0, 3)
    # Subnormals: XLA:CPU flushes them to zero in every arithmetic op (the residual add too).
    sub = jax.jit(fusion_boundary)(jnp.asarray([1e-40, -1e-40], jnp.float32))
    assert np.all((np.asarray(sub) == 0) | (np.asarray(sub) == np.float32([1e-40, -1e-40])))


def test_derivatives_are_exact():
    x = jax.random.normal(jax.random.key(0), (3, 5))
    w = jax.random.normal(jax.random.key(1), (3, 5))
    t = jax.random.normal(jax.random.key(2), (3, 5))

    def f(x):
        return jnp.sum(w * fusion_boundary(x) ** 2)

    np.testing.assert_array_equal(jax.grad(f)(x), 2 * w * x)
    y, dy = jax.jvp(fusion_boundary, (x,), (t,))
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dy, t)
    # Forward-over-reverse, as JVP-based objectives (MeanFlow, sCM) use it.
    _, hvp = jax.jvp(jax.grad(f), (x,), (t,))
    np.testing.assert_array_equal(hvp, 2 * w * t)


def _largest_fusion(depth: int) -> int:
    """Instructions in the largest fused computation of a jitted grad through `depth` blocks."""
    blocks = nnx.List([AdaLNBlock(32, 2, rngs=nnx.Rngs(i)) for i in range(depth)])
    for blk in blocks:  # non-zero gates, so every block's backward is live
        blk.adaLN_modulation.kernel.set_value(
            0.1 * jax.random.normal(jax.random.key(9), blk.adaLN_modulation.kernel.shape)
        )
    graphdef, params = nnx.split(blocks)

    def loss(params, x, c):
        h = x
        for blk in nnx.merge(graphdef, params):
            h = blk(h, c)
        return jnp.mean(h**2)

    x, c = jnp.ones((2, 16, 32)), jnp.ones((2, 32))
    hlo = jax.jit(jax.grad(loss)).lower(params, x, c).compile().as_text()
    bodies = re.findall(r"\n%fused_computation[^\n]*\{\n(.*?)\n\}", hlo, re.S)
    assert bodies, "no fused computations found: the HLO text format changed"
    return max(body.count("\n") + 1 for body in bodies)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the boundary only acts on XLA:CPU")
def test_residual_stream_is_not_refused_into_every_consumer(monkeypatch):
    shallow, deep = _largest_fusion(2), _largest_fusion(6)
    assert deep <= shallow + 5, (
        f"largest fusion grows with depth ({shallow} instructions at depth 2, {deep} at 6): "
        "XLA:CPU is recomputing the residual stream again; see nnx_backbones.layers.fusion"
    )
    # Control: without the boundary the same program shows the growth this test guards against.
    monkeypatch.setattr(adaln, "fusion_boundary", lambda x: x)
    shallow_off, deep_off = _largest_fusion(2), _largest_fusion(6)
    assert deep_off > shallow_off + 20, (
        f"without fusion_boundary the largest fusion no longer grows with depth "
        f"({shallow_off} → {deep_off}): XLA:CPU changed and the boundary may be unnecessary"
    )
