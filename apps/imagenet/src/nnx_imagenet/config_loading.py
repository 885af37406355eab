"""Load `--config=NAME_OR_PATH[:preset]`, apply `--config.a.b=value` overrides, with clear errors.

NAME is a config shipped in `nnx_imagenet/configs/` (`sit`, `dit`, `digits`, ...; `demo` is an alias
of `digits`); anything ending in `.py` is a path to your own config file. Each file defines
`get_config(arg: str | None) -> ConfigDict`; the preset after the colon is passed as `arg`.

Override keys are checked against the loaded config before absl's `config_flags` applies them, so a
typo fails with the closest valid names (difflib) instead of a traceback, and a value that does
not parse as the field's type names the field, the type and the value.
"""

import ast
import difflib
import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from nnx_imagenet.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
ALIASES = {"demo": "digits"}


def available_configs() -> list[str]:
    """Names of the shipped configs (files in `nnx_imagenet/configs/` defining `get_config`)."""
    return sorted(
        p.stem
        for p in CONFIG_DIR.glob("*.py")
        if not p.name.startswith("_") and "def get_config" in p.read_text()
    )


def resolve_config(spec: str) -> tuple[Path, str | None]:
    """`NAME_OR_PATH[:preset]` → (config file path, preset or None)."""
    path_part, _, preset = spec.partition(":")
    preset = preset or None
    if path_part.endswith(".py") or os.sep in path_part:
        path = Path(path_part).expanduser()
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist (from --config={spec!r}).")
        return path.resolve(), preset
    name = ALIASES.get(path_part, path_part)
    path = CONFIG_DIR / f"{name}.py"
    if not path.is_file() or name not in available_configs():
        close = difflib.get_close_matches(path_part, available_configs() + list(ALIASES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"Unknown config {path_part!r}.{hint} Shipped configs: "
            f"{', '.join(available_configs())} (alias: demo = digits); or pass a path to a .py "
            f"file defining get_config(arg)."
        )
    return path, preset


def _import_config_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_nnx_imagenet_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} does not define get_config(arg).")
    return module


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf key of a (nested) config as dotted paths, e.g. `model.hidden_size`."""
    keys = []
    for k, v in config.items():
        path = f"{prefix}{k}"
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(flat_keys(v, path + "."))
        else:
            keys.append(path)
    return keys


def closest_keys(config: ml_collections.ConfigDict, key: str, n: int = 3) -> list[str]:
    """The `n` valid dotted keys closest to `key` (whole path and last component compared)."""
    keys = flat_keys(config)
    close = difflib.get_close_matches(key, keys, n=n, cutoff=0.5)
    last = key.rsplit(".", 1)[-1]
    by_leaf = [
        k for k in keys if difflib.get_close_matches(last, [k.rsplit(".", 1)[-1]], cutoff=0.75)
    ]
    return list(dict.fromkeys(close + by_leaf))[:n]


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            close = closest_keys(config, key)
            hint = f" Closest valid keys: {', '.join(close)}." if close else ""
            raise ConfigError(f"Unknown config key {key!r}.{hint}")
        node = node[part]
    return node


def parse_value(key: str, text: str, current: Any) -> Any:
    """Parse the override string `text` as the type of the current value of `key`."""
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"{key!r} is a group, not a value; override one of its fields.")
    try:
        if isinstance(current, bool):
            low = text.lower()
            if low not in ("true", "false", "1", "0"):
                raise ValueError
            return low in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        if current is None:
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
        value = ast.literal_eval(text)
        if isinstance(current, tuple | list):
            if not isinstance(value, tuple | list):
                value = (value,)
            return type(current)(value)
        return value
    except (ValueError, SyntaxError):
        raise ConfigError(
            f"Config key {key!r} holds a {type(current).__name__} (currently {current!r}); "
            f"cannot parse {text!r} as one."
        ) from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Apply `a.b=value` strings in place (unknown keys / bad types → `ConfigError`)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"Override {item!r} must look like key.path=value.")
        current = _get(config, key)
        value = parse_value(key, text, current)
        parent, _, leaf = key.rpartition(".")
        node = _get(config, parent) if parent else config
        try:
            node[leaf] = value
        except TypeError as e:
            raise ConfigError(f"Cannot set {key!r} to {value!r}: {e}") from None


def config_overrides_in_argv(argv: Sequence[str]) -> list[str]:
    """`--config.a.b=v` / `--config.a.b v` flags in `argv` → `["a.b=v", ...]`."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            body = arg[len("--config.") :]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise ConfigError(f"Flag {arg} has no value.")
                body, i = f"{body}={argv[i + 1]}", i + 1
            out.append(body)
        i += 1
    return out


def absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Make local `workdir` / `checkpoint.dir` / `interface.teacher_workdir` absolute (orbax
    refuses relative paths); URLs such as gs://... are kept as they are."""
    places = [(config, "workdir"), (config.checkpoint, "dir")]
    if "teacher_workdir" in config.interface:
        places.append((config.interface, "teacher_workdir"))
    for section, key in places:
        value = section[key]
        if value and "://" not in value:
            section[key] = os.path.abspath(os.path.expanduser(value))
    return config


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Load a config by name or path with its preset, apply overrides and validate it."""
    path, preset = resolve_config(spec)
    config = _import_config_module(path).get_config(preset)
    apply_overrides(config, overrides)
    from nnx_imagenet.configs.common import validate

    return absolute_paths(validate(config))
