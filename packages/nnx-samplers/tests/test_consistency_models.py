"""Consistency models (sCT / sCD, `has_velocity = False`) with samplers: every ODE/SDE sampler
refuses them with an error naming DenoiseRenoise, which samples the exact consistency function
of Gaussian data exactly (the data moments in 1 and 2 steps)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_interfaces.consistency import SCT
from nnx_interfaces.flowmaps.oracle_nets import ExactConsistencyNet
from nnx_interfaces.oracles import GaussianOracle
from nnx_samplers import (
    DDIM,
    DenoiseRenoise,
    DPMSolverPP,
    EDMSampler,
    Euler,
    EulerMaruyama,
    Heun,
    SamplerConfigError,
)

SIGMA_D, MEAN, STD = 0.5, 0.7, 0.4


def _sct():
    o = GaussianOracle(MEAN, STD, lambda t: (jnp.cos(t), SIGMA_D * jnp.sin(t)))
    return SCT(ExactConsistencyNet(o, SIGMA_D, rngs=nnx.Rngs(0)), sigma_d=SIGMA_D, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "sampler",
    [
        Euler(16),
        Heun(8),
        EDMSampler(8),
        EDMSampler(8, s_churn=5.0),
        EulerMaruyama(8),
        DPMSolverPP(8),
        DDIM(8),
        DDIM(8, eta=1.0),
    ],
)
def test_ode_and_sde_samplers_refuse_a_consistency_model(sampler):
    x0 = SIGMA_D * jax.random.normal(jax.random.key(0), (4, 2))
    with pytest.raises(SamplerConfigError, match=r"SCT.*DenoiseRenoise"):
        sampler.sample(0, _sct(), x0)


@pytest.mark.parametrize("steps", [1, 2])
def test_denoise_renoise_samples_the_exact_consistency_function_exactly(steps):
    x0 = SIGMA_D * jax.random.normal(jax.random.key(1), (128, 128))  # p_{π/2} = N(0, σ_d²)
    x = np.asarray(DenoiseRenoise(steps).sample(2, _sct(), x0).x, np.float64).reshape(-1)
    se_mean, se_var = STD / np.sqrt(x.size), STD**2 * np.sqrt(2.0 / x.size)
    assert abs(x.mean() - MEAN) < 4 * se_mean, x.mean()
    assert abs(x.var() - STD**2) < 4 * se_var, x.var()
