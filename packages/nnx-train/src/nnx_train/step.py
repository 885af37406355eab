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

Several trained trees (`make_multi_train_step`, for objectives declaring `trained_trees()`): in
the declared order, each tree due in step s (s % every == offset) takes the same update with its
own loss method, optimizer, schedule and EMAs, gradients taken with respect to that tree only and
every other tree (and the frozen ones) held fixed; a tree not due is passed through by
`lax.cond`. The guard skips each tree's non-finite update on its own; the streak counts steps in
which any tree was non-finite.
"""

import dataclasses
import inspect
from collections.abc import Callable, Sequence
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
      A `state["frozen"]` entry (frozen trees) is passed to the loss and returned unchanged.
    """
    loss_fn = _make_loss_fn(graphdef, rng_template, "loss", None)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: dict, batch: dict) -> tuple[dict, dict]:
        params, frozen = state["params"], state.get("frozen")

        def grads_of(p, rng, other, micro):
            return grad_fn(p, None, frozen, rng, other, micro, state["step"])

        # --- loss and gradients, accumulated over micro-batches ---------------------------
        loss, aux, rng, other, grads = _accumulate(
            grads_of, params, state["rng"], state["other"], batch, grad_accum
        )

        # --- optimizer update, EMAs, non-finite guard -------------------------------------
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        step_next = state["step"] + 1
        tree, finite = _update_tree(
            {k: state[k] for k in TREE_KEYS}, grads, finite, step_next, optimizer, ema_warmup
        )
        guard = _update_guard(state["guard"], finite, max_nonfinite)
        new_state = {
            "step": step_next,
            **tree,
            "rng": rng,
            "other": _keep(finite, other, state["other"]),
            "guard": guard,
        }
        if frozen is not None:
            new_state["frozen"] = frozen
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": jnp.asarray(schedule(state["step"]), jnp.float32),
            "finite": finite,
            "skipped": guard["skipped"],
            "tripped": guard["tripped"],
            **{f"aux/{k}": v for k, v in aux.items()},
        }
        return new_state, metrics

    return step


@dataclasses.dataclass(frozen=True)
class TreeStep:
    """How the multi-tree step updates one trained tree (from an `Interfaces.TreeUpdate`).

    Attributes:
      name: the objective's attribute holding the tree (its key in the state's per-tree dicts).
      optimizer, schedule: this tree's optax transformation and lr schedule.
      loss: the objective's method giving this tree's loss.
      every, offset: updated in step s when s % every == offset.
    """

    name: str
    optimizer: optax.GradientTransformation
    schedule: Callable[[jax.Array], jax.Array]
    loss: str = "loss"
    every: int = 1
    offset: int = 0


