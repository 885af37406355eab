"""Deterministic samplers against exact answers: dx/dt = x, and Gaussian data with the exact
velocity, where the final-sample error vs N must show the solver's order (log–log slope)."""

import jax
import jax.numpy as jnp
import numpy as np

from nnx_interfaces.base import TimeDomain
from nnx_interfaces.oracles import GaussianOracle, linear_path, ve_path
from nnx_samplers import DDIM, DPMSolverPP, EDMSampler, Euler, FunctionModel, Heun

EXP = FunctionModel(TimeDomain(noise=0.0, data=1.0), velocity=lambda x, t: x)
SIT = TimeDomain(noise=1.0, data=0.0)
EDM = TimeDomain(noise=80.0, data=0.0, variable="sigma", eps=0.002)
B = 32


def _slope(ns, errs):
    return np.polyfit(np.log(ns), np.log(errs), 1)[0]


def test_euler_on_exponential_gives_compound_interest_and_heun_is_second_order():
    x0 = jnp.ones((1, 1))
    for n in (4, 16, 64):
        e = Euler(n).sample(0, EXP, x0).x[0, 0]
        np.testing.assert_allclose(e, (1 + 1 / n) ** n, rtol=2e-6)
        heun = Heun(n).sample(0, EXP, x0)
        # Heun's step factor for x' = x is 1 + h + h²/2; its error vs e is e/(6N²) + O(N⁻³)
        np.testing.assert_allclose(heun.x[0, 0], (1 + 1 / n + 0.5 / n**2) ** n, rtol=2e-6)
        assert abs(float(heun.x[0, 0]) - np.e) * n**2 < np.e / 6 * 1.1
        assert heun.nfe == 2 * n


def _final_errors(sampler_cls, model, oracle, x0, ns, **kw):
    """Max |x_N − Φ(x_0)|, Φ the exact ODE map from the grid's start to its end."""
    errs = []
    for n in ns:
        res = sampler_cls(n, **kw).sample(0, model, x0)
        t0, t1 = (jnp.full((x0.shape[0],), v) for v in (res.times[0], res.times[-1]))
        errs.append(float(jnp.max(jnp.abs(res.x - oracle.ode_map(x0, t0, t1)))))
    return errs


def test_convergence_order_on_the_linear_path():
    o = GaussianOracle(jnp.array([0.7, -1.3]), 0.4, linear_path)
    m = FunctionModel(SIT, velocity=o.velocity, alpha_sigma=linear_path)
    x0 = jax.random.normal(jax.random.key(0), (B, 2))
    ns = (16, 32, 64)
    assert abs(_slope(ns, _final_errors(Euler, m, o, x0, ns)) + 1) < 0.1
    assert abs(_slope(ns, _final_errors(Heun, m, o, x0, ns)) + 2) < 0.2
    # DPM-Solver++ on [0.9, 0.1]: at the α = 0 / σ = 0 ends λ is infinite and a uniform-t grid
    # takes λ-steps of size ~log 2 there for every N, which delays the asymptotic rate past N = 128
    inner = FunctionModel(TimeDomain(0.9, 0.1), velocity=o.velocity, alpha_sigma=linear_path)
    assert abs(_slope(ns, _final_errors(DPMSolverPP, inner, o, x0, ns, order=2)) + 2) < 0.25


def test_convergence_order_on_the_ve_path_with_the_rho_schedule():
    # eps > 0: the grid runs σ_max … σ_min then 0; the last step is first order from σ_min, so
    # the error is measured at σ_min, against the exact map σ_max → σ_min
    o = GaussianOracle(0.5, 0.4, ve_path)
    m = FunctionModel(EDM, velocity=o.velocity, alpha_sigma=ve_path)
    x0 = 80.0 * jax.random.normal(jax.random.key(1), (B, 2))
    ns = (16, 32, 64)
    for cls, kw, order in ((Euler, {}, 1), (Heun, {}, 2), (DPMSolverPP, {"order": 2}, 2)):
        errs = []
        for n in ns:
            res = cls(n, schedule="edm", **kw).sample(0, m, x0, return_trajectory=True)
            ref = o.ode_map(x0, jnp.full((B,), 80.0), jnp.full((B,), res.times[-2]))
            errs.append(float(jnp.max(jnp.abs(res.trajectory[-2] - ref))))
        assert abs(_slope(ns, errs) + order) < 0.25, (cls.__name__, errs)


def test_dpm_solver_3m_is_third_order_with_a_refined_start():
    # Multistep solvers start at order 1, 2: one O(h²) start step caps the global order at 2
    # unless the first steps are short (h² here), so the grid is uniform in λ after a refined
    # start. The interval [0.9, 0.1] keeps λ finite.
    o = GaussianOracle(0.5, 0.4, linear_path)
    m = FunctionModel(TimeDomain(noise=0.9, data=0.1), velocity=o.velocity, alpha_sigma=linear_path)
    x0 = jax.random.normal(jax.random.key(2), (B, 2))
    l0, l1 = np.log(0.1 / 0.9), np.log(0.9 / 0.1)
    ns, errs = (16, 32, 64), []
    for n in ns:
        h = (l1 - l0) / n
        lam = np.concatenate([[l0, l0 + h**2 / 4], np.linspace(l0 + h**2 / 2, l1, n + 1)])
        t = 1.0 / (1.0 + np.exp(lam))
        t[0], t[-1] = 0.9, 0.1
        res = DPMSolverPP(t.size - 1, schedule=t, order=3).sample(0, m, x0)
        ref = o.ode_map(x0, jnp.full((B,), 0.9), jnp.full((B,), 0.1))
        errs.append(float(jnp.max(jnp.abs(res.x - ref))))
    assert _slope(ns, errs) < -2.8, errs


def test_ddim_equals_first_order_dpm_solver():
    o = GaussianOracle(jnp.array([0.7, -1.3]), 0.4, linear_path)
    m = FunctionModel(SIT, velocity=o.velocity, alpha_sigma=linear_path)
    x0 = jax.random.normal(jax.random.key(3), (B, 2))
    a = DDIM(10, schedule="cosine").sample(0, m, x0)
    b = DPMSolverPP(10, schedule="cosine", order=1).sample(0, m, x0)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-5, atol=1e-6)
    assert a.nfe == b.nfe == 10


def test_edm_sampler_without_churn_is_heun_on_the_rho_grid():
    o = GaussianOracle(0.5, 0.4, ve_path)
    m = FunctionModel(EDM, velocity=o.velocity, alpha_sigma=ve_path)
    x0 = 80.0 * jax.random.normal(jax.random.key(4), (8, 3))
    a = EDMSampler(18).sample(0, m, x0)
    b = Heun(18, schedule="edm").sample(0, m, x0)
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    assert a.nfe == b.nfe == 35  # 17 Heun steps + the Euler step σ_min → 0
