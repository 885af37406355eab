"""Objectives for diffusion, flow-matching, consistency and flow-map models (the `Interfaces`)."""

from nnx_interfaces.base import Interfaces, TimeDomain, TrainingTimeDistType, TreeUpdate
from nnx_interfaces.consistency import SCD, SCT, TrigFlowConsistency
from nnx_interfaces.ddpm import DDPMInterface
from nnx_interfaces.dmd import DMD
from nnx_interfaces.edm import EDMInterface
from nnx_interfaces.errors import InterfaceConfigError, InterfaceError
from nnx_interfaces.flowmaps import (
    ConsistencyTrajectoryModel,
    DataPredictionInterface,
    EulerianSelfDistillation,
    FlowMapInterface,
    FlowMatching,
    InterpolantInterface,
    LagrangianSelfDistillation,
    MeanFlowMap,
    MinimumIterativePolicy,
    ProgressiveSelfDistillation,
    Regression,
    STSampling,
    TwoStepDenoising,
)
from nnx_interfaces.forcing import DiffusionForcing
from nnx_interfaces.interpolants import Interpolant, get_interpolant
from nnx_interfaces.meanflow import MeanFlowInterface
from nnx_interfaces.oracles import GaussianOracle
from nnx_interfaces.repa import REPA
from nnx_interfaces.self_forcing import SelfForcing
from nnx_interfaces.shortcut import Shortcut
from nnx_interfaces.sit import SiTInterface
from nnx_interfaces.time_dist import sample_time

__version__ = "0.3.0"

__all__ = [
    "DMD",
    "REPA",
    "SCD",
    "SCT",
    "ConsistencyTrajectoryModel",
    "DDPMInterface",
    "DataPredictionInterface",
    "DiffusionForcing",
    "EDMInterface",
    "EulerianSelfDistillation",
    "FlowMapInterface",
    "FlowMatching",
    "GaussianOracle",
    "InterfaceConfigError",
    "InterfaceError",
    "Interfaces",
    "Interpolant",
    "InterpolantInterface",
    "LagrangianSelfDistillation",
    "MeanFlowInterface",
    "MeanFlowMap",
    "MinimumIterativePolicy",
    "ProgressiveSelfDistillation",
    "Regression",
    "STSampling",
    "SelfForcing",
    "Shortcut",
    "SiTInterface",
    "TimeDomain",
    "TrainingTimeDistType",
    "TreeUpdate",
    "TrigFlowConsistency",
    "TwoStepDenoising",
    "get_interpolant",
    "sample_time",
]
