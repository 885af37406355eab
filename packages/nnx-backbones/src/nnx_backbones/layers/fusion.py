"""A fusion boundary: an exact identity that makes XLA:CPU compute the residual stream once.

XLA:CPU counts elementwise ops as cheap enough to recompute, so it fuses a producer into every
consumer that needs it. In a residual network that goes wrong: the stream
h_{l+1} = h_l + gate · f(h_l), and in the backward pass its cotangent (the sum of every later
block's LayerNorm backward), are rebuilt from the first block inside each consumer that needs a
relayout (the transposed copies feeding the weight-gradient matmuls). That is O(depth²)
elementwise work: for a DiT-S/2 train step it was two thirds of the step time (bench/README.md).
`jax.lax.optimization_barrier` does not help; XLA:CPU expands it away before fusion.

XLA never duplicates an op it classes as expensive, and a floating-point divide is one. So
`fusion_boundary(x) = x / one` with `one` exactly 1.0, computed at run time from x itself so
that it cannot be constant-folded: the forward value, its tangent (t / one) and its cotangent
(g / one) are each materialised once. It is exact (IEEE x / 1 = x, inf, nan and −0 included;
subnormals are flushed to zero, as XLA:CPU does in every arithmetic op, the residual addition
itself included) and plain JAX, so jvp, vjp and their compositions all work.

On other backends it returns x unchanged: no op is emitted.
"""

import jax
import jax.numpy as jnp


def _runtime_one(x: jax.Array) -> jax.Array:
    """Exactly 1.0 for every element of x (x's shape and dtype), computed from x so that XLA
    cannot fold it away: `f + (1 − f)` with f = isfinite(x) ∈ {0, 1}, whatever x is.

    Elementwise, so a sharded x needs no communication.
    """
    finite = jnp.isfinite(x).astype(x.dtype)
    return jax.lax.stop_gradient(finite + (1 - finite))


def fusion_boundary(x: jax.Array) -> jax.Array:
    """x, unchanged, as a value XLA:CPU materialises instead of re-fusing (see module doc)."""
    if jax.default_backend() != "cpu" or x.size == 0:
        return x
    return x / _runtime_one(x)
