"""Transformer building blocks shared by DiT, LightningDiT and LightningDDT.

One concept per file: `patch` (patchify / patch embedding), `position` (2-D sin-cos table, 2-D
RoPE), `norms` (LayerNorm without affine, RMSNorm), `feedforward` (GELU MLP, SwiGLU),
`attention` (multi-head attention: heads folded into the batch on CPU,
`jax.nn.dot_product_attention` elsewhere), `adaln` (modulate, the adaLN transformer block, the
final layer), `fusion` (an exact identity that stops XLA:CPU recomputing the residual stream in
every consumer).
"""

from nnx_backbones.layers.adaln import AdaLNBlock, FinalLayer, modulate
from nnx_backbones.layers.attention import Attention
from nnx_backbones.layers.feedforward import GeluMLP, SwiGLU
from nnx_backbones.layers.fusion import fusion_boundary
from nnx_backbones.layers.norms import RMSNorm, layer_norm, make_norm
from nnx_backbones.layers.patch import PatchEmbed, patchify, unpatchify
from nnx_backbones.layers.position import apply_rope, rope_2d, sincos_pos_embed_2d

__all__ = [
    "AdaLNBlock",
    "Attention",
    "FinalLayer",
    "GeluMLP",
    "PatchEmbed",
    "RMSNorm",
    "SwiGLU",
    "apply_rope",
    "fusion_boundary",
    "layer_norm",
    "make_norm",
    "modulate",
    "patchify",
    "rope_2d",
    "sincos_pos_embed_2d",
    "unpatchify",
]
