"""The public DiT and LightningDiT releases' state-dict layout ↔ `DiT` / `LightningDiT`.

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

LightningDiT (hustvl/LightningDiT `models/lightningdit.py`) keeps this layout and adds, per option:
    use_rmsnorm   blocks.N.norm{1,2}.weight, final_layer.norm_final.weight   RMSNorm scales
    qk_norm="rms" blocks.N.attn.{q,k}_norm.weight      [head_dim]
    use_swiglu    blocks.N.mlp.w12.* [2H, D] (SiLU half first), blocks.N.mlp.w3.* (no fc1/fc2)
    use_rope      feat_rope.freqs_{cos,sin} [T, head_dim]  EVA-02 2-D RoPE tables (checked)
    wo_shift      blocks.N.adaLN_modulation.1.* [4D, D]  (scale, gate) × (msa, mlp)
so `load_dit` imports a LightningDiT release into `nnx_backbones.lightning_dit.LightningDiT` too.
Its time input is the flow time t_rel ∈ [0, 1] fed unscaled (data at t_rel = 1), i.e.
t = t_rel / 1000 for this backbone's ×1000 time embedding.
"""

import os
from collections.abc import Mapping

import numpy as np

from nnx_backbones.convert.common import load_mapped
from nnx_backbones.dit import PatchTransformer
from nnx_backbones.weights.assign import (
    CONV2D,
    LINEAR,
    Buffer,
    StateMapping,
    Transform,
    export_state,
)
from nnx_backbones.weights.io import write_state_dict


def grouped_linear(groups: int) -> tuple[Transform, Transform]:
    """nn.Linear(D, k·H) weight `[k·H, D]` / bias `[k·H]` ↔ LinearGeneral(D, (k, H)) kernel
    `[D, k, H]` / bias `[k, H]`: the same numbers with the k merged outputs (q/k/v, SwiGLU's
    W₁/W₂) on their own axis, so that tensor parallelism splits heads / hidden units."""
    weight = Transform(
        f"linear_{groups}_groups",
        lambda a: a.T.reshape(a.shape[1], groups, -1),
        lambda a: a.reshape(a.shape[0], -1).T,
    )
    bias = Transform(
        f"bias_{groups}_groups", lambda a: a.reshape(groups, -1), lambda a: a.reshape(-1)
    )
    return weight, bias


QKV = grouped_linear(3)  # attn.qkv: [D, 3, D]
W12 = grouped_linear(2)  # SwiGLU mlp.w12: [D, 2, H]


def _linear(ckpt: str, path: str, groups: tuple[Transform, Transform] | None = None) -> dict:
    if groups is not None:
        w, b = groups
        return {f"{ckpt}.weight": (f"{path}.kernel", w), f"{ckpt}.bias": (f"{path}.bias", b)}
    return {f"{ckpt}.weight": (f"{path}.kernel", LINEAR), f"{ckpt}.bias": f"{path}.bias"}


# The merged linears of a block and their layout in the network.
BLOCK_GROUPS = {"attn.qkv": QKV, "mlp.w12": W12}


def dit_mapping(model: PatchTransformer) -> StateMapping:
    """The `{checkpoint key: entry}` mapping of the DiT / LightningDiT release for this network."""
    if any(type(b.attn.q_norm).__name__ not in ("NoneType", "RMSNorm") for b in model.blocks):
        raise ValueError(
            "dit_mapping covers qk_norm None or 'rms' (LightningDiT's RMSNorm); the release's "
            "LayerNorm qk-norm (torch eps 1e-5) has no counterpart here. Build with qk_norm='rms'."
        )
    grid_tokens = model.grid[0] * model.grid[1]
    m: dict = {
        "x_embedder.proj.weight": ("x_embedder.kernel", CONV2D),
        "x_embedder.proj.bias": "x_embedder.bias",
    }
    if model.use_pos_embed:
        pos = model.pos_embed().reshape(1, grid_tokens, model.hidden_size)
        m["pos_embed"] = Buffer(pos, check_values=True, atol=1e-4)
    if model.use_rope:
        cos, sin = (np.asarray(a) for a in model.rope())
        m["feat_rope.freqs_cos"] = Buffer(cos, check_values=True, atol=1e-4)
        m["feat_rope.freqs_sin"] = Buffer(sin, check_values=True, atol=1e-4)
    for name in ("t_embedder", "r_embedder"):
        if getattr(model, name) is not None:
            m |= _linear(f"{name}.mlp.0", f"{name}.linear_1")
            m |= _linear(f"{name}.mlp.2", f"{name}.linear_2")
    if model.y_embedder is not None:
        m["y_embedder.embedding_table.weight"] = "y_embedder.embedding_table.embedding"
    for n, block in enumerate(model.blocks):
        m |= block_mapping(block, f"blocks.{n}")
    m |= _linear("final_layer.linear", "final_layer.linear")
    m |= _linear("final_layer.adaLN_modulation.1", "final_layer.adaLN_modulation")
    m |= _norm(model.final_layer.norm_final, "final_layer.norm_final")
    return m


def _norm(norm, ckpt: str, path: str | None = None) -> dict:
    """An adaLN `_Norm` (no parameters, or an RMSNorm scale) or an attention q/k RMSNorm."""
    path = path or ckpt
    if type(norm).__name__ == "RMSNorm":
        return {f"{ckpt}.weight": f"{path}.scale"}
    if getattr(norm, "rms", None) is not None:
        return {f"{ckpt}.weight": f"{path}.rms.scale"}
    return {}


def block_mapping(block, ckpt: str, path: str | None = None) -> dict:
    """One `AdaLNBlock` in the DiT / LightningDiT release layout: checkpoint prefix `ckpt`
    (e.g. "blocks.3"), module path prefix `path` (default: the same)."""
    p = path or ckpt

    def lin(name: str) -> dict:
        return _linear(f"{ckpt}.{name}", f"{p}.{name}", BLOCK_GROUPS.get(name))

    m = lin("attn.qkv") | lin("attn.proj")
    m |= _linear(f"{ckpt}.adaLN_modulation.1", f"{p}.adaLN_modulation")
    if type(block.mlp).__name__ == "GeluMLP":
        m |= lin("mlp.fc1") | lin("mlp.fc2")
    else:
        m |= lin("mlp.w12") | lin("mlp.w3")
    m |= _norm(block.norm1, f"{ckpt}.norm1", f"{p}.norm1")
    m |= _norm(block.norm2, f"{ckpt}.norm2", f"{p}.norm2")
    for qk in ("q_norm", "k_norm"):
        if getattr(block.attn, qk) is not None:
            m |= _norm(getattr(block.attn, qk), f"{ckpt}.attn.{qk}", f"{p}.attn.{qk}")
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
    return load_mapped(model, source, dit_mapping(model), key=key)


def export_dit(model: PatchTransformer) -> dict[str, np.ndarray]:
    """The model's weights in the DiT release layout (`pos_embed` included)."""
    return export_state(model, dit_mapping(model))


def save_dit(model: PatchTransformer, path: str | os.PathLike) -> None:
    """Write `export_dit(model)` to `.safetensors`, `.npz` or `.pt` (torch needed for .pt)."""
    write_state_dict(path, export_dit(model))
