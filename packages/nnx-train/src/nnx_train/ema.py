"""Exponential moving averages of the parameters, several decays at once.

    θ̄_t = β_t · θ̄_{t−1} + (1 − β_t) · θ_t,   θ̄_0 = θ_0 (initialised from the parameters),
    β_t = min(β, (1 + t) / (10 + t)) with warm-up, else β.

EMAs are pytrees shaped like the parameters, keyed by the decay as a string ("0.9999").
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp


def ema_name(decay: float) -> str:
    """Key of the EMA with this decay, e.g. 0.9999 → "0.9999"."""
    return repr(float(decay))


def init_emas(params: Any, decays: Sequence[float]) -> dict[str, Any]:
    """One copy of `params` per decay (copies, so the EMAs never alias the parameters)."""
    return {ema_name(d): jax.tree.map(jnp.copy, params) for d in decays}


def ema_decay(decay: float, step: jax.Array, warmup: bool) -> jax.Array:
    """β_t for the update that produces step `step` (1-based)."""
    step = jnp.asarray(step, jnp.float32)
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_emas(emas: dict[str, Any], params: Any, step: jax.Array, warmup: bool) -> dict:
    """θ̄ ← β_t θ̄ + (1 − β_t) θ for every EMA in `emas`."""
    out = {}
    for name, ema in emas.items():
        w = 1.0 - ema_decay(float(name), step, warmup)
        out[name] = jax.tree.map(lambda e, p: (e + w * (p - e)).astype(e.dtype), ema, params)
    return out
