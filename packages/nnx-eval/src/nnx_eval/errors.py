"""Exception types raised by nnx-eval, each with a message that says what to do next.

Weights problems (missing file, bad hash, keys that do not match) raise the shared
`nnx_backbones.errors.WeightsError` family, so that one `except` covers every package.
"""


class EvalError(Exception):
    """Base class of every error raised by nnx-eval."""


class InputError(EvalError, ValueError):
    """An input array, argument or file did not have the shape, dtype or value range expected."""


class StatsFormatError(EvalError, ValueError):
    """A reference-statistics file lacks the keys or shapes of a known format (ADM or EDM)."""
