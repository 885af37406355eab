"""Weights in and out: file readers/writers (`io`), strict assignment into NNX modules (`assign`),
and the registry of public weights with a verified download cache (`registry`).

Import from the submodules, e.g. `from nnx_backbones.weights.registry import fetch`.
"""