def make_multi_train_step(
    graphdef: nnx.GraphDef,
    rng_template: Any,
    trees: Sequence[TreeStep],
    *,
    grad_accum: int = 1,
    ema_warmup: bool = True,
    max_nonfinite: int = 10,
) -> Callable[[dict, dict], tuple[dict, dict]]:
    """The step of an objective with several trained trees (see the module docstring).

    Args as `make_train_step`, with one `TreeStep` per trained tree in update order.
    Returns:
      step(state, batch) → (state, metrics): state with per-tree entries (`nnx_train.state`);
      metrics = {"<tree>/loss", "<tree>/grad_norm", "<tree>/lr", "<tree>/finite",
      "<tree>/aux/<name>"..., "finite", "skipped", "tripped"}; a tree not due in this step
      reports NaN loss, gradient norm and aux (the logger averages finite values only).
    """

    def tree_update(t: TreeStep):
        grad_fn = jax.value_and_grad(
            _make_loss_fn(graphdef, rng_template, t.loss, t.name), has_aux=True
        )

        def do(step_index, frozen, batch, carry):
            params, rng, other, tree, count = carry

            def grads_of(p, rng, other, micro):
                return grad_fn(p, params, frozen, rng, other, micro, step_index)

            loss, aux, new_rng, new_other, grads = _accumulate(
                grads_of, params[t.name], rng, other, batch, grad_accum
            )
            grad_norm = optax.tree.norm(grads)
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            view = {"params": params[t.name], **tree}
            new, finite = _update_tree(view, grads, finite, count + 1, t.optimizer, ema_warmup)
            metrics = {
                "loss": loss,
                "grad_norm": grad_norm,
                "lr": jnp.asarray(t.schedule(count), jnp.float32),
                "finite": finite,
                **{f"aux/{k}": v for k, v in aux.items()},
            }
            params = {**params, t.name: new.pop("params")}
            carry = (params, new_rng, _keep(finite, new_other, other), new, count + 1)
            return carry, metrics

        def skip(frozen, batch, carry, shapes):
            nan = {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in shapes.items()}
            metrics = {**nan, "finite": jnp.ones((), jnp.bool_)}
            metrics["lr"] = jnp.asarray(t.schedule(carry[4]), jnp.float32)
            return carry, metrics

        def run(step_index, frozen, batch, carry):
            if t.every == 1:
                return do(step_index, frozen, batch, carry)
            shapes = jax.eval_shape(lambda c: do(step_index, frozen, batch, c)[1], carry)
            return jax.lax.cond(
                step_index % t.every == t.offset,
                lambda c: do(step_index, frozen, batch, c),
                lambda c: skip(frozen, batch, c, shapes),
                carry,
            )

        return run

    runs = [(t, tree_update(t)) for t in trees]

    def step(state: dict, batch: dict) -> tuple[dict, dict]:
        frozen = state.get("frozen")
        params, rng, other = state["params"], state["rng"], state["other"]
        new_state = {k: dict(state[k]) for k in (*TREE_KEYS, "count")}
        metrics: dict[str, jax.Array] = {}
        finite = jnp.ones((), jnp.bool_)
        for t, run in runs:
            tree = {k: state[k][t.name] for k in TREE_KEYS if k != "params"}
            carry = (params, rng, other, tree, state["count"][t.name])
            (params, rng, other, tree, count), m = run(state["step"], frozen, batch, carry)
            for k, v in tree.items():
                new_state[k][t.name] = v
            new_state["count"][t.name] = count
            finite = finite & m["finite"]
            metrics.update({f"{t.name}/{k}": v for k, v in m.items()})
        guard = _update_guard(state["guard"], finite, max_nonfinite)
        new_state.update(step=state["step"] + 1, params=params, rng=rng, other=other, guard=guard)
        if frozen is not None:
            new_state["frozen"] = frozen
        metrics.update(finite=finite, skipped=guard["skipped"], tripped=guard["tripped"])
        return new_state, metrics

    return step


# --- shared pieces ------------------------------------------------------------------------------
TREE_KEYS = ("params", "opt_state", "ema", "power_ema")


def _make_loss_fn(graphdef: nnx.GraphDef, rng_template: Any, method: str, tree: str | None):
    """loss_fn(tree_params, params, frozen, rng, other, micro, step) → (loss, (aux, rng, other)):
    the objective's `method` on one micro-batch, differentiable in `tree_params` (all trained
    parameters when `tree` is None, else `params[tree]`, the other trees held fixed). A loss
    with a named `step` parameter (sCD's tangent warm-up, schedules of flow maps) gets the number
    of completed train steps."""

    def loss_fn(tree_params, params, frozen, rng, other, micro, step):
        full = tree_params if tree is None else {**params, tree: tree_params}
        model = merge_module(graphdef, full, data_to_keys(rng, rng_template), other, frozen)
        # every batch entry but "x" is a keyword argument of the loss: y, x_feature (REPA), ...
        kwargs = {k: v for k, v in micro.items() if k != "x"}
        if "step" in kwargs:
            raise ValueError(
                "a batch entry named 'step' would shadow the train step passed to the loss; "
                "rename it."
            )
        if _takes_step(getattr(model, method)):
            kwargs["step"] = step
        out = getattr(model, method)(micro["x"], return_aux=True, **kwargs)
        loss, aux = out if isinstance(out, tuple) else (out, {})
        _, _, new_rng, new_other = nnx.split(model, nnx.Param, nnx.RngState, ...)
        new_rng = keys_to_data(nnx.to_pure_dict(new_rng))
        aux = {k: jnp.mean(v).astype(jnp.float32) for k, v in aux.items()}
        return loss.astype(jnp.float32), (aux, new_rng, nnx.to_pure_dict(new_other))

    return loss_fn


def _takes_step(fn: Callable[..., Any]) -> bool:
    """Whether `fn` names a `step` parameter (not merely `**kwargs`, which go to the network)."""
    try:
        param = inspect.signature(fn).parameters.get("step")
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind is not inspect.Parameter.VAR_KEYWORD


