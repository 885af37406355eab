"""Two-time jump samplers and denoise-and-renoise (consistency / TSD / MIP) on exact answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnx_interfaces.base import TimeDomain
from nnx_interfaces.oracles import GaussianOracle, linear_path
from nnx_samplers import DenoiseRenoise, Euler, FunctionModel, Jump, SamplerConfigError

SIT = TimeDomain(1.0, 0.0)


@pytest.mark.parametrize("steps", [1, 3])
def test_meanflow_jump_with_the_exact_average_velocity_is_exact(steps):
    o = GaussianOracle(jnp.array([0.7, -1.3]), 0.4, linear_path)
    m = FunctionModel(SIT, velocity=o.average_velocity, two_time=True)
    x0 = jax.random.normal(jax.random.key(0), (16, 2))
    res = Jump(steps).sample(0, m, x0)
    np.testing.assert_allclose(res.x, o.ode_map(x0, jnp.ones(16), jnp.zeros(16)), atol=1e-5)
    assert res.nfe == steps


def test_jump_needs_a_two_time_model():
    m = FunctionModel(SIT, velocity=lambda x, t: x)
    with pytest.raises(SamplerConfigError, match="two-time"):
        Jump(1).sample(0, m, jnp.zeros((2, 2)))


def _flow_map_model():
    # flow-map convention (source at 0, data at 1): x_t = t·x + (1 − t)·n; a made-up denoiser
    path = lambda t: (t, 1.0 - t)  # noqa: E731
    den = lambda x, t: 0.5 * x + t[:, None] + 1.0  # noqa: E731
    return FunctionModel(TimeDomain(0.0, 1.0), denoise=den, alpha_sigma=path), den


def test_two_step_tsd_and_mip_follow_the_spec_formulas():
    m, den = _flow_map_model()
    z = jax.random.normal(jax.random.key(1), (4, 3))
    t_fix = 0.6
    grid = [0.0, t_fix, 1.0]
    b = lambda v: jnp.full((4,), v)  # noqa: E731
    # TSD: â_0 = π(z, 0); â = π(t_fix·â_0 + (1 − t_fix)·z, t_fix)
    a0 = den(z, b(0.0))
    want = den(t_fix * a0 + (1 - t_fix) * z, b(t_fix))
    got = DenoiseRenoise(2, schedule=grid, renoise="initial").sample(0, m, z)
    np.testing.assert_allclose(got.x, want, rtol=1e-6)
    # MIP: â_0 = π(0, 0); â = π(t_fix·â_0, t_fix)   (x_init = zeros)
    zeros = jnp.zeros((4, 3))
    want = den(t_fix * den(zeros, b(0.0)), b(t_fix))
    got = DenoiseRenoise(2, schedule=grid, renoise="zero").sample(0, m, zeros)
    np.testing.assert_allclose(got.x, want, rtol=1e-6)


def test_multistep_consistency_renoises_with_fresh_noise():
    m, den = _flow_map_model()
    z = jax.random.normal(jax.random.key(1), (4, 3))
    s = DenoiseRenoise(3, schedule=[0.0, 0.3, 0.7, 1.0], renoise="fresh")
    a, b = s.sample(0, m, z, return_trajectory=True), s.sample(1, m, z)
    assert a.trajectory.shape == (4, 4, 3) and not np.allclose(a.x, b.x)
    # x_1 = α(0.3)·x̂ + σ(0.3)·n: n recovered from x_1 must be standard normal-ish and ≠ z
    n = (a.trajectory[1] - 0.3 * den(z, jnp.zeros(4))) / 0.7
    assert not np.allclose(n, z) and 0.3 < float(jnp.std(n)) < 2.0


def test_euler_and_jump_agree_for_a_one_step_velocity_model():
    # a two-time model whose average velocity ignores r is Euler with the same grid
    v = lambda x, t: -x + t[:, None]  # noqa: E731
    x0 = jax.random.normal(jax.random.key(2), (4, 2))
    e = Euler(5).sample(0, FunctionModel(SIT, velocity=v), x0)
    j = Jump(5).sample(0, FunctionModel(SIT, velocity=lambda x, t, r: v(x, t), two_time=True), x0)
    np.testing.assert_allclose(e.x, j.x, rtol=1e-6)


def test_grids_ignore_eps_while_the_last_evaluation_is_far_enough_from_the_data_end():
    flow_map = FunctionModel(
        TimeDomain(0.0, 1.0, eps=0.01), velocity=lambda x, t, r: x, two_time=True
    )
    np.testing.assert_allclose(Jump(2).grid(flow_map), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(Jump(1).grid(flow_map), [0.0, 1.0])
    g = Jump(200).grid(flow_map)  # t_199 = 0.995 would be within eps: stop there at 0.99
    assert g.size == 201 and g[-1] == 1.0 and abs(g[-2] - 0.99) < 1e-12
