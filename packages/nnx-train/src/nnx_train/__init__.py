"""Trainer, EMA, orbax checkpoints with exact resume, FSDP / multi-host sharding, logging.

`train(config, make_data)` runs a training job described by a ConfigDict
(`config.default_config()`, validated by `config.validate_config`); the pieces are usable alone:
`sharding` (mesh, FSDP, multi-host batches), `ema` / `posthoc_ema` (EDM2 power EMA and its
least-squares reconstruction), `checkpoint` (orbax, exact resume), `step` (the jitted train step),
`optim` (schedules), `metrics` (JSONL / wandb / MFU), `callbacks` (sample grids, evaluators),
`registry` (plug-ins by name).
"""

from nnx_train.config import default_config, validate_config
from nnx_train.errors import (
    CheckpointError,
    ConfigError,
    IncompatibleCheckpointError,
    NonFiniteError,
    RegistryError,
    RunLockError,
    ShardingError,
    TrainError,
    WorkdirError,
)

# The trainer imports jax, flax and orbax; load it on first use so that reading and validating a
# config (`nnx_train.config`) stays cheap (an app can reject a typo before importing jax).
_LAZY = {"TrainResult", "build_interface", "train"}


def __getattr__(name: str):
    if name in _LAZY:
        from nnx_train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'nnx_train' has no attribute {name!r}")


__version__ = "0.3.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "IncompatibleCheckpointError",
    "NonFiniteError",
    "RegistryError",
    "RunLockError",
    "ShardingError",
    "TrainError",
    "TrainResult",
    "WorkdirError",
    "build_interface",
    "default_config",
    "train",
    "validate_config",
]