def _accumulate(grad_fn, params, rng, other, batch, grad_accum):
    """(loss, aux, rng, other, grads) of `grad_fn(params, rng, other, micro)` averaged over
    `grad_accum` interleaved micro-batches (`lax.scan`), or of the whole batch."""
    if grad_accum == 1:
        (loss, (aux, rng, other)), grads = grad_fn(params, rng, other, batch)
        return loss, aux, rng, other, grads

    def body(carry, micro):
        rng, other, g_sum, l_sum, a_sum = carry
        (loss, (aux, rng, other)), g = grad_fn(params, rng, other, micro)
        g_sum = jax.tree.map(jnp.add, g_sum, g)
        a_sum = jax.tree.map(jnp.add, a_sum, aux)
        return (rng, other, g_sum, l_sum + loss, a_sum), None

    micro = microbatches(batch, grad_accum)
    first = jax.tree.map(lambda x: x[0], micro)
    aux0 = jax.eval_shape(grad_fn, params, rng, other, first)[0][1][0]
    zeros = (
        jax.tree.map(jnp.zeros_like, params),
        jnp.zeros((), jnp.float32),
        jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), aux0),
    )
    (rng, other, grads, loss, aux), _ = jax.lax.scan(body, (rng, other, *zeros), micro)
    scale = 1.0 / grad_accum
    grads = jax.tree.map(lambda g: g * scale, grads)
    return loss * scale, jax.tree.map(lambda a: a * scale, aux), rng, other, grads


def _keep(finite: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def _update_tree(
    tree: dict, grads, finite, count_next, optimizer, ema_warmup
) -> tuple[dict, jax.Array]:
    """One tree's optimizer step and EMAs: {"params", "opt_state", "ema", "power_ema"} → (the
    same, updated where the step is finite, unchanged otherwise; that flag). The step is finite
    when `finite` (loss and gradient norm) holds and the updated parameters stay within half the
    float range (module docstring). `count_next`: the tree's updates after this one (1-based EMA
    time)."""
    params = tree["params"]
    updates, opt_state = optimizer.update(grads, tree["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    emas = ema_lib.update_emas(tree["ema"], new_params, count_next, ema_warmup)
    power = posthoc_ema.update_power_emas(tree["power_ema"], new_params, count_next, 1.0)
    new = {"params": new_params, "opt_state": opt_state, "ema": emas, "power_ema": power}
    finite = finite & within_half_range(new_params)
    return _keep(finite, new, tree), finite


def _update_guard(guard: dict, finite: jax.Array, max_nonfinite: int) -> dict:
    streak = jnp.where(finite, 0, guard["streak"] + 1)
    return {
        "skipped": guard["skipped"] + (~finite).astype(jnp.int32),
        "streak": streak,
        "tripped": guard["tripped"] | (streak >= max_nonfinite),
    }


def init_state(
    params: dict,
    rng: dict,
    other: dict,
    optimizer: Any,
    *,
    ema_decays: Any = (),
    power_stds: Any = (),
    frozen: dict | None = None,
) -> dict:
    """The initial train state (`nnx_train.state`) from `state.split_module`'s parts (rng with
    typed keys). One tree: `optimizer` an optax transformation, `ema_decays` / `power_stds`
    sequences. Several trees: each a dict {tree: ...} (missing trees: no EMA), and the per-tree
    entries are keyed by tree name, with the update counts in "count"."""

    def tree(p, opt, decays, stds):
        return {
            "params": p,
            "opt_state": opt.init(p),
            "ema": ema_lib.init_emas(p, decays),
            "power_ema": posthoc_ema.init_power_emas(p, stds),
        }

    state = {
        "step": jnp.zeros((), jnp.int32),
        "rng": keys_to_data(rng),
        "other": other,
        "guard": init_guard(),
    }
    if not isinstance(optimizer, dict):
        state.update(tree(params, optimizer, ema_decays, power_stds))
    else:
        get = lambda d, n: d.get(n, ()) if isinstance(d, dict) else d  # noqa: E731
        per = {
            n: tree(params[n], o, get(ema_decays, n), get(power_stds, n))
            for n, o in optimizer.items()
        }
        state.update({k: {n: per[n][k] for n in per} for k in TREE_KEYS})
        state["count"] = {n: jnp.zeros((), jnp.int32) for n in per}
    if frozen:
        state["frozen"] = frozen
    return state


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
