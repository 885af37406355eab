"""Trainer, EMA, orbax checkpoints with exact resume, FSDP / multi-host sharding, logging."""

__version__ = "0.1.0"
