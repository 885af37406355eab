"""Exception types raised by the nnx-imagenet app, each saying what was expected and what to do."""


class AppError(Exception):
    """Base class of every error raised by nnx-imagenet."""


class DataError(AppError, ValueError):
    """Missing or malformed data: says which path was read and what layout was expected."""


class ConfigError(AppError, ValueError):
    """An unknown config key, a wrong type, or an unknown config name / preset."""


class UsageError(AppError, ValueError):
    """A command-line mistake: unknown command or flag, a flag value out of range."""
