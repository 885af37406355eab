"""Rebuild a trained interface from the trainer's state and sample from it.

`sample_fn_from_state(config, state, ema)` → `sample_fn(key, labels [B] | None, batch) -> [B, ...]`
using `config.sample.sampler` and `config.sample.guidance`, with the raw parameters (ema="") or
the EMA of that decay (e.g. "0.999").
"""

from collections.abc import Callable

import jax
import ml_collections
from flax import nnx

from nnx_imagenet.errors import ConfigError
from nnx_train import callbacks, trainer
from nnx_train import ema as ema_lib
from nnx_train import state as state_lib


def interface_from_state(
    config: ml_collections.ConfigDict, state: dict, *, ema: str = ""
) -> nnx.Module:
    """The interface (with its backbone) holding `state`'s params or the EMA named `ema`."""
    abstract = nnx.eval_shape(lambda: trainer.build_interface(config))
    graphdef, _, abs_rng, _, _ = state_lib.split_module(abstract)
    if ema:
        key = ema_lib.ema_name(float(ema))
        try:
            params = state_lib.select_params(state, key)
        except KeyError:
            have = sorted(state["ema"]) if "count" not in state else state["ema"]
            raise ConfigError(
                f"EMA {ema!r} is not in the checkpoint (it has {have}); set "
                f"--config.sample.ema / eval.ema to one of ema.decays or '' for raw weights."
            ) from None
    else:
        params = state["params"]
    rng = state_lib.data_to_keys(state["rng"], state_lib.key_template(abs_rng))
    return state_lib.merge_module(graphdef, params, rng, state["other"], state.get("frozen"))


def sample_fn_from_state(
    config: ml_collections.ConfigDict, state: dict, *, ema: str = ""
) -> Callable[[jax.Array, jax.Array | None, int], jax.Array]:
    """`sample_fn(key, labels, batch_size)` with the configured sampler and guidance."""
    iface = interface_from_state(config, state, ema=ema)
    sampler = trainer.build_sampler(config.sample.sampler)
    return callbacks.make_sample_fn(
        lambda: iface,
        sampler,
        tuple(config.data.shape),
        guidance=config.sample.guidance,
        guidance_channels=config.sample.guidance_channels,
    )
