"""The public DiT release's state-dict layout ↔ `nnx_backbones.dit.DiT`.

Checkpoint keys (PyTorch, facebookresearch/DiT `models.py`), D = hidden, p = patch:
    pos_embed                          [1, T, D]        fixed sin-cos buffer (checked, not loaded)
    x_embedder.proj.{weight,bias}      [D, C, p, p]     Conv2d → PatchEmbed kernel [p, p, C, D]
    t_embedder.mlp.{0,2}.{weight,bias}                  TimestepEmbedder linear_1 / linear_2
    y_embedder.embedding_table.weight  [classes+1, D]   last row = null label
    blocks.N.attn.qkv.{weight,bias}    [3D, D]          merged q, k, v (3, heads, head_dim)
    blocks.N.attn.proj.*, blocks.N.mlp.fc1.*, blocks.N.mlp.fc2.*
    blocks.N.adaLN_modulation.1.*      [6D, D]          (shift, scale, gate) × (msa, mlp)
    final_layer.linear.*               [p·p·C_out, D]   features (p_row, p_col, C_out)
    final_layer.adaLN_modulation.1.*   [2D, D]          (shift, scale)
Linear weights are `[out, in]` (transposed into nnx `[in, out]` kernels); the merged qkv is
stored here as a `[D, 3, D]` kernel and `[3, D]` bias (the same numbers, the q/k/v axis apart, so
that tensor parallelism can split heads). A network built with
`use_r=True` also has `r_embedder.mlp.{0,2}.*` (an extension of the layout, same form as t).

The release's `DiT-XL-2-256x256.pt` is `DiT.from_preset("XL/2", input_size=32, in_channels=4,
num_classes=1000, learn_sigma=True, ...)`; its time input is the integer step n ∈ [0, 999],
which is `t = n / 1000` here.
"""

import os
from collections.abc import Mapping

import numpy as np

from nnx_backbones.dit import PatchTransformer
from nnx_backbones.weights.assign import (
    CONV2D,
    LINEAR,
    Buffer,
    StateMapping,
    Transform,
    assign_state,
    export_state,
)
from nnx_backbones.weights.io import read_state_dict, write_state_dict

# nn.Linear(D, 3D) weight [3D, D] / bias [3D] ↔ LinearGeneral(D, (3, D)) kernel [D, 3, D] / [3, D].
QKV_WEIGHT = Transform(
    "qkv_weight", lambda a: a.T.reshape(a.shape[1], 3, -1), lambda a: a.reshape(a.shape[0], -1).T
)
QKV_BIAS = Transform("qkv_bias", lambda a: a.reshape(3, -1), lambda a: a.reshape(-1))


def _linear(ckpt: str, path: str) -> dict:
    return {f"{ckpt}.weight": (f"{path}.kernel", LINEAR), f"{ckpt}.bias": f"{path}.bias"}


def _qkv(ckpt: str, path: str) -> dict:
    return {
        f"{ckpt}.weight": (f"{path}.kernel", QKV_WEIGHT),
        f"{ckpt}.bias": (f"{path}.bias", QKV_BIAS),
    }


def dit_mapping(model: PatchTransformer) -> StateMapping:
    """The `{checkpoint key: entry}` mapping of the DiT release for this network."""
    if model.use_rope or any(b.attn.q_norm is not None for b in model.blocks):
        raise ValueError(
            "dit_mapping covers the DiT release layout (LayerNorm, GELU MLP, no RoPE/qk-norm); "
            "this network has LightningDiT options. Use weights.assign with your own mapping."
        )
    if type(model.blocks[0].mlp).__name__ != "GeluMLP" or model.blocks[0].wo_shift:
        raise ValueError("dit_mapping needs GELU MLPs and shifted adaLN (the DiT release).")
    grid_tokens = model.grid[0] * model.grid[1]
    pos = model.pos_embed().reshape(1, grid_tokens, model.hidden_size)
    m: dict = {
        "pos_embed": Buffer(pos, check_values=True, atol=1e-4),
        "x_embedder.proj.weight": ("x_embedder.kernel", CONV2D),
        "x_embedder.proj.bias": "x_embedder.bias",
    }
    for name in ("t_embedder", "r_embedder"):
        if getattr(model, name) is not None:
            m |= _linear(f"{name}.mlp.0", f"{name}.linear_1")
            m |= _linear(f"{name}.mlp.2", f"{name}.linear_2")
    if model.y_embedder is not None:
        m["y_embedder.embedding_table.weight"] = "y_embedder.embedding_table.embedding"
    for n in range(model.depth):
        b = f"blocks.{n}"
        m |= _qkv(f"{b}.attn.qkv", f"{b}.attn.qkv")
        m |= _linear(f"{b}.attn.proj", f"{b}.attn.proj")
        m |= _linear(f"{b}.mlp.fc1", f"{b}.mlp.fc1")
        m |= _linear(f"{b}.mlp.fc2", f"{b}.mlp.fc2")
        m |= _linear(f"{b}.adaLN_modulation.1", f"{b}.adaLN_modulation")
    m |= _linear("final_layer.linear", "final_layer.linear")
    m |= _linear("final_layer.adaLN_modulation.1", "final_layer.adaLN_modulation")
    return m


def load_dit(
    model: PatchTransformer,
    source: str | os.PathLike | Mapping[str, np.ndarray],
    *,
    key: str | None = None,
) -> PatchTransformer:
    """Load a DiT-release checkpoint into `model` in place (strict) and return it.

    Args:
      model: a `DiT` whose configuration matches the checkpoint.
      source: a `.pt`/`.pth` (needs torch), `.safetensors` or `.npz` path, or a flat dict.
      key: checkpoint entry to read (e.g. `"ema"` in a training checkpoint).
    Raises:
      WeightsError: listing every unknown, missing and mis-shaped key (nothing is assigned).
    """
    if isinstance(source, Mapping):
        tensors, name = source, "checkpoint"
    else:
        tensors, name = read_state_dict(source, key=key), str(source)
    assign_state(model, tensors, dit_mapping(model), source=name)
    return model


def export_dit(model: PatchTransformer) -> dict[str, np.ndarray]:
    """The model's weights in the DiT release layout (`pos_embed` included)."""
    return export_state(model, dit_mapping(model))


def save_dit(model: PatchTransformer, path: str | os.PathLike) -> None:
    """Write `export_dit(model)` to `.safetensors`, `.npz` or `.pt` (torch needed for .pt)."""
    write_state_dict(path, export_dit(model))
