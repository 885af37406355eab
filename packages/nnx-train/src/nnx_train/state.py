"""The train state: a plain pytree of arrays, saved whole in every checkpoint.

    state = {
      "step":      int32 []            optimizer steps taken (= batches consumed)
      "params":    pure dict           float32 parameters of the interface (network inside)
      "opt_state": optax state
      "ema":       {"0.999": params}   one EMA per decay (nnx_train.ema)
      "power_ema": {"0.05": params}    EDM2 power-function EMAs (nnx_train.posthoc_ema)
      "rng":       pure dict           nnx.Rngs state, keys stored as uint32 key data
      "other":     pure dict           any other nnx state (e.g. batch statistics)
      "guard":     {"skipped", "streak", "tripped"}   non-finite step bookkeeping
      "frozen":    pure dict           only if the objective declares frozen trees (teachers):
                                       their parameters, never updated, no optimizer state
    }

An objective with several trained trees (`Interfaces.trained_trees()`, e.g. DMD2's generator and
fake score) keeps the same keys with the per-tree entries keyed by tree name: "params" = {tree:
params} (which is the objective's own pure dict, trees being its attributes), "opt_state" =
{tree: optax state}, "ema" = {tree: {"0.999": params}}, "power_ema" = {tree: {"0.05": params}},
plus "count" = {tree: int32 []} (updates each tree received).

`split_module` / `merge_module` convert between an `nnx.Module` and (graphdef, params, rng,
other, frozen).
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_to_data(tree: Any) -> Any:
    """Typed PRNG keys → their uint32 key data (what checkpoints can store)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def data_to_keys(tree: Any, template: Any) -> Any:
    """Inverse of `keys_to_data`; `template` (arrays or ShapeDtypeStructs) marks which are keys."""
    return jax.tree.map(
        lambda x, t: jax.random.wrap_key_data(x, impl=_impl(t)) if _is_key(t) else x, tree, template
    )


def _impl(t: Any) -> Any:
    """PRNG implementation of a typed key or of its ShapeDtypeStruct (default impl otherwise)."""
    impl = getattr(t.dtype, "_impl", None)  # the key dtype carries its implementation
    return impl if impl is not None else jax.random.key_impl(jax.random.key(0))


def frozen_names(module: nnx.Module) -> tuple[str, ...]:
    """The attributes the objective declares frozen (`Interfaces.frozen_trees`; () if none)."""
    declared = getattr(module, "frozen_trees", None)
    return tuple(declared()) if callable(declared) else ()


def split_module(module: nnx.Module) -> tuple[nnx.GraphDef, dict, dict, dict, dict]:
    """(graphdef, params, rng, other, frozen) as pure dicts; rng keys stay typed.

    `params` are the trained `nnx.Param`s, `frozen` the `nnx.Param`s under the attributes in
    `module.frozen_trees()` ({} if none)."""
    names = frozen_names(module)

    def is_frozen(path, value) -> bool:
        return bool(path) and path[0] in names and isinstance(value, nnx.Param)

    graphdef, frozen, params, rng, other = nnx.split(
        module, is_frozen, nnx.Param, nnx.RngState, ...
    )
    return (graphdef, *(nnx.to_pure_dict(s) for s in (params, rng, other, frozen)))


def merge_module(
    graphdef: nnx.GraphDef, params: dict, rng: dict, other: dict, frozen: dict | None = None
) -> nnx.Module:
    """Rebuild the module from `split_module`'s parts (rng with typed keys)."""
    if frozen:
        return nnx.merge(graphdef, frozen, params, rng, other)
    return nnx.merge(graphdef, params, rng, other)


def select_params(state: dict, ema: str = "") -> dict:
    """The parameters to run with: raw (`ema` = ""), or the EMA named `ema` (e.g. "0.999"). With
    several trained trees, each tree's EMA of that name, its raw parameters where it keeps none.

    Raises:
      KeyError: no tree keeps an EMA named `ema`.
    """
    if not ema:
        return state["params"]
    if "count" not in state:
        return state["ema"][ema]
    if not any(ema in e for e in state["ema"].values()):
        raise KeyError(ema)
    return {t: state["ema"][t].get(ema, p) for t, p in state["params"].items()}


def key_template(rng: dict) -> Any:
    """Typed-key template of an rng pure dict: ShapeDtypeStructs with the key dtypes kept."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), rng)


def param_count(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def tree_bytes(tree: Any) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def all_finite(tree: Any) -> jax.Array:
    """bool []: no inf / NaN in any floating-point leaf of `tree` (integer leaves are ignored)."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)
