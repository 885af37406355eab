"""The training config: `default_config()` (every field, with its default) and `validate_config`.

Only nnx-train and the app read `ConfigDict`s. The schema is `default_config()` itself: a field
that is not in it is rejected (with the closest valid names), and a value must have the type of its
default (ints are accepted where floats are expected, lists where tuples are). Three sections are
open: `model`, `interface` and `sample.sampler` hold a `name` plus the keyword arguments of the
registered constructor of that name (checked against its signature); `data.kwargs` is passed to
the app's data builder untouched. The README documents each field.
"""

import difflib
import inspect
import json
from collections.abc import Mapping
from typing import Any

import ml_collections

from nnx_train import registry
from nnx_train.errors import ConfigError, RegistryError

OPEN_SECTIONS = {"model": "model", "interface": "interface", "sample.sampler": "sampler"}
FREE_SECTIONS = ("data.kwargs",)
STRATEGIES = ("replicate", "fsdp")
OPTIMIZERS = ("adamw", "adam", "lion", "sgd")
SCHEDULES = ("constant", "cosine", "inverse_sqrt")
WANDB_MODES = ("online", "offline", "disabled")


def default_config() -> ml_collections.ConfigDict:
    """Every trainer field with its default (a tiny MLP on 2-D data that trains on CPU)."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # model init, training noise/time draws
    c.workdir = "/tmp/nnx_train"  # metrics.jsonl, samples/, checkpoints/ (local or gs://)
    c.total_steps = 1000  # optimizer steps to train for

    c.data = ml_collections.ConfigDict()
    c.data.global_batch_size = 64  # examples per optimizer step, over all processes
    c.data.shape = (2,)  # one example, channels-last: (H, W, C) or (D,)
    c.data.num_classes = 0  # 0 = unconditional; else labels y in [0, num_classes)
    c.data.name = ""  # the app's dataset name (nnx-train does not read it)
    c.data.kwargs = ml_collections.ConfigDict()  # free-form, passed to the app's data builder

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"  # registry name; the other keys are constructor kwargs
    c.model.data_shape = (2,)
    c.model.width = 64
    c.model.depth = 2

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "sit"  # registry name; the other keys are constructor kwargs
    c.interface.train_time_dist_type = "uniform"
    c.interface.t_shift_base = None  # SiT resolution shift off (2-D data)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | adam | lion | sgd
    c.optimizer.lr = 1e-4  # peak learning rate
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.0  # decoupled (adamw, lion)
    c.optimizer.grad_clip = 1.0  # global-norm clipping threshold; 0 = off
    c.optimizer.schedule = "constant"  # constant | cosine | inverse_sqrt (after warm-up)
    c.optimizer.warmup_steps = 0  # linear warm-up from 0
    c.optimizer.decay_steps = 0  # cosine: length of the decay; 0 = total_steps − warmup_steps
    c.optimizer.min_lr_ratio = 0.0  # cosine: final lr / peak lr
    c.optimizer.ref_steps = 0  # inverse_sqrt: lr·min(1, sqrt(ref/t)); 0 = warmup_steps (or 1)

    c.train = ml_collections.ConfigDict()
    c.train.grad_accum = 1  # micro-batches per step (global_batch_size must divide)
    c.train.max_nonfinite = 10  # K: this many non-finite steps in a row stops the run

    c.ema = ml_collections.ConfigDict()
    c.ema.decays = (0.999,)  # one EMA per decay; () = none
    c.ema.warmup = True  # β_t = min(β, (1 + t) / (10 + t))

    c.posthoc_ema = ml_collections.ConfigDict()
    c.posthoc_ema.stds = ()  # σ_rel of tracked power-function EMAs (EDM2: (0.05, 0.10))
    c.posthoc_ema.snapshot_every = 0  # steps between snapshots; 0 = no snapshots

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1 = all remaining devices
    c.mesh.fsdp = 1  # parameters, gradients and optimizer state split (the batch too)
    c.mesh.tensor = 1  # Megatron tensor parallelism: heads / hidden units split
    c.mesh.context = 1  # tokens split; needs model.attn_implementation "ring" or "ulysses"

    c.sharding = ml_collections.ConfigDict()
    c.sharding.strategy = "fsdp"  # replicate | fsdp
    c.sharding.min_size = 2**12  # under fsdp, arrays with fewer elements stay replicated
    c.sharding.rules = ()  # ((regex, spec), ...): spec a tuple of mesh axis names / None

    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = False  # call jax.distributed.initialize
    c.distributed.coordinator_address = ""  # "host:port"; "" = auto-detect (TPU, SLURM, ...)
    c.distributed.num_processes = 0  # 0 = auto-detect
    c.distributed.process_id = -1  # -1 = auto-detect

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.dir = ""  # "" = {workdir}/checkpoints; local or gs://
    c.checkpoint.every_steps = 1000  # and at the last step; 0 = only on SIGTERM
    c.checkpoint.keep_last = 3  # keep the N newest
    c.checkpoint.keep_every = 0  # and every checkpoint whose step is a multiple of K; 0 = none
    c.checkpoint.async_save = True
    c.checkpoint.resume = True  # restore the newest usable checkpoint if there is one

    c.log = ml_collections.ConfigDict()
    c.log.every_steps = 50  # host sync + metrics write interval
    c.log.progress_bar = True
    c.log.peak_flops = 0.0  # peak FLOP/s per device for MFU; 0 = detect from device kind
    c.log.wandb_mode = "disabled"  # online | offline | disabled (WANDB_MODE env overrides)
    c.log.wandb_project = "nnx-diffusion"
    c.log.wandb_name = ""  # run name; "" = wandb's default

    c.sample = ml_collections.ConfigDict()
    c.sample.every_steps = 0  # PNG sample grids; 0 = off
    c.sample.num_images = 16
    c.sample.ema = ""  # params to sample with: "" = raw, or an EMA decay such as "0.999"
    c.sample.guidance = 0.0  # classifier-free guidance scale; 0 = none
    c.sample.sampler = ml_collections.ConfigDict()
    c.sample.sampler.name = "euler"  # registry name; the other keys are constructor kwargs

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 0  # run the eval callbacks given to train(); 0 = off
    c.eval.num_images = 1000  # images each eval callback generates
    c.eval.ema = ""  # as sample.ema
    return c


def validate_config(config: ml_collections.ConfigDict | Mapping[str, Any]) -> None:
    """Raise `ConfigError` on unknown keys (with close matches), wrong types or bad values."""
    cfg = _to_dict(config)
    schema = _to_dict(default_config())
    errors: list[str] = []
    _check_section(cfg, schema, "", errors)
    for path, kind in OPEN_SECTIONS.items():
        section = _get(cfg, path)
        if isinstance(section, dict):
            _check_open(section, kind, path, errors)
    if not errors:
        _check_values(cfg, errors)
    if errors:
        raise ConfigError("Invalid training config:\n  " + "\n  ".join(errors))


def constructor_kwargs(section: Mapping[str, Any]) -> dict[str, Any]:
    """An open section's kwargs (everything but `name`), lists → tuples, dtype names kept."""
    return {k: _tuplify(v) for k, v in _to_dict(section).items() if k != "name"}


