"""The RAE release's DiT^DH state-dict layout ↔ `nnx_backbones.ddt.LightningDDT`.

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
"""

import os
from collections.abc import Mapping

import numpy as np

from nnx_backbones.convert.dit import CONV2D, _linear, _norm, block_mapping, read_source
from nnx_backbones.ddt import LightningDDT
from nnx_backbones.dit import _pos_table
from nnx_backbones.layers.position import rope_2d_grid
from nnx_backbones.weights.assign import Buffer, StateMapping, assign_state, export_state


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
    tensors, name = read_source(source, key=key)
    assign_state(model, tensors, rae_ddt_mapping(model), source=name)
    return model


def export_rae_ddt(model: LightningDDT) -> dict[str, np.ndarray]:
    """The model's weights in RAE's DiT^DH layout."""
    return export_state(model, rae_ddt_mapping(model))
