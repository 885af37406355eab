"""Flow-map objectives on stochastic interpolants (noise at t = 0, data at t = 1).

Φ(x, s, t) = x + (t − s)·f(x, s, t) on any contract backbone (f = net(x, s, r=t)); velocity
b_t = f(·, t, t). One module per objective; see each module's docstring for its equations.
"""

from nnx_interfaces.flowmaps.common import InterpolantInterface
from nnx_interfaces.flowmaps.ctm import ConsistencyTrajectoryModel
from nnx_interfaces.flowmaps.data_prediction import DataPredictionInterface
from nnx_interfaces.flowmaps.esd import EulerianSelfDistillation
from nnx_interfaces.flowmaps.flow import FlowMatching
from nnx_interfaces.flowmaps.lsd import LagrangianSelfDistillation
from nnx_interfaces.flowmaps.mf import MeanFlowMap
from nnx_interfaces.flowmaps.mip import MinimumIterativePolicy
from nnx_interfaces.flowmaps.parameterisation import FlowMapInterface
from nnx_interfaces.flowmaps.psd import ProgressiveSelfDistillation
from nnx_interfaces.flowmaps.regression import Regression
from nnx_interfaces.flowmaps.st_sampling import STSampling
from nnx_interfaces.flowmaps.tsd import TwoStepDenoising

__all__ = [
    "ConsistencyTrajectoryModel",
    "DataPredictionInterface",
    "EulerianSelfDistillation",
    "FlowMapInterface",
    "FlowMatching",
    "InterpolantInterface",
    "LagrangianSelfDistillation",
    "MeanFlowMap",
    "MinimumIterativePolicy",
    "ProgressiveSelfDistillation",
    "Regression",
    "STSampling",
    "TwoStepDenoising",
]
