"""Shared load / save steps of the converters: a checkpoint (file or dict) through a mapping."""

import os
from collections.abc import Mapping

import numpy as np
from flax import nnx

from nnx_backbones.weights.assign import StateMapping, assign_state, export_state
from nnx_backbones.weights.io import read_state_dict, write_state_dict


def load_mapped(
    model: nnx.Module,
    source: str | os.PathLike | Mapping[str, np.ndarray],
    mapping: StateMapping,
    *,
    key: str | None = None,
) -> nnx.Module:
    """Read `source` (a `.safetensors`/`.npz`/`.pt` path or a flat dict) and `assign_state` it
    into `model` through `mapping` (strict, all-or-nothing); returns `model`."""
    if isinstance(source, Mapping):
        tensors, name = source, "checkpoint"
    else:
        tensors, name = read_state_dict(source, key=key), str(source)
    assign_state(model, tensors, mapping, source=name)
    return model


def save_mapped(model: nnx.Module, mapping: StateMapping, path: str | os.PathLike) -> None:
    """Write `export_state(model, mapping)` to `.safetensors`, `.npz` or `.pt`."""
    write_state_dict(path, export_state(model, mapping))
