"""Import/export DINOv2 weights: HF transformers layout, plus the other layouts users have.

`DINOv2`'s attribute tree mirrors the HF keys (`embeddings.cls_token`,
`embeddings.patch_embeddings.projection.weight`, `encoder.layer.N.attention.attention.query`,
`encoder.layer.N.layer_scale1.lambda1`, `encoder.layer.N.mlp.fc1` or, for ViT-g,
`mlp.weights_in/weights_out`, `layernorm`), so the mapping is mechanical (see
`convert.sd_vae.mirror_mapping`). `embeddings.mask_token` (used only for masked training) is
kept and round-tripped; a checkpoint without it gets zeros (its HF init; it is unused at
inference). A checkpoint saved with the `dinov2.` prefix of `Dinov2ForImageClassification` is
accepted by stripping it.

Also read (`to_hf_layout`, applied by `load_dinov2`), export always writes the HF hub names:

- transformers ≥ 5 in-memory names, i.e. `Dinov2Model.state_dict()` saved with `torch.save`:
  `attention.{q,k,v,o}_proj` ↔ `attention.attention.{query,key,value}`, `attention.output.dense`;
  SwiGLU `mlp.{gate,up,down}_proj` ↔ `mlp.weights_in = [gate; up]`, `mlp.weights_out`.
- the facebookresearch/dinov2 hub checkpoints (`dinov2_vitl14_pretrain.pth`, ...):
  `cls_token`, `pos_embed`, `register_tokens`, `mask_token`, `patch_embed.proj`,
  `blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1/fc2 | mlp.w12/w3, ls2.gamma}`,
  `norm`; the merged `qkv` `[3D, D]` is split into q, k, v (rows in that order). Training
  checkpoints with `block_chunks > 0` (`blocks.C.N.`) are accepted too. Load these with
  `interpolation="original"` to get the hub model's position-embedding resize.
"""

import os
import re
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

_HUB_TOP = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "register_tokens": "embeddings.register_tokens",
    "mask_token": "embeddings.mask_token",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_HUB_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.proj": "attention.output.dense",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.w12": "mlp.weights_in",
    "mlp.w3": "mlp.weights_out",
}
_IN_MEMORY = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
    "mlp.down_proj": "mlp.weights_out",
}
_BLOCK = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)\.(weight|bias|gamma)$")


def _from_hub(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """facebookresearch/dinov2 hub keys → HF keys (unknown keys kept, so errors name them)."""
    out: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        if key in _HUB_TOP:
            out[_HUB_TOP[key]] = value
            continue
        m = _BLOCK.match(key)
        if m is None:
            out[key] = value
            continue
        i, name, leaf = m.groups()
        pre = f"encoder.layer.{i}."
        if name == "attn.qkv":
            for part, v in zip(("query", "key", "value"), np.split(value, 3), strict=True):
                out[f"{pre}attention.attention.{part}.{leaf}"] = v
        elif f"{name}.{leaf}" in _HUB_BLOCK:  # ls1.gamma
            out[pre + _HUB_BLOCK[f"{name}.{leaf}"]] = value
        elif name in _HUB_BLOCK:
            out[f"{pre}{_HUB_BLOCK[name]}.{leaf}"] = value
        else:
            out[key] = value
    return out


def _from_in_memory(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers ≥ 5 module names (`q_proj`, `gate_proj`/`up_proj`) → HF hub keys."""
    out: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        for new, old in _IN_MEMORY.items():
            if f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
                break
        if ".mlp.gate_proj." in key:
            up = key.replace(".mlp.gate_proj.", ".mlp.up_proj.")
            if up in tensors:
                out[key.replace(".gate_proj.", ".weights_in.")] = np.concatenate(
                    [value, tensors[up]]
                )
                continue
        elif ".mlp.up_proj." in key and key.replace(".up_proj.", ".gate_proj.") in tensors:
            continue
        out[key] = value
    return out


def to_hf_layout(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Any supported DINOv2 layout (see module docstring) → HF hub keys."""
    prefix = "dinov2."
    if tensors and all(k.startswith(prefix) for k in tensors if not k.startswith("classifier.")):
        tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if "pos_embed" in tensors or any(k.startswith("blocks.") for k in tensors):
        return _from_hub(tensors)
    return _from_in_memory(tensors)


def load_dinov2(model: DINOv2, tensors: Mapping[str, np.ndarray], source: str = "") -> None:
    """Assign a DINOv2 state dict into `model` in place (strict: all keys, all params).

    Accepts the HF hub layout, transformers' in-memory names and the facebookresearch/dinov2
    hub layout (see module docstring).
    """
    tensors = to_hf_layout(tensors)
    if "embeddings.mask_token" not in tensors:
        d = model.config.hidden_size
        tensors = {**tensors, "embeddings.mask_token": np.zeros((1, d), np.float32)}
    assign_state(model, tensors, mirror_mapping(model), source=source or "DINOv2 checkpoint")


def export_dinov2(model: DINOv2) -> dict[str, np.ndarray]:
    """The model's params as an HF-layout state dict."""
    return export_state(model, mirror_mapping(model))


def config_for(name: str, *, interpolation: str = "hf") -> DINOv2Config:
    """Config of a registered DINOv2 entry, e.g. `"dinov2-vitb14-reg"` → ViT-B/14 + 4 registers."""
    parts = name.split("-")
    if len(parts) < 2 or parts[0] != "dinov2" or not parts[1].startswith("vit"):
        raise WeightsError(
            f"{name!r} is not a DINOv2 weights name; expected dinov2-vit{{s,b,l,g}}14[-reg]."
        )
    return dinov2_config(parts[1][3], registers=name.endswith("-reg"), interpolation=interpolation)


def pretrained_dinov2(
    name: str = "dinov2-vitb14",
    *,
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    allow_unverified: bool = False,
    dtype: jnp.dtype = jnp.float32,
    interpolation: str = "hf",
) -> DINOv2:
    """DINOv2 with released weights, e.g. `"dinov2-vitb14"` or `"dinov2-vitb14-reg"`.

    The file comes from `weights.registry.fetch` (verified cache, or `path=` for a pre-staged
    copy, which may also be the hub's `dinov2_vitl14_pretrain.pth`); a missing file raises
    `WeightsNotFoundError`, never random weights. `interpolation="original"` resizes position
    embeddings as the facebookresearch/dinov2 hub models (EDM2's FD-DINOv2), `"hf"` as HF.
    """
    get_spec(name)
    cfg = config_for(name, interpolation=interpolation)
    file = fetch(
        name, path=path, cache_dir=cache_dir, download=download, allow_unverified=allow_unverified
    )
    model = nnx.eval_shape(lambda: DINOv2(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
    materialize(model)
    load_dinov2(model, read_state_dict(file), source=str(file))
    return model
