"""Shortcut models: exact self-consistency at the exact flow map, step sampling, jumps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.flowmaps.oracle_nets import ExactNet
from nnx_interfaces.interpolants import Linear
from nnx_interfaces.oracles import GaussianOracle
from nnx_interfaces.shortcut import Shortcut

MEAN, STD = jnp.array([0.7, -1.3]), 0.6
X = MEAN + STD * jax.random.normal(jax.random.key(7), (2048, 2))


def _shortcut(off=0.0, **kw):
    net = ExactNet(GaussianOracle(MEAN, STD, Linear().alpha_sigma), "step", rngs=nnx.Rngs(0))
    net.off[...] = jnp.float32(off)
    return Shortcut(net, "linear", rngs=nnx.Rngs(0, time=1, noise=2), **kw)


def test_consistency_term_vanishes_at_the_exact_flow_map():
    _, aux = _shortcut(bootstrap_fraction=0.5).loss(X, return_aux=True)
    assert float(aux["consistency"]) < 1e-8
    # Flow rows: E Var(x − n | I_t) over t ~ U[0, 1] (trapezoid rule).
    oracle = GaussianOracle(MEAN, STD, Linear().alpha_sigma)
    t = jnp.linspace(0, 1, 2001)
    cv = oracle.conditional_variance(1.0, -1.0, t)
    np.testing.assert_allclose(
        float(aux["flow"]), float(jnp.mean(0.5 * (cv[1:] + cv[:-1]))), rtol=0.06
    )
    _, aux_off = _shortcut(off=0.3, bootstrap_fraction=0.5).loss(X, return_aux=True)
    assert float(aux_off["consistency"]) > 1e-4


def test_bootstrap_steps_are_dyadic_and_stay_inside_the_interval():
    itf = _shortcut(min_step=1 / 8)
    t, d = itf.sample_bootstrap(4000)
    k = -jnp.log2(d)
    np.testing.assert_allclose(k, jnp.round(k))
    assert set(np.unique(np.asarray(d)).tolist()) == {0.5, 0.25, 0.125}
    np.testing.assert_allclose(t / d, jnp.round(t / d), atol=1e-5)
    assert bool(jnp.all((t >= 0) & (t + 2 * d <= 1 + 1e-6)))


def test_pred_is_the_average_velocity_and_d0_the_velocity():
    itf = _shortcut()
    oracle = GaussianOracle(MEAN, STD, Linear().alpha_sigma)
    x, s, t = X[:3], jnp.array([0.0, 0.2, 0.5]), jnp.array([1.0, 0.7, 0.75])
    np.testing.assert_allclose(itf.flow_map(x, s, t), oracle.ode_map(x, s, t), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(itf.pred(x, s), oracle.velocity(x, s), rtol=1e-5, atol=1e-6)
    assert itf.two_time and itf.time_domain.noise == 0.0 and itf.time_domain.data == 1.0


@pytest.mark.parametrize("kw", [dict(min_step=0.3), dict(bootstrap_fraction=1.0)])
def test_bad_configuration_is_rejected(kw):
    with pytest.raises(InterfaceConfigError):
        _shortcut(**kw)
