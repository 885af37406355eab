"""Exception types raised by nnx-interfaces."""


class InterfaceError(Exception):
    """Base class of every error raised by nnx-interfaces."""


class InterfaceConfigError(InterfaceError, ValueError):
    """An interface was constructed with an invalid argument (unknown option, bad range)."""
