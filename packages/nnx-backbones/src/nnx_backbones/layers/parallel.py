"""Tensor and context parallelism inside the layers: activation shardings and sharded attention.

The mesh axes are DESIGN.md's ("data", "fsdp", "tensor", "context"). A network traced under
`jax.set_mesh(mesh)` pins its activations with `constrain`; with no mesh set (or an axis of size
1, or a dimension the axis does not divide) `constrain` is the identity, so the same network runs
unchanged on one device.

Tensor parallelism (Megatron-LM, Shoeybi et al. 2019): the residual stream `[B, T, D]` is
replicated over "tensor"; the first matmul of each block half is column-parallel (qkv by heads,
MLP fc1 by hidden units, its output pinned to `[B, T, ..., H/tp]`), the second row-parallel
(attention out-projection, fc2: each device holds a partial sum, and pinning the output back to
the replicated stream makes XLA emit one all-reduce per block half). The parameter layouts that
make this possible are in `nnx_train.sharding.TENSOR_RULES`.

Context parallelism: tokens are split over "context" through the whole block stack (`[B, T/cp,
D]` per device); everything but attention is token-wise. Attention needs every key, by one of:
- "ring" (Liu et al. 2023, "Ring attention"): each device keeps its queries and passes
  its key/value block around the ring (`ppermute`), accumulating an online softmax
  (Milakov & Gimelshein 2018):
      m' = max(m, max_j s_j),   l' = e^{m−m'} l + Σ_j e^{s_j−m'},
      o' = e^{m−m'} o + Σ_j e^{s_j−m'} v_j
  and o / l at the end; no device ever holds the whole sequence.
- "ulysses" (Jacobs et al. 2023, "DeepSpeed Ulysses"): an all-to-all trades the token
  split for a head split, full-sequence attention runs on N/(tp·cp) heads, and a second
  all-to-all trades back. Needs the heads per tensor shard divisible by the context size.
`context_parallel_attention(kind, ...)` runs either; both take a `causal_block` size b (tokens
per frame): query i may attend key j iff ⌊j/b⌋ ≤ ⌊i/b⌋ (frame-causal; b = 1 is token-causal),
with positions global, so the mask and RoPE (applied outside, on the global token order) do not
depend on the split.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

BATCH = ("data", "fsdp")  # the batch is split over data × fsdp
TENSOR = "tensor"
CONTEXT = "context"
NEG = -1e30  # masked logit: finite, so a row masked in one ring step gives e^{NEG − m} = 0

Axis = str | tuple[str, ...] | None


def _mesh():
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def axis_size(name: str) -> int:
    """Size of mesh axis `name` in the current `jax.set_mesh` context (1 if none)."""
    mesh = _mesh()
    return int(mesh.shape[name]) if mesh is not None and name in mesh.axis_names else 1


def fit_spec(shape: Sequence[int], axes: Sequence[Axis]) -> PartitionSpec | None:
    """A PartitionSpec for `shape` keeping, per dimension, the named axes that exist in the
    current mesh with size > 1 and whose product divides it; None when no mesh is set."""
    mesh = _mesh()
    if mesh is None:
        return None
    manual = set(mesh.manual_axes)  # inside shard_map: those axes are already split by hand
    spec = []
    for dim, axis in zip(shape, axes, strict=True):
        names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
        names = tuple(
            n for n in names if n in mesh.axis_names and n not in manual and mesh.shape[n] > 1
        )
        size = 1
        for n in names:
            size *= mesh.shape[n]
        spec.append(names if names and dim % size == 0 else None)
    return PartitionSpec(*spec)


def is_split(shape: Sequence[int], axes: Sequence[Axis]) -> bool:
    """Whether `constrain` with these axes would split any dimension."""
    spec = fit_spec(shape, axes)
    return spec is not None and any(s is not None for s in spec)


def constrain(x: jax.Array, *axes: Axis) -> jax.Array:
    """`with_sharding_constraint(x, spec)` with one entry of `axes` per dimension of x (mesh axis
    names, tuples of them, or None), reduced by `fit_spec`; the identity when no mesh is set."""
    spec = fit_spec(x.shape, axes)
    return x if spec is None else jax.lax.with_sharding_constraint(x, spec)


def gathered(x: jax.Array) -> jax.Array:
    """A column-parallel output `[..., k·D]` that every device needs whole (adaLN modulations):
    pinned split over "tensor", then replicated, so the forward pass gathers the (small)
    activation and the backward pass all-reduces its input gradient, never gathering the
    weight."""
    return replicated(split(x))


def replicated(x: jax.Array) -> jax.Array:
    """Pin a feature-replicated activation: `[B, T, ..., D]` (the residual stream, a row-parallel
    output: the all-reduce) as (batch, context, None, ...), `[B, D]` as (batch, None)."""
    lead = (BATCH, CONTEXT) if x.ndim >= 3 else (BATCH,)
    return constrain(x, *lead, *([None] * (x.ndim - len(lead))))


def split(x: jax.Array, axis: int = -1) -> jax.Array:
    """Pin a column-parallel activation: as `replicated`, with `axis` (hidden units or heads)
    split over "tensor"."""
    lead = (BATCH, CONTEXT) if x.ndim >= 3 else (BATCH,)
    axes: list[Axis] = [*lead, *([None] * (x.ndim - len(lead)))]
    axes[axis] = TENSOR
    return constrain(x, *axes)


def block_causal_mask(
    q_pos: jax.Array, k_pos: jax.Array, block: int | None, window: int | None = None
) -> jax.Array | None:
    """`[T, S]` boolean: key j visible from query i iff ⌊k_j/b⌋ ≤ ⌊q_i/b⌋ (and, with a `window`
    of w blocks, ⌊q_i/b⌋ − w ≤ ⌊k_j/b⌋: a sliding window); None if no mask."""
    if block is None:
        return None
    q_block, k_block = q_pos[:, None] // block, k_pos[None, :] // block
    mask = k_block <= q_block
    return mask if window is None else mask & (k_block >= q_block - window)


LocalAttention = Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None], jax.Array]


def _qkv_spec(q: jax.Array, k: jax.Array):
    """shard_map spec `[B, T, N, d_h]` for q, k and v: batch over data × fsdp, tokens over context,
    heads over tensor."""
    t, s = q.shape[1], k.shape[1]
    cp = axis_size(CONTEXT)
    if t % cp or s % cp:
        raise ValueError(
            f"context parallelism over {cp} devices needs token counts divisible by {cp}; got "
            f"{t} queries and {s} keys. Change mesh.context or the input size."
        )
    heads = q.shape[2]
    if heads % axis_size(TENSOR):
        raise ValueError(
            f"tensor parallelism over {axis_size(TENSOR)} devices needs the head count "
            f"divisible by it; got {heads} heads. Change mesh.tensor or num_heads."
        )
    return fit_spec(q.shape, (BATCH, CONTEXT, TENSOR, None))


def context_parallel_attention(
    kind: str,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    local: LocalAttention,
    causal_block: int | None = None,
) -> jax.Array:
    """Softmax attention with q, k, v `[B, T, N, d_h]` split over "context" along T, by `kind`
    "ring" (key/value blocks round the ring, online softmax) or "ulysses" (all-to-all to a head
    split and back); see the module docstring. `local(q, k, v, mask)` is the single-device
    attention: run as is when the context axis has size 1, and by Ulysses on whole sequences."""
    body = CONTEXT_PARALLEL[kind]
    cp = axis_size(CONTEXT)
    if cp == 1:
        return local(q, k, v, _global_mask(q, k, causal_block))
    spec = _qkv_spec(q, k)

    def per_device(q, k, v):
        return body(q, k, v, cp, local, causal_block)

    return jax.shard_map(per_device, in_specs=(spec, spec, spec), out_specs=spec)(q, k, v)


def _ring(q, k, v, cp: int, local: LocalAttention, causal_block: int | None) -> jax.Array:
    """One device's ring: its queries against every key/value block in turn (module doc)."""
    idx = jax.lax.axis_index(CONTEXT)
    t, s = q.shape[1], k.shape[1]
    q_pos = idx * t + jnp.arange(t)
    qf = q.astype(jnp.float32) * q.shape[-1] ** -0.5
    m = jnp.full((q.shape[0], q.shape[2], t), NEG, jnp.float32)  # running max [b, n, t]
    l_sum = jnp.zeros_like(m)  # running Σ e^{s − m}
    o = jnp.zeros((q.shape[0], q.shape[2], t, q.shape[3]), jnp.float32)  # [b, n, t, d_h]
    perm = [(i, (i + 1) % cp) for i in range(cp)]
    for step in range(cp):
        src = (idx - step) % cp  # the device this key/value block started on
        logits = jnp.einsum("btnd,bsnd->bnts", qf, k.astype(jnp.float32))
        mask = block_causal_mask(q_pos, src * s + jnp.arange(s), causal_block)
        if mask is not None:
            logits = jnp.where(mask, logits, NEG)
        m_new = jnp.maximum(m, jax.lax.stop_gradient(logits.max(-1)))
        p = jnp.exp(logits - m_new[..., None])
        alpha = jnp.exp(m - m_new)
        l_sum = alpha * l_sum + p.sum(-1)
        o = alpha[..., None] * o + jnp.einsum("bnts,bsnd->bntd", p, v.astype(jnp.float32))
        m = m_new
        if step < cp - 1:
            k, v = jax.lax.ppermute((k, v), CONTEXT, perm)
    return (o / l_sum[..., None]).transpose(0, 2, 1, 3).astype(q.dtype)


