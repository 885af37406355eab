"""The RAE DiT^DH and MCG-NJU DDT releases' state-dict layouts ↔ `nnx_backbones.ddt.LightningDDT`.

Checkpoint keys (bytetriper/RAE `stage2/models/DDT.py` `DiTwDDTHead`), trunk width D_e, head D_d:
    s_embedder.proj.*, x_embedder.proj.*     Conv2d patch embeddings (trunk / head)
    s_projector.*                            [D_d, D_e] Linear, only when D_e ≠ D_d
    t_embedder.W                             [256]  fixed Gaussian Fourier frequencies
    t_embedder.mlp.{0,2}.*                   Linear 512 → D_e → D_e
    y_embedder.embedding_table.weight        [classes+1, D_e]
    pos_embed                                [1, T, D_e] fixed sin-cos of the trunk (checked)
    enc_feat_rope.freqs_{cos,sin}, dec_feat_rope.freqs_{cos,sin}   RoPE tables (checked)
    blocks.0 … blocks.{depth_e−1}            trunk blocks  → encoder_blocks.N
    blocks.{depth_e} …                       head blocks   → decoder_blocks.N
    final_layer.{linear, adaLN_modulation.1, norm_final}.*
Blocks are LightningDiT blocks (`convert.dit.block_mapping`). The release's forward takes the
flow time t ∈ [0, 1] unscaled, as `LightningDDT(time_embedding="gaussian_fourier")` does.

MCG-NJU/DDT (`src/models/denoiser/decoupled_improved_dit.py` `DDT`, one width D, patch p) is
`LightningDDT(**DDT_OPTIONS)` (sinusoidal time features of the unscaled t with max period 10,
no SiLU inside modulations, no position tables, interleaved 2-D RoPE over [0, 16], LayerNorm in
the final layer, RMS qk-norm); its keys:
    {x,s}_embedder.proj.{weight [D, C·p·p], bias}   Linear on unfolded (C, p, p) patches
    final_layer.linear.*  [C·p·p, D]                  rows in `fold`'s (C, p, p) order
    t_embedder.mlp.{0,2}.*, y_embedder.embedding_table.weight [classes+1, D]
    blocks.N.{norm1,norm2}.weight, blocks.N.attn.{q_norm,k_norm}.weight
    blocks.N.attn.qkv.weight (no bias), blocks.N.attn.proj.*
    blocks.N.mlp.{w1,w3}.weight (no bias)  → our merged mlp.w12 = [w1; w3];  mlp.w2 → mlp.w3
    blocks.N.adaLN_modulation.0.*, final_layer.{linear, adaLN_modulation.0}.*
The release has no qkv / SwiGLU biases: they load as zeros, and `export_ddt` refuses a network
whose biases are not zero.
"""

import os
from collections.abc import Mapping

import numpy as np

from nnx_backbones.convert.common import load_mapped
from nnx_backbones.convert.dit import BLOCK_GROUPS, CONV2D, _linear, _norm, block_mapping
from nnx_backbones.ddt import LightningDDT
from nnx_backbones.dit import _pos_table
from nnx_backbones.layers.position import rope_2d_grid
from nnx_backbones.weights.assign import (
    Buffer,
    StateMapping,
    Transform,
    assign_state,
    export_state,
)
from nnx_backbones.weights.io import read_state_dict


