"""ODE/SDE/jump samplers, time schedules and guidance for nnx-interfaces models."""

__version__ = "0.1.0"