def _ulysses(q, k, v, cp: int, local: LocalAttention, causal_block: int | None) -> jax.Array:
    """One device's Ulysses step: all-to-all to whole sequences of N/(tp·cp) heads, attention,
    all-to-all back."""
    if q.shape[2] % cp:
        raise ValueError(
            f"Ulysses attention trades the token split over context = {cp} devices for a head "
            f"split, so the heads per tensor shard ({q.shape[2]}) must be divisible by {cp}. Use "
            f"attn_implementation='ring' or change num_heads / mesh.context / mesh.tensor."
        )

    def to_heads(a):  # [b, T/cp, n, d] → [b, T, n/cp, d]
        return jax.lax.all_to_all(a, CONTEXT, split_axis=2, concat_axis=1, tiled=True)

    q, k, v = to_heads(q), to_heads(k), to_heads(v)
    out = local(q, k, v, _global_mask(q, k, causal_block))
    return jax.lax.all_to_all(out, CONTEXT, split_axis=1, concat_axis=2, tiled=True)


def _global_mask(q: jax.Array, k: jax.Array, causal_block: int | None) -> jax.Array | None:
    return block_causal_mask(jnp.arange(q.shape[1]), jnp.arange(k.shape[1]), causal_block)


CONTEXT_PARALLEL = {"ring": _ring, "ulysses": _ulysses}
