"""ODE/SDE/jump samplers, time schedules and guidance for nnx-interfaces models.

One API for every sampler: `sampler.sample(rngs_or_key, model, x_init, *, y=None, guidance=None,
return_trajectory=False) -> SampleResult(x, nfe, trajectory, times)`, where `model` is an
`nnx_interfaces.Interfaces` or a `FunctionModel` of plain functions. The loop is one jitted program.
Videos: `Autoregressive(sampler).sample(...)` rolls a causal video model out frame by frame with a
KV cache; `DiffusionForcingSampler` runs the full sequence over a `[frames × steps]` noise matrix.
"""

from nnx_samplers.ancestral import DDPMAncestral
from nnx_samplers.autoregressive import Autoregressive
from nnx_samplers.base import BoundSampler, Sampler, SampleResult
from nnx_samplers.dpm import DDIM, DPMSolverPP
from nnx_samplers.edm import EDMSampler
from nnx_samplers.errors import SamplerConfigError, SamplerError
from nnx_samplers.frame_schedules import DiffusionForcingSampler, scheduling_matrix
from nnx_samplers.guidance import Autoguidance, ClassifierFreeGuidance
from nnx_samplers.jump import DenoiseRenoise, Jump
from nnx_samplers.model import FunctionModel
from nnx_samplers.ode import Euler, Heun
from nnx_samplers.schedules import (
    Cosine,
    EDMRho,
    Explicit,
    LogSNRUniform,
    SpacedTimesteps,
    Uniform,
    cosine,
    edm_rho,
    logsnr_uniform,
    space_timesteps,
    uniform,
)
from nnx_samplers.sde import EulerMaruyama

__version__ = "0.3.0"

__all__ = [
    "DDIM",
    "Autoguidance",
    "Autoregressive",
    "BoundSampler",
    "ClassifierFreeGuidance",
    "Cosine",
    "DDPMAncestral",
    "DPMSolverPP",
    "DenoiseRenoise",
    "DiffusionForcingSampler",
    "EDMRho",
    "EDMSampler",
    "Euler",
    "EulerMaruyama",
    "Explicit",
    "FunctionModel",
    "Heun",
    "Jump",
    "LogSNRUniform",
    "SampleResult",
    "Sampler",
    "SamplerConfigError",
    "SamplerError",
    "SpacedTimesteps",
    "Uniform",
    "cosine",
    "edm_rho",
    "logsnr_uniform",
    "scheduling_matrix",
    "space_timesteps",
    "uniform",
]
