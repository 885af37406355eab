"""Strict assignment of a flat checkpoint `{key: array}` into an NNX module, and its inverse.

A *mapping* says where every checkpoint key goes:

    mapping = {
        "x_embedder.proj.weight": ("x_embedder.kernel", CONV2D),   # [O, I, kh, kw] → [kh, kw, I, O]
        "blocks.0.attn.qkv.weight": ("blocks.0.attn.qkv.kernel", LINEAR),  # [out, in] → [in, out]
        "blocks.0.attn.qkv.bias": "blocks.0.attn.qkv.bias",        # identity
        "pos_embed": Buffer(fixed_pos_embed),                       # checked on import, written
        "num_batches_tracked": IGNORE,                              # accepted and dropped
    }

NNX paths are the dotted attribute paths of the module's variables (list indices as numbers:
`blocks.0.attn.qkv.kernel`), as listed by `variable_paths(module)`.

`assign_state` is all-or-nothing: it collects every unknown checkpoint key, every missing key
(mapping entries absent from the checkpoint, and module variables no entry fills), every shape
mismatch (expected vs found) and every entry pointing to a variable that does not exist, and
raises one `WeightsError` listing all of them before anything is written. `export_state` is the
inverse, so `assign_state(m, export_state(m, mapping), mapping)` is an exact round trip.

Merged or split tensors (e.g. a checkpoint with separate q, k, v for a merged qkv layer) are
handled by preprocessing the flat dict before assignment; a mapping entry is one key ↔ one
variable.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flax import nnx

from nnx_backbones.errors import WeightsError


@dataclass(frozen=True)
class Transform:
    """A layout change between checkpoint and NNX: `to_nnx(ckpt_array)`, `to_ckpt(nnx_array)`."""

    name: str
    to_nnx: Callable[[np.ndarray], np.ndarray]
    to_ckpt: Callable[[np.ndarray], np.ndarray]


IDENTITY = Transform("identity", lambda a: a, lambda a: a)
# PyTorch nn.Linear weight [out, in] ↔ nnx.Linear kernel [in, out].
LINEAR = Transform("linear", lambda a: a.T, lambda a: a.T)
# PyTorch Conv2d weight [out, in, kh, kw] ↔ nnx.Conv kernel [kh, kw, in, out].
CONV2D = Transform("conv2d", lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))


@dataclass(frozen=True)
class Buffer:
    """A checkpoint entry that is not a module variable (e.g. a fixed position embedding).

    On import its shape must equal `value`'s (and, with `check_values`, its values must match to
    `atol`); on export `value` is written.
    """

    value: np.ndarray
    check_values: bool = False
    atol: float = 1e-5


@dataclass(frozen=True)
class Ignore:
    """A checkpoint entry that is accepted on import and not written on export."""


IGNORE = Ignore()

Entry = str | tuple[str, Transform] | Buffer | Ignore
StateMapping = Mapping[str, Entry]


def _path_str(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def variables(module: nnx.Module, filter: Any = nnx.Param) -> dict[str, nnx.Variable]:
    """The module's variables matching `filter`, keyed by dotted path (`blocks.0.attn.kernel`)."""
    predicate = nnx.filterlib.to_predicate(filter)
    found = {}
    for path, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Variable) and predicate(path, node):
            found[_path_str(path)] = node
    return found


def variable_paths(module: nnx.Module, filter: Any = nnx.Param) -> dict[str, tuple[int, ...]]:
    """`{dotted path: shape}` of the module's variables matching `filter` (to write mappings)."""
    return {p: tuple(v.get_value().shape) for p, v in variables(module, filter).items()}


def _entry(entry: Entry) -> tuple[str, Transform] | Buffer | Ignore:
    if isinstance(entry, str):
        return entry, IDENTITY
    if isinstance(entry, (Buffer, Ignore)):
        return entry
    if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], Transform):
        return entry
    raise WeightsError(
        f"Bad mapping entry {entry!r}: expected an NNX path string, (path, Transform), Buffer "
        f"or IGNORE."
    )


def _fmt(items: list[str], limit: int = 50) -> str:
    shown = "\n    ".join(items[:limit])
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n    {shown}{more}"


