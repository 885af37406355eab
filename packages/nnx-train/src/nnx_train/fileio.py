"""Tiny file helpers for local paths and gs:// URLs (through etils.epath, which orbax ships)."""

import importlib
import os
from typing import Any


def path(p: str) -> Any:
    """An `etils.epath.Path` for gs:// (and other URLs); a `pathlib`-like path either way."""
    if "://" in p:
        # etils is a dependency of orbax-checkpoint; imported lazily, only for remote paths.
        return importlib.import_module("etils.epath").Path(p)
    import pathlib

    return pathlib.Path(p)


def makedirs(p: str) -> None:
    path(p).mkdir(parents=True, exist_ok=True)


def join(*parts: str) -> str:
    if "://" in parts[0]:
        return "/".join(s.rstrip("/") for s in parts)
    return os.path.join(*parts)


def absolute(p: str) -> str:
    """A local path made absolute (orbax refuses relative checkpoint paths); URLs unchanged."""
    return p if "://" in p or not p else os.path.abspath(p)
