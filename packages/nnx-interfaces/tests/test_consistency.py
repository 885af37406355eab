"""sCT / sCD in TrigFlow, checked at the exact consistency function of Gaussian data.

With the exact F* and the exact teacher velocity the sCD tangent g = cos t·df/dt vanishes, so the
distillation residual is zero; sCT's tangent uses the conditional velocity and is zero only in mean,
so its loss is stationary there. The teacher is a flow-matching interface in another time
convention (noise at 0, linear path), which also checks the SNR matching of `SCD`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_interfaces.consistency import SCD, SCT
from nnx_interfaces.errors import InterfaceConfigError, InterfaceError
from nnx_interfaces.flowmaps import FlowMatching
from nnx_interfaces.flowmaps.oracle_nets import ExactConsistencyNet, ExactNet
from nnx_interfaces.interpolants import Linear
from nnx_interfaces.oracles import GaussianOracle

SIGMA_D, MEAN, STD = 0.5, jnp.array([0.3, -0.4]), 0.45
X = MEAN + STD * jax.random.normal(jax.random.key(3), (2048, 2))


def _trig_oracle():
    return GaussianOracle(MEAN, STD, lambda t: (jnp.cos(t), SIGMA_D * jnp.sin(t)))


def _teacher():
    net = ExactNet(GaussianOracle(MEAN, STD, Linear().alpha_sigma), "velocity", rngs=nnx.Rngs(5))
    return FlowMatching(net, "linear")


def _student(cls, diag=0.0, **kw):
    net = ExactConsistencyNet(_trig_oracle(), SIGMA_D, rngs=nnx.Rngs(0))
    net.diag[...] = jnp.float32(diag)
    kw.setdefault("tangent_warmup_steps", 0)
    if cls is SCD:
        kw["teacher"] = _teacher()
    return cls(net, sigma_d=SIGMA_D, rngs=nnx.Rngs(0, time=1, noise=2), **kw)


def test_teacher_time_and_velocity_conversion():
    scd = _student(SCD)
    t = jnp.array([0.1, 0.7, 1.3])
    # Linear flow-matching path: data coefficient τ, noise 1 − τ, so (1 − τ)/τ = σ_d tan t.
    np.testing.assert_allclose(scd.teacher_time(t), 1 / (1 + SIGMA_D * jnp.tan(t)), rtol=1e-5)
    x_t = jnp.array([[0.2, -1.0], [0.5, 0.5], [-0.3, 0.9]])
    v = scd.tangent_velocity(None, None, x_t, t)
    np.testing.assert_allclose(v, _trig_oracle().velocity(x_t, t), rtol=1e-4, atol=1e-5)


def test_denoise_is_the_ode_end_point_and_pred_score_refuse():
    itf = _student(SCT)
    o = _trig_oracle()
    x_t, t = jnp.array([[0.2, -1.0], [0.5, 0.5]]), jnp.array([0.4, 1.2])
    np.testing.assert_allclose(
        itf.denoise(x_t, t), o.ode_map(x_t, t, jnp.zeros(2)), rtol=1e-5, atol=1e-6
    )
    # (x_t − f)/t, the old `pred`, is not dx/dt: 0.57 relative error at these points
    avg = (x_t - itf.denoise(x_t, t)) / t[:, None]
    assert float(jnp.max(jnp.abs(avg - o.velocity(x_t, t)))) > 0.1
    assert not itf.has_velocity and not _student(SCD).has_velocity
    for method in (itf.pred, itf.score, _student(SCD).pred):
        with pytest.raises(InterfaceError, match="DenoiseRenoise"):
            method(x_t, t)
    dom = itf.time_domain
    assert (dom.noise, dom.data, dom.variable) == (math.pi / 2, 0.0, "angle")


def test_scd_residual_vanishes_at_the_exact_solution():
    _, aux = _student(SCD, adaptive_weight=False).loss(X, return_aux=True)
    assert float(aux["consistency"]) < 1e-8, aux
    _, aux_pert = _student(SCD, diag=0.2, adaptive_weight=False).loss(X, return_aux=True)
    assert float(aux_pert["consistency"]) > 1e-4
    # Before the warm-up ends (r < 1) the tangent is not the exact one: residual > 0.
    _, aux_warm = _student(SCD, tangent_warmup_steps=10).loss(X, step=5, return_aux=True)
    assert float(aux_warm["consistency"]) > 1e-4


def test_sct_loss_is_stationary_at_the_exact_solution():
    def grad(diag):
        itf = _student(SCT, diag=diag, tangent_norm_c=None, adaptive_weight=False)
        return float(nnx.grad(lambda m: m.loss(X))(itf).network.diag[...])

    assert abs(grad(0.0)) < 0.15 * abs(grad(0.2))


def test_time_distribution_and_warmup():
    itf = _student(SCT, p_mean=-0.8, p_std=1.6, tangent_warmup_steps=100)
    t = itf.sample_t((20_000,))
    tau = jnp.log(SIGMA_D * jnp.tan(t))
    np.testing.assert_allclose([tau.mean(), tau.std()], [-0.8, 1.6], atol=0.05)
    np.testing.assert_allclose([itf.warmup(0), itf.warmup(50), itf.warmup(500)], [0, 0.5, 1])


@pytest.mark.parametrize(
    "kw", [dict(sigma_d=0.0), dict(tangent_norm_c=-1.0), dict(p_std=0.0), dict(time_scale=0.0)]
)
def test_bad_configuration_is_rejected(kw):
    with pytest.raises(InterfaceConfigError):
        SCT(ExactConsistencyNet(_trig_oracle(), SIGMA_D, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0), **kw)