def assign_state(
    module: nnx.Module,
    tensors: Mapping[str, np.ndarray],
    mapping: StateMapping,
    *,
    filter: Any = nnx.Param,
    source: str = "checkpoint",
) -> None:
    """Assign every checkpoint tensor to its module variable, in place, or raise and change nothing.

    Args:
      module: the NNX module to fill (its variables keep their dtypes; values are cast).
      tensors: flat `{checkpoint key: array}` (e.g. from `weights.io.read_state_dict`).
      mapping: `{checkpoint key: entry}` (see the module docstring).
      filter: which module variables must all be filled (default `nnx.Param`; add
        `nnx.BatchStat` for networks with batch-norm statistics).
      source: a name for the checkpoint used in error messages (e.g. its path).
    Raises:
      WeightsError: listing all unknown keys, missing keys, shape mismatches and mapping entries
        that point to variables the module does not have.
    """
    targets = variables(module, filter)
    all_vars = variables(module, nnx.Variable)
    unknown = sorted(k for k in tensors if k not in mapping)
    missing_keys, shape_errors, bad_paths = [], [], []
    filled: set[str] = set()
    updates: list[tuple[nnx.Variable, np.ndarray]] = []
    for key, raw in mapping.items():
        entry = _entry(raw)
        if isinstance(entry, Ignore):
            continue
        if key not in tensors:
            missing_keys.append(key)
            continue
        array = np.asarray(tensors[key])
        if isinstance(entry, Buffer):
            if array.shape != entry.value.shape:
                shape_errors.append(
                    f"{key}: expected {entry.value.shape} (buffer), found {array.shape}"
                )
            elif entry.check_values and not np.allclose(
                array.astype(np.float64), entry.value.astype(np.float64), atol=entry.atol
            ):
                err = np.max(np.abs(array.astype(np.float64) - entry.value.astype(np.float64)))
                shape_errors.append(
                    f"{key}: buffer values differ from the expected ones (max |Δ| = {err:.3g} "
                    f"> atol {entry.atol})"
                )
            continue
        path, transform = entry
        var = all_vars.get(path)
        if var is None:
            bad_paths.append(f"{key} → {path}")
            continue
        filled.add(path)
        value = transform.to_nnx(array)
        expected = tuple(var.get_value().shape)
        if tuple(value.shape) != expected:
            shape_errors.append(
                f"{key} → {path}: expected {expected} in the module "
                f"({transform.name} of checkpoint shape {array.shape}), found {tuple(value.shape)}"
            )
            continue
        updates.append((var, value))
    unfilled = sorted(p for p in targets if p not in filled)
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unknown key(s) in the {source}:{_fmt(unknown)}")
    if missing_keys:
        problems.append(
            f"{len(missing_keys)} key(s) missing from the {source}:{_fmt(missing_keys)}"
        )
    if unfilled:
        problems.append(
            f"{len(unfilled)} module variable(s) that no mapping entry fills:{_fmt(unfilled)}"
        )
    if shape_errors:
        problems.append(f"{len(shape_errors)} mis-shaped key(s):{_fmt(shape_errors)}")
    if bad_paths:
        problems.append(
            f"{len(bad_paths)} mapping entr(y/ies) pointing to no module variable:{_fmt(bad_paths)}"
        )
    if problems:
        raise WeightsError(
            f"Cannot load the {source} into {type(module).__name__}; nothing was assigned.\n"
            + "\n".join(problems)
            + "\nCheck that the model configuration (size, patch, classes, learned sigma) matches "
            "the checkpoint."
        )
    for var, value in updates:
        dtype = var.get_value().dtype
        var.set_value(np.asarray(value).astype(dtype))


def export_state(module: nnx.Module, mapping: StateMapping) -> dict[str, np.ndarray]:
    """The inverse of `assign_state`: `{checkpoint key: np.ndarray}` in the checkpoint layout.

    Ignored entries are skipped and buffers write their `value`. Raises `WeightsError` if an entry
    points to a variable the module does not have.
    """
    all_vars = variables(module, nnx.Variable)
    out: dict[str, np.ndarray] = {}
    bad = []
    for key, raw in mapping.items():
        entry = _entry(raw)
        if isinstance(entry, Ignore):
            continue
        if isinstance(entry, Buffer):
            out[key] = np.asarray(entry.value)
            continue
        path, transform = entry
        var = all_vars.get(path)
        if var is None:
            bad.append(f"{key} → {path}")
            continue
        out[key] = np.ascontiguousarray(transform.to_ckpt(np.asarray(var.get_value())))
    if bad:
        raise WeightsError(
            f"Cannot export {type(module).__name__}: {len(bad)} mapping entr(y/ies) point to no "
            f"module variable:{_fmt(bad)}"
        )
    return out
