"""Networks for diffusion and flow models under one backbone contract (see `contract`)."""

from nnx_backbones.contract import Backbone
from nnx_backbones.embeddings import LabelEmbedder, TimestepEmbedder, sinusoidal_embedding
from nnx_backbones.errors import BackboneError, ShapeError, WeightsError, WeightsNotFoundError
from nnx_backbones.mlp import MLP

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "Backbone",
    "BackboneError",
    "LabelEmbedder",
    "ShapeError",
    "TimestepEmbedder",
    "WeightsError",
    "WeightsNotFoundError",
    "sinusoidal_embedding",
]
