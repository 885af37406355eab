"""Exception types raised by nnx-samplers."""


class SamplerError(Exception):
    """Base class of every error raised by nnx-samplers."""


class SamplerConfigError(SamplerError, ValueError):
    """A sampler, schedule or guidance was given an invalid argument, or a model lacks what the
    sampler needs (e.g. `alpha_sigma` for DPM-Solver++, a two-time `pred` for jump sampling)."""
