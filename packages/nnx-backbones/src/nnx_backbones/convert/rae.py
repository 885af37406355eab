"""The RAE release's decoder and latent-statistics files ↔ `nnx_backbones.rae`.

Released decoder `model.pt` (bytetriper/RAE `stage1/decoders/decoder.py` `GeneralDecoder`,
ViT-MAE decoder layers; `configs/decoder/ViT{B,L,XL}/config.json`), D = decoder width:
    decoder_embed.{weight,bias}           [D, C]        latent → decoder width
    decoder_pos_embed                     [1, 1+hw, D]  fixed MAE sin-cos, cls row 0 (checked)
    trainable_cls_token                   [1, 1, D]
    decoder_layers.N. ...                               → layers.N. ...
        layernorm_{before,after}                        → norm{1,2}
        attention.attention.{query,key,value}           → attention.attention.{...}
        attention.output.dense                          → attention.output.dense
        intermediate.dense / output.dense               → mlp.fc1 / mlp.fc2 (exact GELU)
    decoder_norm, decoder_pred            [p²·3, D]
Linear weights are `[out, in]` (transposed). The release's LayerNorm eps is 1e-12
(`RAEDecoderConfig(layer_norm_eps=1e-12)`, the default). Statistics `stat.pt` = {"mean", "var"}
of shape [C, h, w] (`RAE.set_latent_stats` takes them as they are).
"""

import os
from collections.abc import Mapping

import numpy as np

from nnx_backbones.convert.common import load_mapped
from nnx_backbones.rae import RAE, RAEDecoder, sincos_2d
from nnx_backbones.weights.assign import LINEAR, Buffer, StateMapping, export_state
from nnx_backbones.weights.io import read_state_dict


def _linear(ckpt: str, path: str) -> dict:
    return {f"{ckpt}.weight": (f"{path}.kernel", LINEAR), f"{ckpt}.bias": f"{path}.bias"}


def _norm(ckpt: str, path: str) -> dict:
    return {f"{ckpt}.weight": f"{path}.scale", f"{ckpt}.bias": f"{path}.bias"}


def rae_decoder_mapping(decoder: RAEDecoder, grid: tuple[int, int]) -> StateMapping:
    """`{checkpoint key: entry}` of the released decoder for `decoder` on an `h × w` latent grid."""
    d = decoder.config.hidden_size
    pos = np.concatenate([np.zeros((1, d)), sincos_2d(d, *grid)])[None]
    m: dict = {"decoder_pos_embed": Buffer(pos.astype(np.float32), check_values=True, atol=1e-4)}
    m["trainable_cls_token"] = "cls_token"
    m |= _linear("decoder_embed", "decoder_embed")
    for n in range(len(decoder.layers)):
        c, p = f"decoder_layers.{n}", f"layers.{n}"
        m |= _norm(f"{c}.layernorm_before", f"{p}.norm1")
        m |= _norm(f"{c}.layernorm_after", f"{p}.norm2")
        for qkv in ("query", "key", "value"):
            m |= _linear(f"{c}.attention.attention.{qkv}", f"{p}.attention.attention.{qkv}")
        m |= _linear(f"{c}.attention.output.dense", f"{p}.attention.output.dense")
        m |= _linear(f"{c}.intermediate.dense", f"{p}.mlp.fc1")
        m |= _linear(f"{c}.output.dense", f"{p}.mlp.fc2")
    m |= _norm("decoder_norm", "decoder_norm")
    m |= _linear("decoder_pred", "decoder_pred")
    return m


def load_rae_decoder(
    rae: RAE,
    source: str | os.PathLike | Mapping[str, np.ndarray],
    *,
    stats: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
) -> RAE:
    """Load a released RAE decoder (and optionally its `stat.pt` statistics) into `rae` in place.

    Args:
      rae: an `RAE` whose decoder config and latent grid match the checkpoint.
      source: the decoder `model.pt` (needs torch), a `.safetensors`/`.npz`, or a flat dict.
      stats: the `stat.pt` {"mean", "var"} file or dict.
    Raises:
      WeightsError: listing every unknown, missing and mis-shaped key (nothing is assigned).
    """
    load_mapped(rae.decoder, source, rae_decoder_mapping(rae.decoder, rae.latent_shape[:2]))
    if stats is not None:
        values = stats if isinstance(stats, Mapping) else read_state_dict(stats)
        rae.set_latent_stats(values["mean"], values["var"])
    return rae


def export_rae_decoder(rae: RAE) -> dict[str, np.ndarray]:
    """The decoder's weights in the release layout."""
    return export_state(rae.decoder, rae_decoder_mapping(rae.decoder, rae.latent_shape[:2]))
