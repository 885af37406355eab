"""Multi-head self-attention with a merged qkv projection (timm / DiT layout).

softmax(q kᵀ / √d_h + mask) v per head. `implementation`:
- None (default): on CPU `"folded"`; elsewhere `jax.nn.dot_product_attention`'s own choice (the
  fused cuDNN flash kernel on GPU where it applies).
- `"folded"`: heads folded into one batch axis, `[B·N, T, d_h]`, and two batched matmuls with a
  float32 softmax between them. On XLA:CPU the train step's attention (forward and backward) runs
  1.5× faster this way than through `jax.nn.dot_product_attention(implementation="xla")`, whose
  two batch axes (B, N) the CPU matmul kernels handle worse (bench/README.md).
- `"xla"`, `"cudnn"`: passed to `jax.nn.dot_product_attention`.
- `"ring"`, `"ulysses"`: context parallelism over the mesh's "context" axis (ring attention with
  an online softmax, or the DeepSpeed-Ulysses all-to-all; `nnx_backbones.layers.parallel`), each
  running the backend's default kernel locally; on one context shard they are that kernel.
Optional qk-norm (separate norms for q and k, over each head's channels), 2-D RoPE on q and k
(applied in the global token order, so it is the same under any token split) and a
`causal_block` mask (frame-causal: key j is visible from query i iff ⌊j/b⌋ ≤ ⌊i/b⌋), optionally
limited to a sliding `causal_window` of w earlier blocks (⌊i/b⌋ − w ≤ ⌊j/b⌋; not under context
parallelism), which is what a rolling KV cache of w frames computes.

KV cache (causal frame-by-frame generation, `nnx_backbones.video_dit`): given
`cache = (k_ctx, v_ctx, visible)` — keys/values `[B, S, N, d_h]` of earlier tokens (already
normed and rotated) and a boolean `[S]` of the valid slots — the queries of x attend to
[k_ctx; k(x)] with the cached slots masked by `visible` and x's own tokens fully visible, and the
call also returns x's (k, v) to append to the cache. Explicit arrays in and out: jit/scan-safe.

Under tensor parallelism the qkv kernel `[D, 3, D]` is split over "tensor" along its last axis
(whole heads per device: column-parallel) and `proj` along its input axis (row-parallel), and the
activations are pinned so that XLA emits one all-reduce after `proj` (`layers.parallel`).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.layers import parallel
from nnx_backbones.layers.norms import make_norm
from nnx_backbones.layers.position import apply_rope

IMPLEMENTATIONS = (None, "folded", "xla", "cudnn", "ring", "ulysses")


def folded_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """softmax(q kᵀ / √d_h) v with heads folded into the batch. q: `[B, T, N, d_h]`, k, v:
    `[B, S, N, d_h]`, mask: optional boolean `[T, S]` (True = visible) → `[B, T, N, d_h]`; the
    softmax is computed in float32.

    Under a mesh that splits the heads (tensor parallelism) the fold would mix the batch and
    head splits, so there the same products run with B and N as two batch axes instead."""
    b, t, n, dh = q.shape
    scale = jnp.asarray(dh**-0.5, q.dtype)
    if parallel.is_split(q.shape, (None, None, parallel.TENSOR, None)):
        logits = jnp.einsum("btnd,bsnd->bnts", q * scale, k).astype(jnp.float32)
        weights = _softmax(_masked(logits, mask)).astype(v.dtype)
        return jnp.einsum("bnts,bsnd->btnd", weights, v)

    def fold(a: jax.Array) -> jax.Array:  # [B, T, N, d_h] → [B·N, T, d_h]
        return a.transpose(0, 2, 1, 3).reshape(b * n, a.shape[1], dh)

    logits = jnp.matmul(fold(q) * scale, fold(k).transpose(0, 2, 1)).astype(jnp.float32)
    weights = _softmax(_masked(logits, mask)).astype(v.dtype)
    return jnp.matmul(weights, fold(v)).reshape(b, n, t, dh).transpose(0, 2, 1, 3)


def _masked(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
    return logits if mask is None else jnp.where(mask, logits, parallel.NEG)


def _softmax(logits: jax.Array) -> jax.Array:
    """exp(s − max s) / Σ exp(s − max s) over the last axis, differentiated as written (the max
    is a constant shift, so its gradient is dropped). Plain JAX, so jvp works; in a CPU
    micro-benchmark (batch 32, DiT-S heads) attention forward + backward ran ~10% faster than
    with `jax.nn.softmax`."""
    e = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
    return e / e.sum(axis=-1, keepdims=True)


def _local(implementation: str | None):
    """The single-device kernel `(q, k, v, mask) → out` of an implementation name."""
    if implementation == "folded" or (implementation is None and jax.default_backend() == "cpu"):
        return folded_attention

    def dot_product(q, k, v, mask):
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)

    return dot_product


def multi_head_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    implementation: str | None = None,
    *,
    causal_block: int | None = None,
    causal_window: int | None = None,
) -> jax.Array:
    """Softmax attention over `[B, T, N, d_h]` q, k, v by `implementation` (module docstring);
    `causal_block`: tokens per causal block (frame), None = full attention; `causal_window`:
    earlier blocks visible (None = all)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"attention implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}."
        )
    if causal_window is not None and (causal_block is None or causal_window < 0):
        raise ValueError(
            f"causal_window={causal_window} needs a causal_block and a window ≥ 0; got "
            f"causal_block={causal_block}."
        )
    if implementation in parallel.CONTEXT_PARALLEL:
        if causal_window is not None:
            raise ValueError(
                f"a sliding causal_window is not supported by context-parallel attention "
                f"({implementation!r}); use attn_implementation=None or no window."
            )
        return parallel.context_parallel_attention(
            implementation, q, k, v, _local(None), causal_block
        )
    mask = parallel.block_causal_mask(
        jnp.arange(q.shape[1]), jnp.arange(k.shape[1]), causal_block, causal_window
    )
    return _local(implementation)(q, k, v, mask)


