"""Checks of the CLI's flags and of what a command needs (paths, checkpoints), before jax.

Each raises `UsageError` (a flag) or `DataError` / `ConfigError` naming the flag or field, the
value found and what to pass instead. Nothing here imports jax, orbax or grain.
"""

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

import ml_collections

from nnx_imagenet import cli_help
from nnx_imagenet.config_loading import checkpoint_dir
from nnx_imagenet.errors import ConfigError, DataError, UsageError
from nnx_train.config import ema_decays
from nnx_train.errors import ConfigError as TrainConfigError

CONFIG_ERRORS = (ConfigError, TrainConfigError)


def check_flags_belong(command: str, flag_values: Any) -> None:
    """Reject flags of another command (silently ignoring them would be a wrong answer)."""
    allowed = set(cli_help.COMMAND_FLAGS[command]) | set(cli_help.COMMON_FLAGS)
    for name in cli_help.ALL_FLAGS:
        if flag_values[name].present and name not in allowed:
            owners = [c for c, fl in cli_help.COMMAND_FLAGS.items() if name in fl]
            raise UsageError(
                f"--{name} is not a flag of `{command}` (it belongs to {', '.join(owners)}). "
                f"Flags of {command}: "
                f"{', '.join('--' + f for f in cli_help.COMMAND_FLAGS[command])}."
            )


def _local(path: str) -> bool:
    return bool(path) and "://" not in path


def _existing(path: str, what: str, flag: str, *, is_dir: bool | None = None) -> None:
    if not _local(path):
        return
    p = Path(path).expanduser()
    if not p.exists() or (is_dir is True and not p.is_dir()) or (is_dir is False and p.is_dir()):
        kind = {True: "folder", False: "file", None: "path"}[is_dir]
        raise DataError(f"No such {kind} {path} ({what}; from {flag}).")


def check_prepare_flags(f: Any) -> None:
    """`prepare`: --what, --src (and its split folder), --out, sizes, --vae_path."""
    if f.what not in ("latents", "ref_stats"):
        raise UsageError(
            f"--what must be 'latents' or 'ref_stats'; got {f.what!r}."
            + cli_help.did_you_mean(f.what, ["latents", "ref_stats"])
        )
    if not f.src:
        raise UsageError("prepare needs --src=DATASET_ROOT (holding <split>/<synset>/*.JPEG).")
    _existing(f.src, "the dataset root holding <split>/<synset>/*.JPEG", "--src", is_dir=True)
    _existing(os.path.join(f.src, f.split), f"the split folder under --src={f.src}", "--split",
              is_dir=True)  # fmt: skip
    if f.what == "latents" and not f.out:
        raise UsageError("prepare --what=latents needs --out=FOLDER for the shards.")
    if f.what == "ref_stats" and not f.out.endswith(".npz"):
        raise UsageError(f"prepare --what=ref_stats needs --out=FILE.npz; got {f.out!r}.")
    for name, low in (("resolution", 8), ("batch_size", 1), ("shard_size", 1)):
        if getattr(f, name) < low:
            raise UsageError(f"--{name} must be ≥ {low}; got {getattr(f, name)}.")
    if f.vae_path:
        _existing(f.vae_path, "the SD-VAE weights file", "--vae_path", is_dir=False)


def apply_sampling_flags(command: str, f: Any, config: ml_collections.ConfigDict) -> None:
    """`sample` / `eval`: --guidance, --sampler, --steps replace the config's sample.* fields."""
    if command not in ("sample", "eval"):
        return
    if f.guidance is not None:
        if not (math.isfinite(f.guidance) and f.guidance >= 0):
            raise UsageError(
                f"--guidance must be a finite classifier-free guidance scale w ≥ 0 (0 = off, "
                f"1 = conditional only, DiT/SiT use 1.5–4); got {f.guidance}."
            )
        if f.guidance and not config.data.num_classes:
            raise UsageError(
                f"--guidance={f.guidance} needs a class-conditional run, but data.num_classes = "
                f"0; use --guidance=0."
            )
        config.sample.guidance = float(f.guidance)
    if f.sampler is not None:
        from nnx_imagenet.plugin_names import register_plugins
        from nnx_train import registry
        from nnx_train.errors import RegistryError

        register_plugins()
        try:
            registry.check_name("sampler", f.sampler)
        except RegistryError as e:
            raise UsageError(f"--sampler={f.sampler}: {e}") from None
        config.sample.sampler.name = f.sampler
    if f.steps is not None:
        if f.steps < 1:
            raise UsageError(f"--steps (sampler steps) must be ≥ 1; got {f.steps}.")
        config.sample.sampler.num_steps = int(f.steps)


def parse_classes(text: str, num_classes: int) -> list[int]:
    """`--classes=3,5,7` → [3, 5, 7], each in [0, num_classes)."""
    if not text:
        return []
    if not num_classes:
        raise UsageError(f"--classes={text} needs a class-conditional run (data.num_classes = 0).")
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise UsageError(
            f"--classes must be comma-separated integers (e.g. --classes=1,7,207); got {text!r}."
        ) from None
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad or not classes:
        raise UsageError(
            f"--classes={text}: labels must lie in [0, {num_classes}) (data.num_classes = "
            f"{num_classes}); out of range: {bad or 'none given'}."
        )
    return classes