def config_to_json(config: ml_collections.ConfigDict | Mapping[str, Any]) -> str:
    """Stable JSON of a config (sorted keys), as stored in checkpoints."""
    return json.dumps(_to_dict(config), sort_keys=True, default=str)


def diff_configs(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two (nested) config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += diff_configs(va, vb, path + ".")
        elif _tuplify(va) != _tuplify(vb):
            out.append(path)
    return out


# --- helpers ---------------------------------------------------------------------------------
def _to_dict(config: Any) -> Any:
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    if isinstance(config, Mapping):
        return {k: _to_dict(v) for k, v in config.items()}
    return config


def _tuplify(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_tuplify(x) for x in v)
    return v


def _get(cfg: dict, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def _unknown(key: str, valid: list[str], path: str) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(f'{path}{c}' for c in close)}?" if close else ""
    return f"unknown field '{path}{key}'.{hint} Valid fields here: {', '.join(sorted(valid))}."


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def _check_section(cfg: dict, schema: dict, path: str, errors: list[str]) -> None:
    for key, value in cfg.items():
        sub = f"{path}{key}"
        if sub in OPEN_SECTIONS or sub in FREE_SECTIONS:
            if not isinstance(value, dict):
                errors.append(f"{sub} must be a ConfigDict; got {type(value).__name__}.")
            elif sub in OPEN_SECTIONS and not isinstance(value.get("name"), str):
                errors.append(
                    f"{sub}.name must be a registry name (str); got {value.get('name')!r}."
                )
            continue
        if key not in schema:
            errors.append(_unknown(key, list(schema), path))
            continue
        default = schema[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                errors.append(f"{sub} must be a section (ConfigDict); got {value!r}.")
            else:
                _check_section(value, default, sub + ".", errors)
        elif not _type_ok(value, default):
            errors.append(
                f"{sub} must be of type {type(default).__name__} (default {default!r}); "
                f"got {value!r} of type {type(value).__name__}."
            )


def _check_open(section: dict, kind: str, path: str, errors: list[str]) -> None:
    name = section.get("name")
    if not isinstance(name, str):
        return
    try:
        accepted = registry.accepted_kwargs(kind, name)
    except RegistryError as err:
        errors.append(f"{path}.name: {err}")
        return
    if accepted is None:
        return
    for key, value in section.items():
        if key == "name":
            continue
        if key not in accepted:
            errors.append(
                _unknown(key, list(accepted), f"{path}.")
                + f" (keyword arguments of the {kind} {name!r})"
            )
            continue
        ann = accepted[key].annotation
        if ann in (int, float, bool, str) and not _type_ok(value, ann()):
            errors.append(
                f"{path}.{key} must be {ann.__name__} for {kind} {name!r}; got {value!r} "
                f"of type {type(value).__name__}."
            )
    missing = [
        k
        for k, p in accepted.items()
        if p.default is inspect.Parameter.empty
        and p.kind is not inspect.Parameter.VAR_KEYWORD
        and k not in section
    ]
    if missing:
        errors.append(f"{path}: the {kind} {name!r} needs {', '.join(missing)}; set {path}.<arg>.")


def _check_values(cfg: dict, errors: list[str]) -> None:
    def choice(path: str, options: tuple[str, ...]) -> None:
        value = _get(cfg, path)
        if value is not None and value not in options:
            close = difflib.get_close_matches(str(value), options, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            errors.append(f"{path} = {value!r} is not one of {options}.{hint}")

    choice("sharding.strategy", STRATEGIES)
    choice("optimizer.name", OPTIMIZERS)
    choice("optimizer.schedule", SCHEDULES)
    choice("log.wandb_mode", WANDB_MODES)
    positive = ("total_steps", "data.global_batch_size", "train.grad_accum", "log.every_steps")
    for path in positive:
        value = _get(cfg, path)
        if value is not None and value < 1:
            errors.append(f"{path} must be ≥ 1; got {value}.")
    batch, accum = _get(cfg, "data.global_batch_size"), _get(cfg, "train.grad_accum")
    if batch and accum and batch % accum:
        errors.append(
            f"data.global_batch_size = {batch} is not divisible by train.grad_accum = {accum}."
        )
    for d in _get(cfg, "ema.decays") or ():
        if not 0.0 < d < 1.0:
            errors.append(f"ema.decays must lie in (0, 1); got {d}.")
    for s in _get(cfg, "posthoc_ema.stds") or ():
        if not 0.0 < s < 0.28:
            errors.append(
                f"posthoc_ema.stds must lie in (0, 0.28) (σ_rel of a power EMA); got {s}."
            )
    sizes = {a: _get(cfg, f"mesh.{a}") for a in ("data", "fsdp", "tensor", "context")}
    for axis, size in sizes.items():
        if isinstance(size, int) and (size == 0 or size < -1):
            errors.append(f"mesh.{axis} must be ≥ 1 (or −1 = the remaining devices); got {size}.")
    if sum(s == -1 for s in sizes.values()) > 1:
        errors.append(f"at most one mesh size may be −1 (the remaining devices); got {sizes}.")
    context, attn = sizes["context"], _get(cfg, "model.attn_implementation")
    has_attn = "attn_implementation" in (_get(cfg, "model") or {})
    if isinstance(context, int) and context != 1 and has_attn and attn not in ("ring", "ulysses"):
        errors.append(
            f"mesh.context = {context} splits the tokens; set model.attn_implementation to "
            f"'ring' or 'ulysses' (got {attn!r})."
        )
    for rule in _get(cfg, "sharding.rules") or ():
        if not (isinstance(rule, tuple | list) and len(rule) == 2 and isinstance(rule[0], str)):
            errors.append(f"sharding.rules entries must be (regex, spec) pairs; got {rule!r}.")