class Attention(nnx.Module):
    """`x: [B, T, D]` → `[B, T, D]`; qkv kernel `[D, 3, D]`, features ordered (heads, head_dim)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qk_norm: str | None = None,
        implementation: str | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads = {num_heads}.")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}."
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.implementation = implementation
        kw = dict(
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=nnx.initializers.xavier_uniform(),
            rngs=rngs,
        )
        # Same initial values as a Linear(dim, 3·dim) reshaped: the (q, k, v) axis is kept apart
        # so that a tensor split of the last axis gives each device whole heads of q, k and v.
        self.qkv = nnx.LinearGeneral(dim, (3, dim), **kw)
        self.proj = nnx.Linear(dim, dim, **kw)
        self.q_norm = make_norm(qk_norm, self.head_dim, param_dtype=param_dtype)
        self.k_norm = make_norm(qk_norm, self.head_dim, param_dtype=param_dtype)

    def __call__(
        self,
        x: jax.Array,
        rope: tuple[jax.Array, jax.Array] | None = None,
        *,
        causal_block: int | None = None,
        causal_window: int | None = None,
        cache: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    ) -> jax.Array | tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """`x: [B, T, D]`, `rope`: optional (cos, sin) `[T, head_dim]` tables, `causal_block`:
        optional tokens per causal block, `causal_window`: optional earlier blocks visible →
        `[B, T, D]`. With `cache = (k_ctx, v_ctx, visible)`
        (module docstring; x's tokens all see each other) → `(out, (k, v))`, x's own keys and
        values `[B, T, N, d_h]`."""
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)
        qkv = parallel.split(qkv, axis=3)  # column-parallel: heads over tensor
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each [B, T, N, Dh]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is None:
            out = multi_head_attention(
                q,
                k,
                v,
                self.implementation,
                causal_block=causal_block,
                causal_window=causal_window,
            )
        else:
            out = _cached_attention(q, k, v, cache, self.implementation)
        out = parallel.split(out, axis=2).reshape(b, t, d)
        out = parallel.replicated(self.proj(out))  # row-parallel: the all-reduce
        return out if cache is None else (out, (k, v))


def _cached_attention(q, k, v, cache, implementation: str | None) -> jax.Array:
    """Queries of the new tokens over [cached keys (masked by `visible`); the new keys]."""
    if implementation in parallel.CONTEXT_PARALLEL:
        raise ValueError(
            f"the KV-cache path runs one frame at a time and does not support context-parallel "
            f"attention ({implementation!r}); build the network for generation with "
            f"attn_implementation=None."
        )
    k_ctx, v_ctx, visible = cache
    if k_ctx.shape[0] != k.shape[0] or k_ctx.shape[2:] != k.shape[2:]:
        raise ValueError(
            f"KV cache of shape {tuple(k_ctx.shape)} does not fit keys {tuple(k.shape)} "
            f"([B, S, heads, head_dim] must match); build the cache for this network and batch."
        )
    mask = jnp.concatenate([visible.astype(bool), jnp.ones((k.shape[1],), bool)])
    mask = jnp.broadcast_to(mask[None, :], (q.shape[1], mask.shape[0]))
    keys = jnp.concatenate([k_ctx.astype(k.dtype), k], axis=1)
    values = jnp.concatenate([v_ctx.astype(v.dtype), v], axis=1)
    return _local(implementation)(q, keys, values, mask)
