"""Networks for diffusion and flow models under one backbone contract (see `contract`).

Generative backbones (`DiT`, `LightningDiT`, `LightningDDT`, `MLP`, `EDM2UNet`, the video
`VideoDiT`) share the call `net(x, t, *, r=None, y=None, train=False, return_hidden_at=None)`;
encoders and autoencoders (`AutoencoderKL`, `DINOv2`, `RAE`) serve latent diffusion, REPA and
evaluation. Weights move in and out through `nnx_backbones.weights` (readers, strict assignment, a
verified download registry) and `nnx_backbones.convert` (published checkpoint layouts).
"""

from nnx_backbones.contract import Backbone
from nnx_backbones.ddt import LightningDDT
from nnx_backbones.dinov2 import DINOv2, DINOv2Config, DINOv2Output, dinov2_config
from nnx_backbones.dit import DiT, dit_config
from nnx_backbones.edm2_unet import EDM2Config, EDM2UNet, edm2_config
from nnx_backbones.embeddings import LabelEmbedder, TimestepEmbedder, sinusoidal_embedding
from nnx_backbones.errors import (
    BackboneError,
    LabelError,
    ShapeError,
    WeightsError,
    WeightsNotFoundError,
)
from nnx_backbones.lightning_dit import LightningDiT
from nnx_backbones.mlp import MLP
from nnx_backbones.rae import RAE, RAEDecoderConfig, estimate_latent_stats
from nnx_backbones.sd_vae import AutoencoderKL, LatentScaling, VAEConfig
from nnx_backbones.video_dit import VideoDiT, VideoKVCache

__version__ = "0.3.0"

__all__ = [
    "MLP",
    "RAE",
    "AutoencoderKL",
    "Backbone",
    "BackboneError",
    "DINOv2",
    "DINOv2Config",
    "DINOv2Output",
    "DiT",
    "EDM2Config",
    "EDM2UNet",
    "LabelEmbedder",
    "LabelError",
    "LatentScaling",
    "LightningDDT",
    "LightningDiT",
    "RAEDecoderConfig",
    "ShapeError",
    "TimestepEmbedder",
    "VAEConfig",
    "VideoDiT",
    "VideoKVCache",
    "WeightsError",
    "WeightsNotFoundError",
    "dinov2_config",
    "dit_config",
    "edm2_config",
    "estimate_latent_stats",
    "sinusoidal_embedding",
]
