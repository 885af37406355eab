"""Exception types raised by nnx-backbones, each with a message that says what to do next."""


class BackboneError(Exception):
    """Base class of every error raised by nnx-backbones."""


class ShapeError(BackboneError, ValueError):
    """An input did not have the shape a network expects."""


class LabelError(BackboneError, ValueError):
    """Class labels outside [0, num_classes] (the last index is the null label)."""


class WeightsError(BackboneError):
    """Weights could not be loaded: missing file, bad hash, or keys that do not match."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A weights file is neither in the cache nor downloadable (e.g. offline)."""
