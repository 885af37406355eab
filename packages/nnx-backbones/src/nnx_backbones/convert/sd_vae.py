"""Import/export SD-VAE weights in the diffusers `AutoencoderKL` safetensors layout.

The NNX attribute tree of `AutoencoderKL` mirrors the diffusers keys, so the mapping is
mechanical: `encoder.down_blocks.0.resnets.1.norm1.scale` ↔ `...norm1.weight`, conv kernels
`[kh, kw, I, O]` ↔ `[O, I, kh, kw]`, linear kernels `[I, O]` ↔ `[O, I]`. Checkpoints saved by
older diffusers name the mid-block attention `query/key/value/proj_attn` (sometimes as 1×1 conv
weights); they are renamed to `to_q/to_k/to_v/to_out.0` before assignment. Export always writes
the current names.
"""

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_backbones.sd_vae import AutoencoderKL, LatentScaling, VAEConfig
from nnx_backbones.weights.assign import (
    CONV2D,
    LINEAR,
    StateMapping,
    assign_state,
    export_state,
    variable_paths,
)
from nnx_backbones.weights.io import read_state_dict
from nnx_backbones.weights.registry import fetch

_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def mirror_mapping(module: nnx.Module) -> StateMapping:
    """`{torch key: (nnx path, transform)}` for a module whose attribute names mirror torch's."""
    mapping = {}
    for path, shape in variable_paths(module).items():
        *parent, leaf = path.split(".")
        name = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(leaf, leaf)
        key = ".".join([*parent, name])
        if leaf == "kernel":
            mapping[key] = (path, CONV2D if len(shape) == 4 else LINEAR)
        else:
            mapping[key] = path
    return mapping


def normalize_keys(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename legacy attention keys (`attentions.0.query.weight` → `to_q`), squeeze 1×1 convs."""
    out = {}
    for key, value in tensors.items():
        parts = key.split(".")
        if (
            len(parts) >= 3
            and parts[-3] == "0"
            and "attentions" in parts
            and parts[-2] in (_LEGACY_ATTENTION)
        ):
            key = ".".join([*parts[:-2], _LEGACY_ATTENTION[parts[-2]], parts[-1]])
            if value.ndim == 4:
                value = value[:, :, 0, 0]
        out[key] = value
    return out


def load_sd_vae(model: AutoencoderKL, tensors: Mapping[str, np.ndarray], source: str = "") -> None:
    """Assign a diffusers-layout state dict into `model` in place (strict: all keys, all params)."""
    assign_state(
        model, normalize_keys(tensors), mirror_mapping(model), source=source or "SD-VAE checkpoint"
    )


def export_sd_vae(model: AutoencoderKL) -> dict[str, np.ndarray]:
    """The model's params as a diffusers-layout state dict (current attention names)."""
    return export_state(model, mirror_mapping(model))


def pretrained_sd_vae(
    name: str = "sd-vae-ft-ema",
    *,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    allow_unverified: bool = False,
    scaling: LatentScaling = LatentScaling(),  # noqa: B008
    dtype: jnp.dtype = jnp.float32,
) -> AutoencoderKL:
    """SD kl-f8 VAE with released weights (`"sd-vae-ft-ema"` or `"sd-vae-ft-mse"`).

    The file comes from `weights.registry.fetch` (verified cache, or `path=` for a pre-staged
    copy); a missing file raises `WeightsNotFoundError`, never random weights.
    """
    file = fetch(
        name, path=path, cache_dir=cache_dir, download=download, allow_unverified=allow_unverified
    )
    model = nnx.eval_shape(
        lambda: AutoencoderKL(VAEConfig(), scaling=scaling, dtype=dtype, rngs=nnx.Rngs(0))
    )
    materialize(model)
    load_sd_vae(model, read_state_dict(file), source=str(file))
    return model


def materialize(model: nnx.Module) -> None:
    """Give an `nnx.eval_shape` model zero-filled arrays so it can be assigned into."""
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable):
            value = var.get_value()
            if isinstance(value, jax.ShapeDtypeStruct):
                var.set_value(jnp.zeros(value.shape, value.dtype))