def rae_ddt_mapping(model: LightningDDT) -> StateMapping:
    """The `{checkpoint key: entry}` mapping of RAE's DiT^DH release for this network."""
    if model.time_embedding != "gaussian_fourier" or not model.silu_in_modulation:
        raise ValueError(
            "RAE's DiT^DH has Gaussian Fourier time features and SiLU inside every modulation; "
            "build LightningDDT with time_embedding='gaussian_fourier', silu_in_modulation=True."
        )
    if model.decoder_pos_embed or model.use_r:
        raise ValueError("RAE's DiT^DH has no head position table and no r-embedding.")
    m: dict = {}
    for name in ("s_embedder", "x_embedder"):
        m[f"{name}.proj.weight"] = (f"{name}.kernel", CONV2D)
        m[f"{name}.proj.bias"] = f"{name}.bias"
    if model.s_projector is not None:
        m |= _linear("s_projector", "s_projector")
    m["t_embedder.W"] = "t_embedder.W"
    m |= _linear("t_embedder.mlp.0", "t_embedder.linear_1")
    m |= _linear("t_embedder.mlp.2", "t_embedder.linear_2")
    if model.y_embedder is not None:
        m["y_embedder.embedding_table.weight"] = "y_embedder.embedding_table.embedding"
    d_enc, d_dec = model.hidden_size
    if model.use_pos_embed:
        pos = _pos_table(d_enc, model.grid)[None].astype(np.float32)
        m["pos_embed"] = Buffer(pos, check_values=True, atol=1e-4)
    if model.use_rope:
        for stack, (prefix, width) in enumerate((("enc", d_enc), ("dec", d_dec))):
            cos, sin = rope_2d_grid(width // model.num_heads[stack], model.grid)
            m[f"{prefix}_feat_rope.freqs_cos"] = Buffer(
                np.asarray(cos), check_values=True, atol=1e-4
            )
            m[f"{prefix}_feat_rope.freqs_sin"] = Buffer(
                np.asarray(sin), check_values=True, atol=1e-4
            )
    blocks = [("encoder_blocks", b) for b in model.encoder_blocks]
    blocks += [("decoder_blocks", b) for b in model.decoder_blocks]
    counts = {"encoder_blocks": 0, "decoder_blocks": 0}
    for n, (stack, block) in enumerate(blocks):
        m |= block_mapping(block, f"blocks.{n}", f"{stack}.{counts[stack]}")
        counts[stack] += 1
    m |= _linear("final_layer.linear", "final_layer.linear")
    m |= _linear("final_layer.adaLN_modulation.1", "final_layer.adaLN_modulation")
    m |= _norm(model.final_layer.norm_final, "final_layer.norm_final")
    return m


def load_rae_ddt(
    model: LightningDDT,
    source: str | os.PathLike | Mapping[str, np.ndarray],
    *,
    key: str | None = None,
) -> LightningDDT:
    """Load an RAE DiT^DH checkpoint into `model` in place (strict) and return it.

    Args:
      model: a `LightningDDT` (RAE defaults) whose configuration matches the checkpoint.
      source: a `.pt` (needs torch), `.safetensors` or `.npz` path, or a flat dict.
      key: checkpoint entry to read (e.g. `"ema"` in a training checkpoint).
    Raises:
      WeightsError: listing every unknown, missing and mis-shaped key (nothing is assigned).
    """
    return load_mapped(model, source, rae_ddt_mapping(model), key=key)


def export_rae_ddt(model: LightningDDT) -> dict[str, np.ndarray]:
    """The model's weights in RAE's DiT^DH layout."""
    return export_state(model, rae_ddt_mapping(model))


# The options that make `LightningDDT` MCG-NJU's DDT (besides its sizes).
DDT_OPTIONS = dict(
    time_embedding="sinusoidal", time_scale=1.0, time_max_period=10.0, silu_in_modulation=False,
    use_pos_embed=False, rope_layout="ddt", final_rmsnorm=False, qk_norm="rms",
    use_rmsnorm=True, use_swiglu=True, use_rope=True, wo_shift=False,
)  # fmt: skip
_ZERO_BIASES = ("attn.qkv.bias", "mlp.w12.bias", "mlp.w3.bias")


def _unfold_linear(channels: int, patch: int) -> Transform:
    """Linear weight `[D, C·p·p]` on unfolded (C, p, p) patches ↔ conv kernel `[p, p, C, D]`."""
    return Transform(
        "unfold_linear",
        lambda a: a.reshape(-1, channels, patch, patch).transpose(2, 3, 1, 0),
        lambda k: k.transpose(3, 2, 0, 1).reshape(k.shape[-1], -1),
    )


def _fold_rows(channels: int, patch: int, *, bias: bool) -> Transform:
    """Final Linear rows in `fold`'s (C, p, p) order ↔ this package's unpatchify (p, p, C)."""
    c, p = channels, patch

    def to_nnx(a):
        a = a.reshape(c, p, p, -1).transpose(1, 2, 0, 3).reshape(p * p * c, -1)
        return a[:, 0] if bias else a.T

    def to_ckpt(k):
        k = k[:, None] if bias else k.T
        k = k.reshape(p, p, c, -1).transpose(2, 0, 1, 3).reshape(c * p * p, -1)
        return k[:, 0] if bias else k

    return Transform("fold_rows", to_nnx, to_ckpt)


def ddt_mapping(model: LightningDDT) -> StateMapping:
    """The `{checkpoint key: entry}` mapping of MCG-NJU's DDT release for this network (after
    `load_ddt` merged `mlp.w1`/`w3` into `mlp.w12` and added the zero biases)."""
    wrong = {k: v for k, v in DDT_OPTIONS.items() if getattr(model, k) != v}
    if model.hidden_size[0] != model.hidden_size[1] or model.num_heads[0] != model.num_heads[1]:
        wrong["hidden_size/num_heads"] = "one width and head count for trunk and head"
    if wrong or model.use_r or model.learn_sigma:
        raise ValueError(
            f"MCG-NJU's DDT is LightningDDT(**convert.ddt.DDT_OPTIONS) with equal widths, no r "
            f"and no learn_sigma; this network differs in {sorted(wrong) or 'use_r/learn_sigma'}."
        )
    unfold = _unfold_linear(model.in_channels, model.patch_size)
    m: dict = {}
    for name in ("s_embedder", "x_embedder"):
        m[f"{name}.proj.weight"] = (f"{name}.kernel", unfold)
        m[f"{name}.proj.bias"] = f"{name}.bias"
    m |= _linear("t_embedder.mlp.0", "t_embedder.linear_1")
    m |= _linear("t_embedder.mlp.2", "t_embedder.linear_2")
    m["y_embedder.embedding_table.weight"] = "y_embedder.embedding_table.embedding"
    blocks = [f"encoder_blocks.{i}" for i in range(len(model.encoder_blocks))]
    blocks += [f"decoder_blocks.{i}" for i in range(len(model.decoder_blocks))]
    for n, path in enumerate(blocks):
        c = f"blocks.{n}"
        for name in ("attn.qkv", "attn.proj", "mlp.w12", "mlp.w3"):
            m |= _linear(f"{c}.{name}", f"{path}.{name}", BLOCK_GROUPS.get(name))
        m |= _linear(f"{c}.adaLN_modulation.0", f"{path}.adaLN_modulation")
        for norm in ("norm1", "norm2"):
            m[f"{c}.{norm}.weight"] = f"{path}.{norm}.rms.scale"
        for norm in ("q_norm", "k_norm"):
            m[f"{c}.attn.{norm}.weight"] = f"{path}.attn.{norm}.scale"
    c, p = model.out_channels, model.patch_size
    m["final_layer.linear.weight"] = ("final_layer.linear.kernel", _fold_rows(c, p, bias=False))
    m["final_layer.linear.bias"] = ("final_layer.linear.bias", _fold_rows(c, p, bias=True))
    m |= _linear("final_layer.adaLN_modulation.0", "final_layer.adaLN_modulation")
    return m


def load_ddt(
    model: LightningDDT,
    source: str | os.PathLike | Mapping[str, np.ndarray],
    *,
    key: str | None = None,
) -> LightningDDT:
    """Load an MCG-NJU DDT checkpoint into `model` (built with `DDT_OPTIONS`) in place.

    Raises:
      WeightsError: listing every unknown, missing and mis-shaped key (nothing is assigned).
    """
    tensors = dict(source if isinstance(source, Mapping) else read_state_dict(source, key=key))
    blocks = sorted({k.split(".")[1] for k in tensors if k.startswith("blocks.")}, key=int)
    for n in blocks:
        c = f"blocks.{n}"
        if f"{c}.mlp.w1.weight" in tensors and f"{c}.mlp.w3.weight" in tensors:
            w1, w3 = tensors.pop(f"{c}.mlp.w1.weight"), tensors.pop(f"{c}.mlp.w3.weight")
            w2 = tensors.pop(f"{c}.mlp.w2.weight", None)
            tensors[f"{c}.mlp.w12.weight"] = np.concatenate([w1, w3], axis=0)
            tensors[f"{c}.mlp.w12.bias"] = np.zeros(w1.shape[0] * 2, w1.dtype)
            if w2 is not None:
                tensors[f"{c}.mlp.w3.weight"] = w2
                tensors[f"{c}.mlp.w3.bias"] = np.zeros(w2.shape[0], w2.dtype)
        if f"{c}.attn.qkv.weight" in tensors:
            qkv = tensors[f"{c}.attn.qkv.weight"]
            tensors.setdefault(f"{c}.attn.qkv.bias", np.zeros(qkv.shape[0], qkv.dtype))
    name = "checkpoint" if isinstance(source, Mapping) else str(source)
    assign_state(model, tensors, ddt_mapping(model), source=name)
    return model


def export_ddt(model: LightningDDT) -> dict[str, np.ndarray]:
    """The model's weights in MCG-NJU's DDT layout (separate bias-free w1, w3, w2; no qkv bias)."""
    out = export_state(model, ddt_mapping(model))
    for key in [k for k in out if k.endswith(_ZERO_BIASES)]:
        if np.any(out[key] != 0):
            raise ValueError(f"{key} is not zero: the DDT release layout has no such bias.")
        del out[key]
    for key in [k for k in out if k.endswith(".mlp.w12.weight")]:
        c = key[: -len(".mlp.w12.weight")]
        out[f"{c}.mlp.w2.weight"] = out.pop(f"{c}.mlp.w3.weight")
        out[f"{c}.mlp.w1.weight"], out[f"{c}.mlp.w3.weight"] = np.split(out.pop(key), 2)
    return out
