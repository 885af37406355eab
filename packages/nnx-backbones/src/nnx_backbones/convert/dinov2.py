"""Import/export DINOv2 weights in the HF transformers safetensors layout.

`DINOv2`'s attribute tree mirrors the HF keys (`embeddings.cls_token`,
`embeddings.patch_embeddings.projection.weight`, `encoder.layer.N.attention.attention.query`,
`encoder.layer.N.layer_scale1.lambda1`, `encoder.layer.N.mlp.fc1` or, for ViT-g,
`mlp.weights_in/weights_out`, `layernorm`), so the mapping is mechanical (see
`convert.sd_vae.mirror_mapping`). `embeddings.mask_token` (used only for masked training) is
kept and round-tripped; a checkpoint without it gets zeros (its HF init; it is unused at
inference). A checkpoint saved with the `dinov2.` prefix of `Dinov2ForImageClassification` is
accepted by stripping it.
"""

import os
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_backbones.convert.sd_vae import materialize, mirror_mapping
from nnx_backbones.dinov2 import DINOv2, DINOv2Config, dinov2_config
from nnx_backbones.errors import WeightsError
from nnx_backbones.weights.assign import assign_state, export_state
from nnx_backbones.weights.io import read_state_dict
from nnx_backbones.weights.registry import fetch, get_spec


def load_dinov2(model: DINOv2, tensors: Mapping[str, np.ndarray], source: str = "") -> None:
    """Assign an HF-layout state dict into `model` in place (strict: all keys, all params)."""
    prefix = "dinov2."
    if tensors and all(k.startswith(prefix) for k in tensors if not k.startswith("classifier.")):
        tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if "embeddings.mask_token" not in tensors:
        d = model.config.hidden_size
        tensors = {**tensors, "embeddings.mask_token": np.zeros((1, d), np.float32)}
    assign_state(model, tensors, mirror_mapping(model), source=source or "DINOv2 checkpoint")


def export_dinov2(model: DINOv2) -> dict[str, np.ndarray]:
    """The model's params as an HF-layout state dict."""
    return export_state(model, mirror_mapping(model))


def config_for(name: str) -> DINOv2Config:
    """Config of a registered DINOv2 entry, e.g. `"dinov2-vitb14-reg"` → ViT-B/14 + 4 registers."""
    parts = name.split("-")
    if len(parts) < 2 or parts[0] != "dinov2" or not parts[1].startswith("vit"):
        raise WeightsError(
            f"{name!r} is not a DINOv2 weights name; expected dinov2-vit{{s,b,l,g}}14[-reg]."
        )
    return dinov2_config(parts[1][3], registers=name.endswith("-reg"))


def pretrained_dinov2(
    name: str = "dinov2-vitb14",
    *,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    allow_unverified: bool = False,
    dtype: jnp.dtype = jnp.float32,
) -> DINOv2:
    """DINOv2 with released weights, e.g. `"dinov2-vitb14"` or `"dinov2-vitb14-reg"`.

    The file comes from `weights.registry.fetch` (verified cache, or `path=` for a pre-staged
    copy); a missing file raises `WeightsNotFoundError`, never random weights.
    """
    get_spec(name)
    cfg = config_for(name)
    file = fetch(
        name, path=path, cache_dir=cache_dir, download=download, allow_unverified=allow_unverified
    )
    model = nnx.eval_shape(lambda: DINOv2(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
    materialize(model)
    load_dinov2(model, read_state_dict(file), source=str(file))
    return model
