"""Interpolants: values at the ends, derivatives against central finite differences, the mapping
onto the `Interfaces` notation, and bad names."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.interpolants import VP, Linear, Trigonometric, get_interpolant

ALL = [Linear(), Trigonometric(), VP()]


@pytest.mark.parametrize("interp", ALL, ids=lambda i: i.name)
def test_ends(interp):
    one = jnp.ones(1)
    np.testing.assert_allclose(interp.alpha(one), 0.0, atol=1e-6)
    np.testing.assert_allclose(interp.beta(one), 1.0, atol=1e-6)
    zero = jnp.zeros(1)
    np.testing.assert_allclose(interp.alpha(zero), 1.0, atol=1e-4)
    # VP only reaches β(0) = exp(−(b_max + b_min)/4) at t = 0.
    beta0 = math.exp(-(20.0 + 0.1) / 4) if interp.name == "vp" else 0.0
    np.testing.assert_allclose(interp.beta(zero), beta0, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("interp", ALL, ids=lambda i: i.name)
def test_derivatives_match_central_differences(interp):
    t = jnp.linspace(0.02, 0.97, 40)
    h = 1e-3  # truncation O(h²) ≈ 1e-6, float32 round-off ≈ 1e-7 / h = 1e-4
    for f, df in ((interp.alpha, interp.d_alpha), (interp.beta, interp.d_beta)):
        fd = (f(t + h) - f(t - h)) / (2 * h)
        np.testing.assert_allclose(df(t), fd, rtol=1e-2, atol=1e-3)


def test_derivatives_closed_form_values():
    t = jnp.array([0.25, 0.5])
    tr = Trigonometric()
    np.testing.assert_allclose(
        tr.d_alpha(t), -math.pi / 2 * np.sin(math.pi * np.array([0.25, 0.5]) / 2), rtol=1e-6
    )
    vp = VP()
    # VP: α² + β² = 1, so α α' + β β' = 0 exactly.
    tt = jnp.linspace(0.05, 0.95, 7)
    np.testing.assert_allclose(vp.alpha(tt) ** 2 + vp.beta(tt) ** 2, 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        vp.alpha(tt) * vp.d_alpha(tt) + vp.beta(tt) * vp.d_beta(tt), 0.0, atol=1e-5
    )


def test_alpha_sigma_is_data_then_noise_coefficient():
    interp = Linear()
    t = jnp.array([0.3])
    a, s = interp.alpha_sigma(t)
    np.testing.assert_allclose([a[0], s[0]], [0.3, 0.7], rtol=1e-6)  # x_t = 0.3·data + 0.7·noise
    x0, x1 = jnp.array([[1.0, 2.0]]), jnp.array([[-3.0, 5.0]])
    np.testing.assert_allclose(interp.interpolate(x0, x1, t), 0.7 * x0 + 0.3 * x1, rtol=1e-6)
    np.testing.assert_allclose(interp.velocity(x0, x1, t), x1 - x0, rtol=1e-6)


def test_bad_interpolant_names_and_parameters():
    with pytest.raises(InterfaceConfigError, match="expected one of"):
        get_interpolant("cosine")
    with pytest.raises(InterfaceConfigError, match="b_min"):
        VP(b_min=5.0, b_max=1.0)
    assert isinstance(get_interpolant("TRIG"), Trigonometric)
