"""Read and write flat state dicts `{key: np.ndarray}` in .safetensors, .npz and PyTorch files.

- `.safetensors` (every dtype, bf16 included) and `.npz` need nothing beyond the package deps.
- `.pt` / `.pth` / `.bin` (PyTorch pickles) need torch, imported only inside the functions that
  read or write them; without torch a `WeightsError` says how to install the CPU build or how to
  convert the file to safetensors elsewhere.

Training checkpoints often wrap the weights: `{"model": sd}`, `{"state_dict": sd}`,
`{"module": sd}` are unwrapped automatically; others (`{"ema": sd}`, `{"model_ema": sd}`) only
when asked with `key=` (e.g. `read_state_dict(path, key="ema")`), so the EMA weights are never
taken by accident.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from jax import numpy as jnp

from nnx_backbones.errors import WeightsError, WeightsNotFoundError

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SUFFIXES = (".safetensors", ".npz", *TORCH_SUFFIXES)
# .npz has no bfloat16: such arrays are stored as uint16 bits, their names listed under this key.
NPZ_BF16_KEY = "__bfloat16_keys__"
# Wrappers unwrapped without being asked, in this order of preference.
AUTO_UNWRAP = ("state_dict", "model", "module")

INSTALL_TORCH = (
    "Install the CPU build of torch with `python3 -m pip --python .venv/bin/python install torch "
    "--index-url https://download.pytorch.org/whl/cpu`, or convert the file to .safetensors on a "
    "machine that has torch (`safetensors.torch.save_file(torch.load(path), 'out.safetensors')`)."
)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise WeightsError(
            f"Unsupported weights file {str(path)!r}: expected one of {', '.join(SUFFIXES)}; got "
            f"suffix {suffix!r}. Rename the file if its format is one of these."
        )
    return suffix


def _import_torch(path: Path) -> Any:
    try:
        import torch
    except ImportError as e:
        raise WeightsError(
            f"Reading or writing {str(path)!r} needs PyTorch. {INSTALL_TORCH}"
        ) from e
    return torch


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    """A torch tensor → NumPy array of the same dtype (bf16 kept, via the JAX bfloat16 dtype)."""
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.dtype(jnp.bfloat16))
    return tensor.numpy()


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → dotted keys (PyTorch state dicts are usually flat already)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _unwrap(obj: Any, key: str | None, path: Path) -> Mapping:
    """Pick the state dict out of a checkpoint object (see the module docstring)."""
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state dict. Save "
            f"`model.state_dict()` rather than the model object."
        )
    if key is not None:
        if key not in obj:
            raise WeightsError(
                f"{str(path)!r} has no entry {key!r}; its top-level keys are "
                f"{sorted(map(str, obj))[:20]}. Pass one of them as key=, or key=None."
            )
        return _unwrap(obj[key], None, path) if not _is_flat(obj[key]) else obj[key]
    if _is_flat(obj):
        return obj
    for wrapper in AUTO_UNWRAP:
        if wrapper in obj and isinstance(obj[wrapper], Mapping):
            return _unwrap(obj[wrapper], None, path)
    return obj


def _is_flat(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(not isinstance(v, Mapping) for v in obj.values())


def read_state_dict(
    path: str | os.PathLike, *, key: str | None = None, strip_prefix: str | None = None
) -> dict[str, np.ndarray]:
    """Read a flat `{name: array}` state dict from a weights file.

    Args:
      path: a `.safetensors`, `.npz`, or PyTorch `.pt`/`.pth`/`.bin`/`.ckpt` file.
      key: take this top-level entry of the checkpoint (e.g. `"ema"`); by default a
        `state_dict`/`model`/`module` wrapper is unwrapped and anything else is read as is.
      strip_prefix: remove this prefix from every key that has it (e.g. `"module."` from DDP).
    Returns:
      `{name: np.ndarray}` with the file's dtypes (bf16 as JAX's `bfloat16` NumPy dtype).
      Non-array entries of a PyTorch pickle (ints, strings, optimizer step) are dropped.
    Raises:
      WeightsNotFoundError: the file does not exist.
      WeightsError: unsupported suffix, unreadable file, a missing `key`, or torch missing.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"No weights file at {str(path)!r}. Check the path, or download the checkpoint first."
        )
    try:
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            tree: Mapping = load_file(str(path))
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                tree = {name: data[name] for name in data.files if name != NPZ_BF16_KEY}
                bf16 = [str(n) for n in data[NPZ_BF16_KEY]] if NPZ_BF16_KEY in data.files else []
            for name in bf16:
                tree[name] = tree[name].view(np.dtype(jnp.bfloat16))
        else:
            torch = _import_torch(path)
            tree = torch.load(str(path), map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as e:  # corrupted or foreign file: say which one
        raise WeightsError(f"Could not read {str(path)!r} as {suffix}: {e}") from e
    flat = _flatten(_unwrap(tree, key, path))
    out: dict[str, np.ndarray] = {}
    for name, value in flat.items():
        if hasattr(value, "detach"):  # torch.Tensor
            value = _torch_to_numpy(value)
        elif not isinstance(value, np.ndarray):
            continue
        if strip_prefix and name.startswith(strip_prefix):
            name = name[len(strip_prefix) :]
        out[name] = value
    if not out:
        raise WeightsError(
            f"{str(path)!r} holds no arrays (top-level keys: {sorted(map(str, tree))[:20]}). "
            f"Pass key= to pick the entry that holds the weights."
        )
    return out


def write_state_dict(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Write a flat `{name: array}` state dict; the format follows the suffix of `path`.

    `.safetensors` and `.npz` always work; `.pt`/`.pth`/`.bin` need torch (see module docstring).
    Arrays are written with their dtype (bf16 included) and made contiguous.
    """
    path = Path(path)
    suffix = _suffix(path)
    arrays = {name: np.ascontiguousarray(np.asarray(value)) for name, value in tensors.items()}
    bad = [name for name in arrays if not isinstance(name, str) or not name]
    if bad:
        raise WeightsError(f"State-dict keys must be non-empty strings; got {bad[:10]}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(path))
    elif suffix == ".npz":
        bf16 = [n for n, v in arrays.items() if v.dtype == np.dtype(jnp.bfloat16)]
        stored = {n: v.view(np.uint16) if n in bf16 else v for n, v in arrays.items()}
        if bf16:
            stored[NPZ_BF16_KEY] = np.array(bf16)
        np.savez(path, **stored)
    else:
        torch = _import_torch(path)
        out = {}
        for name, value in arrays.items():
            if value.dtype == np.dtype(jnp.bfloat16):
                out[name] = torch.from_numpy(value.view(np.int16).copy()).view(torch.bfloat16)
            else:
                out[name] = torch.from_numpy(value.copy())
        torch.save(out, str(path))
