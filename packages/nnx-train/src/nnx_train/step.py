"""The train step: one jitted function `state, batch → state, metrics`.

Inside: split the batch (every entry along its leading axis) into `grad_accum` micro-batches,
accumulate loss and gradients of the interface's loss over them (`lax.scan`, gradients averaged),
take the true global gradient norm, apply the optimizer (clipping included), update the EMAs,
and guard against non-finite values, in the loss and gradient and in the state they produce
(a finite gradient times a huge learning rate can still overflow the parameters):

    finite = isfinite(loss) ∧ isfinite(‖g‖) ∧ |θ'| ≤ max_float / 2   (every entry; NaN fails)
    params, opt_state, emas ← finite ? updated : unchanged        (the RNG always advances)

The bound on θ' keeps every EMA finite too: an EMA is e + w·(θ' − e) with w ∈ (0, 1], a convex
combination of accepted parameters, so |θ' − e| ≤ max_float. Checking θ' alone fuses into the
update; checking each EMA as well costs ~1.8× the step time of a small, memory-bound model.
Adam / Lion / SGD states stay finite while the gradients are. The checkpointer checks the whole
state before every save (`checkpoint.Checkpointer.save`).
    skipped += ¬finite;  streak = finite ? 0 : streak + 1;  tripped |= streak ≥ K

The host reads `tripped` at logging / checkpoint intervals only, so there is no host sync per step.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from nnx_train import ema as ema_lib
from nnx_train import posthoc_ema
from nnx_train.state import data_to_keys, keys_to_data, merge_module


def microbatches(batch: dict, n: int) -> dict:
    """`[B, ...]` → `[n, B/n, ...]` with micro-batch a = rows a, a+n, a+2n, …, so that every
    micro-batch is spread over all the devices holding the batch."""

    def split(x):
        x = x.reshape((x.shape[0] // n, n, *x.shape[1:]))
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    graphdef: nnx.GraphDef,
    rng_template: Any,
    optimizer: optax.GradientTransformation,
    schedule: Callable[[jax.Array], jax.Array],
    *,
    grad_accum: int = 1,
    ema_warmup: bool = True,
    max_nonfinite: int = 10,
) -> Callable[[dict, dict], tuple[dict, dict]]:
    """Build the (un-jitted) step; the trainer jits it with shardings and donation.

    Args:
      graphdef: graph of the interface (network inside) from `state.split_module`.
      rng_template: typed-key template of `state["rng"]` (to rebuild keys from key data).
      optimizer, schedule: optax transformation and its lr schedule (for the lr metric).
      grad_accum: micro-batches per step; the batch's leading axis must divide by it.
      ema_warmup: use β_t = min(β, (1 + t)/(10 + t)) for the EMAs.
      max_nonfinite: K; `guard.tripped` latches once K consecutive steps were non-finite.
    Returns:
      step(state, batch) → (state, metrics): batch = {"x": [B, ...], "y": [B] (optional), any
        other `[B, ...]` entry (e.g. "x_feature")}; the loss is called as
        `loss(x, return_aux=True, **{every entry but "x"})`, each entry split into micro-batches
        and sharded along its leading (batch) axis like x;
      metrics = {"loss", "grad_norm", "lr", "finite", "skipped", "tripped", "aux/<name>"...}.
    """

    def loss_fn(params, rng, other, micro):
        model = merge_module(graphdef, params, data_to_keys(rng, rng_template), other)
        # every batch entry but "x" is a keyword argument of the loss: y, x_feature (REPA), ...
        kwargs = {k: v for k, v in micro.items() if k != "x"}
        out = model.loss(micro["x"], return_aux=True, **kwargs)
        loss, aux = out if isinstance(out, tuple) else (out, {})
        _, _, new_rng, new_other = nnx.split(model, nnx.Param, nnx.RngState, ...)
        new_rng = keys_to_data(nnx.to_pure_dict(new_rng))
        aux = {k: jnp.mean(v).astype(jnp.float32) for k, v in aux.items()}
        return loss.astype(jnp.float32), (aux, new_rng, nnx.to_pure_dict(new_other))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: dict, batch: dict) -> tuple[dict, dict]:
        params = state["params"]
        # --- loss and gradients, accumulated over micro-batches ---------------------------
        if grad_accum == 1:
            (loss, (aux, rng, other)), grads = grad_fn(params, state["rng"], state["other"], batch)
        else:

            def body(carry, micro):
                rng, other, g_sum, l_sum, a_sum = carry
                (loss, (aux, rng, other)), g = grad_fn(params, rng, other, micro)
                g_sum = jax.tree.map(jnp.add, g_sum, g)
                a_sum = jax.tree.map(jnp.add, a_sum, aux)
                return (rng, other, g_sum, l_sum + loss, a_sum), None

            micro = microbatches(batch, grad_accum)
            first = jax.tree.map(lambda x: x[0], micro)
            aux0 = jax.eval_shape(grad_fn, params, state["rng"], state["other"], first)[0][1][0]
            zeros = (
                jax.tree.map(jnp.zeros_like, params),
                jnp.zeros((), jnp.float32),
                jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), aux0),
            )
            carry = (state["rng"], state["other"], *zeros)
            (rng, other, grads, loss, aux), _ = jax.lax.scan(body, carry, micro)
            scale = 1.0 / grad_accum
            grads = jax.tree.map(lambda g: g * scale, grads)
            loss, aux = loss * scale, jax.tree.map(lambda a: a * scale, aux)

        # --- optimizer update, EMAs, non-finite guard -------------------------------------
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        step_next = state["step"] + 1
        emas = ema_lib.update_emas(state["ema"], new_params, step_next, ema_warmup)
        power = posthoc_ema.update_power_emas(state["power_ema"], new_params, step_next, 1.0)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & within_half_range(new_params)

        def keep(new, old):
            return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

        guard = state["guard"]
        streak = jnp.where(finite, 0, guard["streak"] + 1)
        new_state = {
            "step": step_next,
            "params": keep(new_params, params),
            "opt_state": keep(opt_state, state["opt_state"]),
            "ema": keep(emas, state["ema"]),
            "power_ema": keep(power, state["power_ema"]),
            "rng": rng,
            "other": keep(other, state["other"]),
            "guard": {
                "skipped": guard["skipped"] + (~finite).astype(jnp.int32),
                "streak": streak,
                "tripped": guard["tripped"] | (streak >= max_nonfinite),
            },
        }
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": jnp.asarray(schedule(state["step"]), jnp.float32),
            "finite": finite,
            "skipped": new_state["guard"]["skipped"],
            "tripped": new_state["guard"]["tripped"],
            **{f"aux/{k}": v for k, v in aux.items()},
        }
        return new_state, metrics

    return step


def within_half_range(tree: Any) -> jax.Array:
    """bool []: every floating-point entry of `tree` has |x| ≤ (largest finite of its dtype) / 2
    (False for inf and NaN)."""
    checks = [
        jnp.all(jnp.abs(x) <= jnp.finfo(x.dtype).max / 2)
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def init_guard() -> dict:
    return {
        "skipped": jnp.zeros((), jnp.int32),
        "streak": jnp.zeros((), jnp.int32),
        "tripped": jnp.zeros((), jnp.bool_),
    }
