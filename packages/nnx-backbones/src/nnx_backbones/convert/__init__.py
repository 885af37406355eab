"""Converters between public checkpoint layouts and this package's networks.

`convert.dit`: the original PyTorch DiT release (facebookresearch/DiT) ↔ `nnx_backbones.dit.DiT`.
Each converter is a `weights.assign` mapping plus load/save helpers; import from the submodule.
"""
