"""Import/export SD-VAE weights: the diffusers `AutoencoderKL` layout, and the CompVis file.

The NNX attribute tree of `AutoencoderKL` mirrors the diffusers keys, so the mapping is
mechanical: `encoder.down_blocks.0.resnets.1.norm1.scale` ↔ `...norm1.weight`, conv kernels
`[kh, kw, I, O]` ↔ `[O, I, kh, kw]`, linear kernels `[I, O]` ↔ `[O, I]`. Checkpoints saved by
older diffusers name the mid-block attention `query/key/value/proj_attn` (sometimes as 1×1 conv
weights); they are renamed to `to_q/to_k/to_v/to_out.0` before assignment. Export always writes
the current names.

The original CompVis/ldm single file (`vae-ft-mse-840000-ema-pruned.ckpt` / `.safetensors`, or
the `first_stage_model.` part of a full SD checkpoint) is read too (`compvis_to_diffusers`):

    {encoder,decoder}.norm_out      → conv_norm_out
    encoder.down.i.block.j          → encoder.down_blocks.i.resnets.j
    encoder.down.i.downsample       → encoder.down_blocks.i.downsamplers.0
    decoder.up.i.block.j            → decoder.up_blocks.(n−1−i).resnets.j
    decoder.up.i.upsample           → decoder.up_blocks.(n−1−i).upsamplers.0
    *.mid.block_1, block_2          → mid_block.resnets.0, 1
    *.mid.attn_1.{norm,q,k,v,proj_out}
                                    → mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}
                                      (1×1 conv weights [O, I, 1, 1] squeezed to [O, I])
    nin_shortcut                    → conv_shortcut

ldm numbers decoder levels from the lowest resolution up, diffusers in execution order, hence
n−1−i. Keys under `loss.` (the training discriminator/LPIPS of an ldm checkpoint) are dropped.
"""

import os
import re
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


_COMPVIS = re.compile(r"^(encoder|decoder)\.(down|up|mid)\.")
_COMPVIS_ATTENTION = {
    "norm": "group_norm",
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "proj_out": "to_out.0",
}


def is_compvis(tensors: Mapping[str, np.ndarray]) -> bool:
    """True for the CompVis/ldm key layout (with or without `first_stage_model.`)."""
    return any(_COMPVIS.match(k.removeprefix("first_stage_model.")) for k in tensors)


def compvis_to_diffusers(tensors: Mapping[str, np.ndarray], levels: int) -> dict[str, np.ndarray]:
    """CompVis/ldm AutoencoderKL keys → diffusers keys (see module docstring).

    `levels` is the number of resolution levels (`len(VAEConfig.block_out_channels)`); unknown
    keys are passed through so that the strict assignment names them.
    """
    if any(k.startswith("first_stage_model.") for k in tensors):  # a full SD checkpoint
        tensors = {
            k.removeprefix("first_stage_model."): v
            for k, v in tensors.items()
            if k.startswith("first_stage_model.")
        }
    out: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        if key.startswith("loss."):
            continue
        new = key.replace(".norm_out.", ".conv_norm_out.").replace(
            ".nin_shortcut.", ".conv_shortcut."
        )
        new = re.sub(r"\.down\.(\d+)\.block\.", r".down_blocks.\1.resnets.", new)
        new = re.sub(r"\.down\.(\d+)\.downsample\.", r".down_blocks.\1.downsamplers.0.", new)
        new = re.sub(
            r"\.up\.(\d+)\.(block|upsample)\.",
            lambda m: (
                f".up_blocks.{levels - 1 - int(m[1])}."
                + ("resnets." if m[2] == "block" else "upsamplers.0.")
            ),
            new,
        )
        new = new.replace(".mid.block_1.", ".mid_block.resnets.0.")
        new = new.replace(".mid.block_2.", ".mid_block.resnets.1.")
        m = re.match(r"^(encoder|decoder)\.mid\.attn_1\.(\w+)\.(weight|bias)$", new)
        if m and m[2] in _COMPVIS_ATTENTION:
            new = f"{m[1]}.mid_block.attentions.0.{_COMPVIS_ATTENTION[m[2]]}.{m[3]}"
            if value.ndim == 4:  # 1×1 conv [O, I, 1, 1] → linear [O, I]
                value = value[:, :, 0, 0]
        out[new] = value
    return out


def load_sd_vae(model: AutoencoderKL, tensors: Mapping[str, np.ndarray], source: str = "") -> None:
    """Assign an SD-VAE state dict into `model` in place (strict: all keys, all params).

    Reads the diffusers layout (current or legacy attention names) and the CompVis/ldm layout.
    """
    if is_compvis(tensors):
        tensors = compvis_to_diffusers(tensors, len(model.config.block_out_channels))
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
    copy, e.g. the CompVis `vae-ft-mse-840000-ema-pruned.safetensors`); a missing file raises
    `WeightsNotFoundError`, never random weights.
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
