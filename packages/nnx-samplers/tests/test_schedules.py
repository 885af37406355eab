"""Time schedules against their closed forms: ρ-schedule, shifted uniform, logSNR, cosine."""

import numpy as np
import pytest

from nnx_interfaces.base import TimeDomain
from nnx_interfaces.oracles import linear_path, ve_path
from nnx_samplers import EDMRho, Euler, FunctionModel, SamplerConfigError
from nnx_samplers.schedules import as_schedule, cosine, edm_rho, logsnr_uniform, uniform

SIT = TimeDomain(noise=1.0, data=0.0)
EDM = TimeDomain(noise=80.0, data=0.0, variable="sigma", eps=0.002)
FLOW_MAP = TimeDomain(noise=0.0, data=1.0)


@pytest.mark.parametrize("n", [1, 2, 18, 40])
def test_rho_schedule_is_karras_eq5_with_n_plus_one_points_ending_at_zero(n):
    t = edm_rho(n, EDM, rho=7.0)
    assert t.shape == (n + 1,) and t[-1] == 0.0 and t[0] == 80.0
    assert np.all(np.diff(t) < 0)
    if n > 1:  # Karras et al. (2022), Eq. 5, written out independently
        i = np.arange(n)
        ref = (80 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
        np.testing.assert_allclose(t[:-1], ref, rtol=1e-12)


def test_rho_schedule_on_a_domain_without_eps_runs_to_the_data_end():
    t = edm_rho(10, SIT, rho=7.0)
    assert t.shape == (11,) and t[0] == 1.0 and t[-1] == 0.0 and np.all(np.diff(t) < 0)
    t = edm_rho(10, FLOW_MAP, rho=3.0)  # noise at 0, data at 1: increasing
    assert t[0] == 0.0 and t[-1] == 1.0 and np.all(np.diff(t) > 0)


@pytest.mark.parametrize("shift", [0.3, 1.0, 3.0])
def test_shifted_uniform_keeps_endpoints_and_applies_the_shift(shift):
    for td in (SIT, FLOW_MAP):
        t = uniform(8, td, shift=shift)
        assert t.shape == (9,) and t[0] == td.noise and t[-1] == td.data
        assert np.all(np.diff(t) * td.direction > 0)
    t = uniform(2, SIT, shift=shift)  # τ = 1/2 ↦ s/2 / (1 + (s − 1)/2) = s / (1 + s)
    np.testing.assert_allclose(t[1], shift / (1 + shift), rtol=1e-12)


def test_eps_only_matters_when_the_last_evaluation_would_come_too_close():
    np.testing.assert_allclose(uniform(4, EDM), [80.0, 60.0, 40.0, 20.0, 0.0])  # 20 > σ_min
    td = TimeDomain(noise=1.0, data=0.0, eps=0.3)  # t_3 = 0.25 would be within eps of 0
    t = uniform(4, td)
    np.testing.assert_allclose(t, [1.0, 1.0 - 0.7 / 3, 1.0 - 1.4 / 3, 0.3, 0.0])


def test_logsnr_uniform_has_equal_lambda_steps():
    # SiT: λ = log((1 − t)/t), infinite at both ends → clipped to [−6, 6] inside, exact ends
    t = logsnr_uniform(12, SIT, linear_path, lambda_min=-6.0, lambda_max=6.0)
    assert t[0] == 1.0 and t[-1] == 0.0
    lam = np.log((1 - t[1:-1]) / t[1:-1])
    np.testing.assert_allclose(np.diff(lam), 1.0, atol=2e-4)  # 12 steps over [−6, 6]
    # EDM: λ = −log σ finite on [σ_min, σ_max]: σ geometric, then 0
    t = logsnr_uniform(8, EDM, ve_path)
    assert t.shape == (9,) and t[-1] == 0.0
    np.testing.assert_allclose(t[:-1], np.geomspace(80.0, 0.002, 8), rtol=1e-4)


def test_cosine_schedule_endpoints_and_profile():
    t = cosine(4, SIT)
    np.testing.assert_allclose(t, 0.5 * (1 + np.cos(np.pi * np.arange(5) / 4)), atol=1e-15)


def test_explicit_schedule_is_validated():
    m = FunctionModel(SIT, velocity=lambda x, t: x)
    assert np.array_equal(Euler(2, schedule=[1.0, 0.4, 0.0]).grid(m), [1.0, 0.4, 0.0])
    with pytest.raises(SamplerConfigError, match="noise end"):
        Euler(2, schedule=[0.0, 0.4, 1.0]).grid(m)
    with pytest.raises(SamplerConfigError, match="num_steps=2"):
        Euler(5, schedule=[1.0, 0.4, 0.0]).grid(m)
    with pytest.raises(SamplerConfigError, match="Unknown schedule"):
        as_schedule("karras-ish")
    with pytest.raises(SamplerConfigError, match="sigma_min"):
        EDMRho(sigma_min=100.0)(4, EDM)
