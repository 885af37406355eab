"""Exception types raised by nnx-train. Each message says what was expected, what was found and
what to do next."""


class TrainError(Exception):
    """Base class of every error raised by nnx-train."""


class ConfigError(TrainError, ValueError):
    """The training ConfigDict has an unknown key, a wrong type or an invalid value."""


class RegistryError(TrainError, KeyError):
    """A model / interface / sampler name is not registered, or its module cannot be imported."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class ShardingError(TrainError, ValueError):
    """A mesh or sharding rule does not fit the devices or an array's shape."""


class CheckpointError(TrainError):
    """No usable checkpoint could be restored, or a checkpoint could not be written."""


class IncompatibleCheckpointError(CheckpointError, ValueError):
    """The checkpoint was written with a config whose structural fields differ from this one."""


class NonFiniteError(TrainError, FloatingPointError):
    """Too many consecutive steps had a non-finite loss, gradient or updated state; training
    stopped. Also raised instead of writing a checkpoint that holds non-finite values."""


class WorkdirError(TrainError, OSError):
    """The workdir or checkpoint directory cannot be written, or has too little free space."""


class RunLockError(WorkdirError):
    """Another trainer holds the run lock of this workdir."""
