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
from nnx_train.trainer import TrainResult, build_interface, train

__version__ = "0.1.0"

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