def local_steps(directory: str) -> list[int] | None:
    """Checkpoint steps found in a local directory (None for remote paths)."""
    if not _local(directory):
        return None
    p = Path(directory).expanduser()
    if not p.is_dir():
        return []
    return sorted(int(d.name) for d in p.iterdir() if d.name.isdigit() and d.is_dir())


def check_run(command: str, f: Any, config: ml_collections.ConfigDict) -> None:
    """What `train` / `sample` / `eval` need besides a valid config."""
    if _local(config.workdir) and Path(config.workdir).expanduser().is_file():
        raise UsageError(f"--workdir={config.workdir} is a file; a run directory is expected.")
    if command == "train":
        _check_train_data(config)
        return
    for name in ("num_samples", "batch_size"):
        if getattr(f, name) < 1:
            raise UsageError(f"--{name} must be ≥ 1; got {getattr(f, name)}.")
    if f.step < -1:
        raise UsageError(f"--step must be a checkpoint step ≥ 0 (or -1 = newest); got {f.step}.")
    ema = f.ema if f.ema is not None else (config.sample.ema if command == "sample" else
                                           config.eval.ema)  # fmt: skip
    _check_ema(ema, config, "--ema" if f.ema is not None else f"{command}.ema")
    parse_classes(f.classes, config.data.num_classes)
    directory = checkpoint_dir(config)
    steps = local_steps(directory)
    if steps is not None and not steps:
        raise DataError(
            f"No checkpoint under {directory}; train first (nnx-imagenet train --config=... "
            f"--workdir={config.workdir}) or pass the run's --workdir."
        )
    if steps and f.step >= 0 and f.step not in steps:
        raise UsageError(
            f"--step={f.step}: no checkpoint of that step under {directory}; it has steps "
            f"{', '.join(map(str, steps))} (omit --step for the newest readable one)."
        )
    if command == "eval":
        _check_eval(f)


def _check_ema(ema: str, config: ml_collections.ConfigDict, where: str) -> None:
    if ema == "":
        return
    decays = ema_decays(config)  # ema.decays and every trees.<name>.ema.decays
    try:
        decay = float(ema)
    except ValueError:
        raise UsageError(
            f"{where} = {ema!r} is not an EMA decay; use one of ema.decays "
            f"{decays} or '' for the raw weights."
        ) from None
    if not any(math.isclose(decay, d) for d in decays):
        raise UsageError(
            f"{where} = {ema!r} is not one of the run's EMAs (ema.decays = "
            f"{decays}); use one of them or --ema='' for the raw weights."
        )


def _check_eval(f: Any) -> None:
    if not f.ref:
        raise UsageError(
            "eval needs --ref=REF.npz (ADM's VIRTUAL_imagenet256_labeled.npz, or make one with "
            "`nnx-imagenet prepare --what=ref_stats`)."
        )
    _existing(f.ref, "reference statistics .npz", "--ref", is_dir=False)
    if f.inception_size < 75:
        raise UsageError(
            f"--inception_size must be ≥ 75 (299 for real FID); got {f.inception_size}."
        )
    if f.inception_path:
        _existing(f.inception_path, "FID Inception weights", "--inception_path", is_dir=False)
        if f.inception_path.endswith((".pth", ".pt")) and not importlib.util.find_spec("torch"):
            raise UsageError(
                f"--inception_path={f.inception_path} is a torch pickle, which needs torch to "
                f"read: `pip install torch --index-url https://download.pytorch.org/whl/cpu` "
                f"(once; converting it to .safetensors with nnx_eval.inception_weights."
                f"save_inception_weights removes the need)."
            )


def _check_train_data(config: ml_collections.ConfigDict) -> None:
    name, kw = config.data.name, config.data.kwargs
    if name in ("image_folder", "latents", "video"):
        if not kw.root:
            raise DataError(
                f"data.kwargs.root is empty for data.name={name!r}; pass "
                f"--config.data.kwargs.root=/path/to/data."
            )
        what = {
            "image_folder": "an ImageFolder tree <root>/<split>/<class>/*",
            "video": "a video tree <root>/<split>/<class>/<id>.npy|.gif",
            "latents": "latent shards written by `nnx-imagenet prepare --what=latents`",
        }[name]
        _existing(kw.root, what, "--config.data.kwargs.root", is_dir=True)
        if name in ("image_folder", "video"):
            _existing(os.path.join(kw.root, kw.split), f"the split folder {kw.split!r} of {what}",
                      "--config.data.kwargs.split", is_dir=True)  # fmt: skip
        else:
            _existing(os.path.join(kw.root, "manifest.json"), what, "--config.data.kwargs.root",
                      is_dir=False)  # fmt: skip
    if name == "tfds" and not importlib.util.find_spec("tensorflow_datasets"):
        raise DataError(
            "data.name = 'tfds' needs tensorflow-datasets: `uv sync --all-packages --extra tf`."
        )
