"""Load `--config=NAME_OR_PATH[:preset]`, apply `--config.a.b=value` overrides, with clear errors.

NAME is a config shipped in `nnx_imagenet/configs/` (`sit`, `dit`, `digits`, ...; `demo` is an alias
of `digits`); anything ending in `.py` is a path to your own config file. Each file defines
`get_config(arg: str | None) -> ConfigDict`; the preset after the colon is passed as `arg`.

Overrides are parsed here (not by absl's `config_flags`): a key is checked against the loaded
config, so a typo fails with the closest valid names (difflib); a value that does not parse as
the field's type names the field, the type and the value; `data.name=NAME` is applied first and
switches `data.kwargs` to that dataset's options. Nothing here imports jax.
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
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ConfigError(
            f"Config file {path} failed to load: {type(e).__name__}: {e}. Fix the file (run "
            f"`python {path}` to see where)."
        ) from e
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
            if key.startswith("data.kwargs.") and "data" in config:
                hint += _dataset_hint(config.data.get("name", ""))
            raise ConfigError(f"Unknown config key {key!r}.{hint}")
        node = node[part]
    return node


def _dataset_hint(name: str) -> str:
    if name == "synthetic":
        return (
            " Smoke presets train on synthetic data; to train the smoke-size model on real data "
            "add --config.data.name=latents (or image_folder, ...), which switches data.kwargs."
        )
    return (
        f" data.kwargs holds the options of data.name={name!r}; another dataset's options come "
        f"with --config.data.name=NAME."
    )


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


def switch_dataset(config: ml_collections.ConfigDict, name: str) -> None:
    """Set `data.name = name` and give `data.kwargs` that dataset's options: its defaults, with
    the values of options the previous dataset shared (e.g. `root`, `flip`) kept."""
    from nnx_imagenet.configs.common import DATA_KWARGS

    if name not in DATA_KWARGS:
        close = difflib.get_close_matches(name, DATA_KWARGS, n=2)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"data.name = {name!r} is not one of {', '.join(DATA_KWARGS)}.{hint}")
    if name == config.data.name:
        return
    old = config.data.kwargs.to_dict()
    config.data.name = name
    config.data.kwargs = ml_collections.ConfigDict(
        {k: old.get(k, v) for k, v in DATA_KWARGS[name].items()}
    )


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Apply `a.b=value` strings in place (unknown keys / bad types → `ConfigError`).

    `data.name=NAME` is applied first and switches `data.kwargs` to that dataset's options
    (`switch_dataset`), so `data.name=image_folder data.kwargs.root=/data` works in any order.
    """
    overrides = list(overrides)
    for item in overrides:
        key, sep, text = item.partition("=")
        if key == "data.name" and sep:
            switch_dataset(config, text)
    for item in overrides:
        if item.partition("=")[0] == "data.name":
            continue
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


def checkpoint_dir(config: ml_collections.ConfigDict) -> str:
    """`checkpoint.dir`, or `{workdir}/checkpoints` as the trainer uses."""
    from nnx_train import fileio

    return config.checkpoint.dir or fileio.join(config.workdir, "checkpoints")


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


def load_config(
    spec: str, overrides: Iterable[str] = (), *, check_constructors: bool = True
) -> ml_collections.ConfigDict:
    """Load a config by name or path with its preset, apply overrides and validate it
    (`check_constructors=False`: without importing the model / interface / sampler, see
    `configs.common.validate`)."""
    path, preset = resolve_config(spec)
    config = _import_config_module(path).get_config(preset)
    apply_overrides(config, overrides)
    from nnx_imagenet.configs.common import validate

    return absolute_paths(validate(config, check_constructors=check_constructors))


def config_presets(name: str) -> tuple[list[str], str | None]:
    """(presets, default preset) of the shipped config `name` (imports no jax)."""
    from nnx_imagenet.configs.common import list_presets

    return list_presets(_import_config_module(resolve_config(name)[0]).get_config)
