"""Objectives for diffusion, flow-matching, consistency and flow-map models (the `Interfaces`)."""

from nnx_interfaces.base import Interfaces, TimeDomain, TrainingTimeDistType
from nnx_interfaces.errors import InterfaceConfigError, InterfaceError
from nnx_interfaces.oracles import GaussianOracle
from nnx_interfaces.sit import SiTInterface
from nnx_interfaces.time_dist import sample_time

__version__ = "0.1.0"

__all__ = [
    "GaussianOracle",
    "InterfaceConfigError",
    "InterfaceError",
    "Interfaces",
    "SiTInterface",
    "TimeDomain",
    "TrainingTimeDistType",
    "sample_time",
]
