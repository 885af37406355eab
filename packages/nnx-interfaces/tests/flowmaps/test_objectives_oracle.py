"""Every flow-map-family objective at the exact solution for Gaussian data.

Data x ~ N(MEAN, STD²·I); `ExactNet` returns the closed-form optimum (from `GaussianOracle` on the
interface's own path) plus learnable perturbations `diag` (moves every output) and `off` (moves only
jumps, zero on the diagonal). Checks: the loss equals its analytic minimum (distillation terms: 0),
its gradient with respect to a perturbation vanishes there, and moving off the optimum raises it.
Each evaluation rebuilds the interface with the same seeds, so values are compared on the same
draws.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_interfaces import flowmaps as fm
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.flowmaps.oracle_nets import ExactNet
from nnx_interfaces.interpolants import get_interpolant
from nnx_interfaces.oracles import GaussianOracle

MEAN, STD, B = jnp.array([0.7, -1.3]), 0.6, 4096
X = MEAN + STD * jax.random.normal(jax.random.key(42), (B, 2))
FLOW_MAPS = {
    "psd": fm.ProgressiveSelfDistillation,
    "lsd": fm.LagrangianSelfDistillation,
    "esd": fm.EulerianSelfDistillation,
    "ctm": None,
}


def _rngs():
    return nnx.Rngs(0, time=1, noise=2, label_dropout=3)


def _oracle(interp):
    return GaussianOracle(MEAN, STD, interp.alpha_sigma)


def _build(kind, name="linear", diag=0.0, off=0.0, **kw):
    interp = get_interpolant(name)
    mode = {"flow": "velocity", "regression": "data", "tsd": "data", "mip": "data"}.get(kind, "end")
    net = ExactNet(_oracle(interp), mode, rngs=_rngs())
    net.diag[...] = jnp.float32(diag)
    net.off[...] = jnp.float32(off)
    if kind == "ctm":
        teacher = kw.pop("teacher", None)
        if teacher is None:  # exact flow-map teacher: its jump is exact
            teacher = fm.ProgressiveSelfDistillation(
                ExactNet(_oracle(interp), rngs=_rngs()), interp
            )
        return fm.ConsistencyTrajectoryModel(net, teacher, interp, **kw)
    cls = {
        "flow": fm.FlowMatching,
        "regression": fm.Regression,
        "tsd": fm.TwoStepDenoising,
        "mip": fm.MinimumIterativePolicy,
        "mf": fm.MeanFlowMap,
    }.get(kind) or FLOW_MAPS[kind]
    return cls(net, interp, **kw)


def _loss_and_grad(itf, key="total"):
    def fn(m):
        loss, aux = m.loss(X, return_aux=True)
        return (loss if key == "total" else aux[key]), aux

    (val, aux), grads = nnx.value_and_grad(fn, has_aux=True)(itf)
    return float(val), aux, grads.network


def _flow_minimum(interp, t_max=1.0):
    """E_{t ~ U[0, t_max]} Var(İ_t | I_t) per coordinate (trapezoid rule in t)."""
    t = jnp.linspace(0.0, t_max, 4001)
    cv = _oracle(interp).conditional_variance(interp.d_beta(t), interp.d_alpha(t), t)
    return float(jnp.mean(0.5 * (cv[1:] + cv[:-1])))


@pytest.mark.parametrize("name", ["linear", "trig", "vp"])
def test_flow_matching_minimum(name):
    interp = get_interpolant(name)
    val, _, g0 = _loss_and_grad(_build("flow", name))
    np.testing.assert_allclose(val, _flow_minimum(interp, 1 - interp.data_eps), rtol=0.05)
    up, _, g1 = _loss_and_grad(_build("flow", name, diag=0.2))
    assert up > val + 0.5 * 0.2**2  # E‖0.2·(1 + x)‖² ≥ 0.04 per coordinate
    assert abs(float(g0.diag[...])) < 0.1 * abs(float(g1.diag[...]))


@pytest.mark.parametrize(
    "kind, name",
    [
        ("psd", "linear"),
        ("psd", "vp"),
        ("lsd", "trig"),
        ("esd", "linear"),
        ("esd", "trig"),
        ("ctm", "vp"),
    ],
)
def test_distillation_terms_vanish_at_the_exact_map(kind, name):
    interp = get_interpolant(name)
    _val, aux, g0 = _loss_and_grad(_build(kind, name), key="distill")
    assert float(aux["distill"]) < 1e-6, aux
    np.testing.assert_allclose(
        float(aux["flow"]), _flow_minimum(interp, 1 - interp.data_eps), rtol=0.05
    )
    # Zero residual: zero gradient; an off-diagonal move (invisible to L_b) makes L_D positive.
    assert abs(float(g0.off[...])) < 1e-4
    _, aux_off, _ = _loss_and_grad(_build(kind, name, off=0.3), key="distill")
    assert float(aux_off["distill"]) > 1e-4  # CTM: only O(ctm_dt) of the move is seen
    assert float(aux_off["flow"]) == pytest.approx(float(aux["flow"]), rel=1e-5)


@pytest.mark.parametrize("full_stopgrad", [False, True])
def test_mean_flow_is_stationary_at_the_exact_map(full_stopgrad):
    # MF's target uses İ_s, not b_s: the residual −∇Φ·(İ_s − b_s) is zero only in mean.
    kw = {"full_stopgrad": full_stopgrad}
    _, aux, g0 = _loss_and_grad(_build("mf", **kw), key="distill")
    _, aux_off, g1 = _loss_and_grad(_build("mf", off=0.3, **kw), key="distill")
    assert float(aux_off["distill"]) > float(aux["distill"])
    assert abs(float(g0.off[...])) < 0.1 * abs(float(g1.off[...]))
    # Its mean is ρ(s, t)²·Var(İ_s | I_s), ρ = dΦ/dx; here only checked to be that order.
    assert 0.01 < float(aux["distill"]) < 10.0


def test_ctm_with_an_euler_teacher_has_an_order_dt_bias():
    teacher = fm.FlowMatching(
        ExactNet(_oracle(get_interpolant("trig")), "velocity", rngs=_rngs()), "trig"
    )
    d = [
        float(_loss_and_grad(_build("ctm", "trig", teacher=teacher, ctm_dt=dt))[1]["distill"])
        for dt in (0.04, 0.02)
    ]
    assert 1e-9 < d[1] < d[0] / 2.5  # residual O(dt), squared O(dt²): ratio ≈ 4


def test_data_prediction_minima():
    t_fix = 0.8
    cv = float(
        _oracle(get_interpolant("linear")).conditional_variance(1.0, 0.0, jnp.array([t_fix]))[0]
    )
    expected = {
        "regression": STD**2,  # E[x | n] = MEAN
        "mip": STD**2 + cv,  # π(0, 0) = MEAN, π(I_fix, t_fix) = E[x | I_fix]
        "tsd": t_fix**2 * STD**2 + cv,  # first term re-noised: β(t_fix)²‖π − x‖²
    }
    for kind, minimum in expected.items():
        kw = {} if kind == "regression" else {"t_fix": t_fix}
        val, _, g0 = _loss_and_grad(_build(kind, **kw))
        np.testing.assert_allclose(val, minimum, rtol=0.05, err_msg=kind)
        up, _, g1 = _loss_and_grad(_build(kind, diag=0.2, **kw))
        assert up > val, kind
        assert abs(float(g0.diag[...])) < 0.1 * abs(float(g1.diag[...])), kind


def test_samplers_views_of_mip_and_tsd():
    interp = get_interpolant("linear")
    n = jnp.ones((2, 2))
    mip, tsd = _build("mip", t_fix=0.8), _build("tsd", t_fix=0.8)
    np.testing.assert_allclose(mip.initial_state(n), 0.0)
    np.testing.assert_allclose(mip.renoise(2 * n, n, jnp.full(2, 0.8)), 1.6 * n, rtol=1e-6)
    np.testing.assert_allclose(tsd.initial_state(n), n)
    np.testing.assert_allclose(
        tsd.renoise(2 * n, n, jnp.full(2, 0.8)), 0.2 * n + 1.6 * n, rtol=1e-6
    )
    # denoise is E[x | x_t]; pred is the matching velocity (the oracle's).
    x_t, t = jnp.array([[0.3, 0.1], [1.0, -2.0]]), jnp.array([0.3, 0.6])
    oracle = _oracle(interp)
    np.testing.assert_allclose(mip.denoise(x_t, t), oracle.posterior_mean_x(x_t, t), rtol=1e-6)
    np.testing.assert_allclose(mip.pred(x_t, t), oracle.velocity(x_t, t), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mip.score(x_t, t), oracle.score(x_t, t), rtol=1e-4, atol=1e-5)


def test_flow_map_score_matches_the_oracle():
    itf = _build("psd", "trig")
    oracle = _oracle(get_interpolant("trig"))
    x_t, t = jnp.array([[0.3, 0.1], [1.0, -2.0]]), jnp.array([0.3, 0.6])
    np.testing.assert_allclose(itf.score(x_t, t), oracle.score(x_t, t), rtol=1e-4, atol=1e-5)


def test_time_domain_and_path_convention():
    itf = _build("psd", "vp")
    dom = itf.time_domain
    assert (dom.noise, dom.data, dom.variable, dom.eps) == (0.0, 1.0, "t", 1e-3)
    a, s = itf.alpha_sigma(jnp.array([1.0 - 1e-3]))
    assert float(a[0]) > 0.99 and float(s[0]) < 0.05  # data coefficient first
    assert itf.two_time and not _build("flow").two_time


def test_loss_scale_and_norm_reach_the_loss():
    base = float(_build("psd", off=0.3).loss(X))
    scaled = float(_build("psd", off=0.3, st=fm.STSampling(loss_scale=2.0)).loss(X))
    np.testing.assert_allclose(scaled, 2 * base, rtol=1e-6)
    l1 = float(_build("psd", off=0.3, st=fm.STSampling(norm="l1")).loss(X))
    assert l1 != pytest.approx(base)


def test_time_scale_is_what_the_network_sees():
    seen = {}

    class Probe(nnx.Module):
        def __init__(self):
            self.rngs = _rngs()

        def __call__(self, x, t, *, r=None, y=None, train=False):
            seen["t"], seen["r"] = t, r
            return x

    itf = fm.MeanFlowMap(Probe(), time_scale=0.05)
    itf.pred(X[:2], jnp.array([0.2, 0.4]), jnp.array([0.6, 1.0]))
    np.testing.assert_allclose(seen["t"], [0.01, 0.02], rtol=1e-6)
    np.testing.assert_allclose(seen["r"], [0.03, 0.05], rtol=1e-6)
    with pytest.raises(InterfaceConfigError, match="time_scale"):
        fm.FlowMatching(Probe(), time_scale=0.0)
