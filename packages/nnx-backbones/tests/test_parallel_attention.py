"""Context-parallel attention on 8 simulated CPU devices: ring and Ulysses equal single-device
attention (values and gradients), with and without a frame-causal mask; the ring never gathers
the sequence and its attention activations per device shrink as 1/context; activation pins are
the identity without a mesh; bad splits get clear errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nnx_backbones.layers import parallel
from nnx_backbones.layers.attention import folded_attention, multi_head_attention

B, T, N, DH = 4, 16, 4, 8
AXES = ("data", "fsdp", "tensor", "context")


def _mesh(data=1, tensor=1, context=1, n=None) -> Mesh:
    devices = np.asarray(jax.devices()[: n or data * tensor * context])
    return Mesh(devices.reshape(data, 1, tensor, context), AXES)


def _qkv():
    keys = jax.random.split(jax.random.key(0), 4)
    return [jax.random.normal(k, (B, T, N, DH)) for k in keys]


def _value_and_grads(impl, mesh, causal_block):
    q, k, v, w = _qkv()

    def loss(q, k, v):
        out = multi_head_attention(q, k, v, impl, causal_block=causal_block)
        return jnp.sum(w * out), out

    fn = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    if mesh is None:
        return jax.jit(fn)(q, k, v), None
    s = NamedSharding(mesh, P(("data", "fsdp"), "context", "tensor"))
    with jax.set_mesh(mesh):
        compiled = jax.jit(fn, in_shardings=(s, s, s)).lower(q, k, v).compile()
    return compiled(q, k, v), compiled


@pytest.fixture(scope="module")
def reference():
    return {cb: _value_and_grads("folded", None, cb)[0] for cb in (None, 4)}


@pytest.mark.parametrize(
    "impl, sizes",
    [("ring", dict(data=2, tensor=2, context=2)), ("ulysses", dict(data=2, context=4))],
)
@pytest.mark.parametrize("causal_block", [None, 4])
def test_context_parallel_attention_equals_one_device(reference, impl, sizes, causal_block):
    ((_, out), grads), compiled = _value_and_grads(impl, _mesh(**sizes), causal_block)
    (_, ref_out), ref_grads = reference[causal_block]
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
    hlo = compiled.as_text()
    if impl == "ring":  # keys/values travel by ppermute; nothing is gathered
        assert "collective-permute" in hlo and " all-gather(" not in hlo
    else:
        assert " all-to-all(" in hlo and " all-gather(" not in hlo


def test_causal_block_mask_matches_dense_reference():
    q, k, v, _ = _qkv()
    out = multi_head_attention(q, k, v, "folded", causal_block=4)
    qi, kj = np.arange(T)[:, None] // 4, np.arange(T)[None, :] // 4
    logits = np.einsum("btnd,bsnd->bnts", q, k) / np.sqrt(DH)
    logits = np.where(kj <= qi, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    ref = np.einsum("bnts,bsnd->btnd", w / w.sum(-1, keepdims=True), v)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(multi_head_attention(q, k, v, "xla", causal_block=4), ref, atol=1e-5)


def _attention_temp_bytes(context: int) -> int:
    """Per-device temporary bytes of ring attention forward + backward (compiled memory
    analysis), tokens split over `context` devices."""
    mesh = _mesh(context=context)
    q = jax.ShapeDtypeStruct((2, 512, 2, 8), jnp.float32)
    s = NamedSharding(mesh, P(("data", "fsdp"), "context", "tensor"))

    def loss(q, k, v):
        return jnp.sum(multi_head_attention(q, k, v, "ring") ** 2)

    with jax.set_mesh(mesh):
        fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), in_shardings=(s, s, s))
        compiled = fn.lower(q, q, q).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_ring_attention_activation_bytes_scale_as_one_over_context():
    """Against the ring on 2 shards (on 1 shard the ring is the folded kernel, whose bytes per
    score differ): 4 and 8 shards hold 1/2 and 1/4 of it (the T²/cp score blocks dominate)."""
    two, four, eight = (_attention_temp_bytes(c) for c in (2, 4, 8))
    assert four / two == pytest.approx(1 / 2, rel=0.15), (two, four, eight)
    assert eight / two == pytest.approx(1 / 4, rel=0.15), (two, four, eight)


def test_pins_are_identity_without_mesh_and_drop_axes_that_do_not_divide():
    x = jnp.ones((3, 5, 6))
    assert parallel.fit_spec(x.shape, (parallel.BATCH, parallel.CONTEXT, None)) is None
    assert parallel.constrain(x, parallel.BATCH, parallel.CONTEXT, None) is x
    with jax.set_mesh(_mesh(data=2, context=4)):
        spec = parallel.fit_spec((4, 6, 8), (parallel.BATCH, parallel.CONTEXT, parallel.TENSOR))
    assert spec == P(("data",), None, None)  # 6 tokens do not split over 4; tensor is size 1


def test_bad_context_splits_are_clear_errors():
    mesh = _mesh(data=2, context=4)
    q = jnp.ones((2, 6, 4, 8))
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="token counts divisible by 4"):
        multi_head_attention(q, q, q, "ring")
    q = jnp.ones((2, 8, 2, 8))
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="heads per tensor shard"):
        multi_head_attention(q, q, q, "ulysses")


def test_folded_is_the_local_kernel_of_both_context_implementations():
    q, k, v, _ = _qkv()
    for impl in ("ring", "ulysses"):  # no mesh: the backend's single-device kernel
        out = multi_head_attention(q, k, v, impl)
        np.testing.assert_array_equal(out, folded_attention(q, k, v))
    assert re.search("ring", str(parallel.CONTEXT_PARALLEL))
