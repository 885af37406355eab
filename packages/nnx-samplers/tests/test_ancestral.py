"""DDPMAncestral on closed-form Gaussian answers (any affine path), ADM's timestep respacing, and
its errors. The parity with ADM/DiT's own code is in test_dit_reference.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnx_interfaces.base import TimeDomain
from nnx_interfaces.oracles import GaussianOracle, linear_path
from nnx_samplers import (
    DDPMAncestral,
    FunctionModel,
    SamplerConfigError,
    SpacedTimesteps,
    space_timesteps,
)

MEAN, STD = jnp.array([0.4, -0.3]), 0.5


def vp_cosine(t):
    return jnp.cos(0.5 * jnp.pi * t), jnp.sin(0.5 * jnp.pi * t)


@pytest.mark.parametrize("path", [linear_path, vp_cosine], ids=["linear", "vp"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_exact_denoiser_samples_the_data_distribution(path, variance):
    oracle = GaussianOracle(MEAN, STD, path)
    td = TimeDomain(noise=1.0, data=0.0, eps=1e-3)
    model = FunctionModel(td, denoise=oracle.posterior_mean_x, alpha_sigma=path)
    x_init = jax.random.normal(jax.random.key(0), (16_384, 2))
    res = DDPMAncestral(400, variance=variance).sample(1, model, x_init)
    x = np.asarray(res.x)
    np.testing.assert_allclose(x.mean(0), MEAN, atol=0.015)
    np.testing.assert_allclose(x.std(0), STD, rtol=0.03)
    assert res.nfe == 400


def test_respacing_forms_of_adm():
    assert space_timesteps(1000, "250").tolist() == [round(k * 999 / 249) for k in range(250)]
    assert space_timesteps(1000, "ddim25").tolist() == list(range(0, 1000, 40))
    kept = space_timesteps(300, "10,15,20")  # ADM's docstring example
    assert kept.size == 45 and kept[0] == 0 and kept[-1] == 299
    assert kept[9] == 99 and kept[10] == 100 and kept[24] == 199
    assert space_timesteps(1000, [5]).tolist() == space_timesteps(1000, "5").tolist()
    td = TimeDomain(noise=1.0, data=0.0, eps=1e-3)
    grid = SpacedTimesteps("ddim25")(25, td)
    np.testing.assert_allclose(grid, np.append(np.arange(961, 0, -40) / 1000, 0.0))
    bad_specs = [("25x", "Cannot read"), ("ddim999", "no integer stride"), ("3,2000", "take")]
    for bad, match in bad_specs:
        with pytest.raises(SamplerConfigError, match=match):
            space_timesteps(1000, bad)
    with pytest.raises(SamplerConfigError, match="num_steps=250"):
        SpacedTimesteps("250")(100, td)
    with pytest.raises(SamplerConfigError, match="train_steps"):
        SpacedTimesteps("250")(250, TimeDomain(noise=1.0, data=0.0))


def test_errors_and_injected_noise():
    td = TimeDomain(noise=1.0, data=0.0, eps=1e-3)
    oracle = GaussianOracle(MEAN, STD, linear_path)
    model = FunctionModel(td, denoise=oracle.posterior_mean_x, alpha_sigma=linear_path)
    with pytest.raises(SamplerConfigError, match="variance"):
        DDPMAncestral(4, variance="learned_small")
    with pytest.raises(SamplerConfigError, match="learn_sigma"):
        DDPMAncestral(4).sample(0, model, jnp.zeros((2, 2)))
    with pytest.raises(SamplerConfigError, match="alpha_sigma"):
        DDPMAncestral(4, variance="fixed_small").sample(
            0, FunctionModel(td, denoise=oracle.posterior_mean_x), jnp.zeros((2, 2))
        )
    # An injected noise_sampler replaces the key's draws: the key then does not matter.
    x0 = jax.random.normal(jax.random.key(0), (2, 2))
    z = jax.random.normal(jax.random.key(5), (4, 2, 2))
    injected = DDPMAncestral(4, variance="fixed_large", noise_sampler=lambda key, i, x: z[i])
    a = injected.sample(0, model, x0).x
    np.testing.assert_array_equal(a, injected.sample(1, model, x0).x)
    plain = DDPMAncestral(4, variance="fixed_large")
    assert np.abs(np.asarray(a - plain.sample(1, model, x0).x)).max() > 1e-3
