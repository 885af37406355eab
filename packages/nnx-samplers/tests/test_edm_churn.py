"""EDM's churn (Karras et al. 2022, Algorithm 2) in every configuration, on every kind of path.

Algorithm 2 on VE: σ̂ = (1 + γ)σ unclipped (σ̂_0 > σ_max), churn on the last step too, and steps
with γ = 0 exactly deterministic. On a general affine path the noise raise must map p_t onto
p_t̂ exactly (closed form: α̂ = scale·α, σ̂² = scale²σ² + std²) and stay finite where α = 0 at the
noise end (SiT, MeanFlow, linear and trigonometric flows); the samples must have the Gaussian
data's moments. The k-diffusion / edm2 trajectories themselves are pinned in test_reference.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_interfaces.base import TimeDomain
from nnx_interfaces.flowmaps.oracle_nets import ExactNet
from nnx_interfaces.meanflow import MeanFlowInterface
from nnx_interfaces.oracles import GaussianOracle, linear_path, ve_path
from nnx_interfaces.sit import SiTInterface
from nnx_samplers import EDMSampler, FunctionModel, Heun

MEAN, STD = 0.7, 0.4
VE = TimeDomain(80.0, 0.0, "sigma", 0.002)


def trig_path(t):
    return jnp.cos(t), jnp.sin(t)


def _ve_model():
    o = GaussianOracle(MEAN, STD, ve_path)
    return FunctionModel(VE, denoise=o.posterior_mean_x, alpha_sigma=ve_path), o


@pytest.mark.parametrize(
    ("kw", "window"),
    [
        (dict(s_churn=10.0), None),  # every step churns, σ_max and σ_min included
        (dict(s_churn=40.0, s_min=0.05, s_max=50.0, s_noise=1.003), (0.05, 50.0)),  # EDM ImageNet
        (dict(s_churn=1000.0, s_noise=0.5), None),  # γ capped at √2 − 1
        (dict(s_churn=0.0), (1.0, 0.0)),  # no churn at all
    ],
)
def test_churn_plan_is_algorithm_2_on_ve(kw, window):
    m, _ = _ve_model()
    s = EDMSampler(18, **kw)
    t = s.grid(m)[:-1]
    p = s.churn_plan(m)
    lo, hi = window or (0.0, np.inf)
    g = min(kw["s_churn"] / 18, np.sqrt(2) - 1)
    want_gamma = np.where((t >= lo) & (t <= hi) & (kw["s_churn"] > 0), g, 0.0)
    np.testing.assert_allclose(p.gamma, want_gamma, rtol=1e-12)
    np.testing.assert_allclose(p.t_hat, t * (1 + want_gamma), rtol=1e-12)  # unclipped
    np.testing.assert_allclose(p.scale, 1.0, rtol=1e-12)
    want_std = np.sqrt(p.t_hat**2 - t**2) * kw.get("s_noise", 1.0)
    np.testing.assert_allclose(p.noise_std, want_std, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(p.churn, want_gamma > 0)
    if window is None:
        assert p.t_hat[0] > 80.0 and p.churn[0] and p.churn[-1]  # (a) and (b)


@pytest.mark.parametrize("noise", ["random", "nan"])
def test_steps_without_churn_are_exactly_heun(noise):
    """Churn only at step 14 of 18: steps 0–13 are Heun's (no sqrt(σ̂² − σ²) residue), even when
    the noise drawn on those steps is NaN (the raise is a select, not a product with 0)."""
    m, _ = _ve_model()
    x0 = 80.0 * jax.random.normal(jax.random.key(0), (8, 16))
    heun = Heun(18, schedule="edm").sample(0, m, x0, return_trajectory=True)
    t14 = float(heun.times[14])
    kw = {}
    if noise == "nan":
        kw["noise_sampler"] = lambda key, i, x: jnp.where(i == 14, 0.3, jnp.nan) * x
    s = EDMSampler(18, s_churn=30.0, s_min=t14, s_max=t14, **kw)
    res = s.sample(1, m, x0, return_trajectory=True)
    np.testing.assert_allclose(res.trajectory[:15], heun.trajectory[:15], rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(res.trajectory[15] - heun.trajectory[15]))) > 1e-3
    assert bool(jnp.all(jnp.isfinite(res.x)))
    assert s.churn_plan(m).churn.tolist() == [i == 14 for i in range(18)]


class _MeanFlowOracle(nnx.Module):
    """Two-time 'network' returning the exact average velocity; receives r_in = t − r."""

    def __init__(self, oracle):
        self.oracle, self.rngs = oracle, nnx.Rngs(0)

    def __call__(self, x, t, *, r=None, y=None, train=False):
        return self.oracle.average_velocity(x, t, t - r)


def _path_model(name):
    """(model, oracle, x_init) for Gaussian data on each kind of path."""
    key = jax.random.key(7)
    if name == "ve":
        m, o = _ve_model()
        return m, o, o.sample_marginal(key, jnp.full((128,), 80.0), (128, 128))
    path = trig_path if name == "trig" else linear_path
    o = GaussianOracle(MEAN, STD, path)
    td = TimeDomain(np.pi / 2 if name == "trig" else 1.0, 0.0)
    if name == "sit":
        m = SiTInterface(ExactNet(o, "velocity", rngs=nnx.Rngs(0)), "uniform", t_shift_base=None)
    elif name == "meanflow":
        m = MeanFlowInterface(_MeanFlowOracle(o), "uniform", t_shift_base=None)
    else:
        m = FunctionModel(td, velocity=o.velocity, alpha_sigma=path)
    return m, o, o.sample_marginal(key, jnp.full((128,), td.noise), (128, 128))


PATHS = ["ve", "linear", "trig", "sit", "meanflow"]


@pytest.mark.parametrize("name", PATHS)
def test_noise_raise_maps_p_t_onto_p_t_hat_exactly(name):
    """x̂ = scale·x + std·ε with x ~ p_t = N(αμ, α²s² + σ²) is p_t̂ exactly: scale·α = α̂ and
    scale²σ² + std² = σ̂²; t̂ raises σ/α by 1 + γ (EDM's ablation sampler) wherever α(t) ≠ 0."""
    m, o, _ = _path_model(name)
    s = EDMSampler(12, s_churn=6.0, schedule="edm" if name == "ve" else "uniform")
    p = s.churn_plan(m)
    t = s.grid(m)[:-1]
    a, sig = (np.asarray(v, np.float64) for v in o.alpha_sigma(t))
    a_hat, sig_hat = (np.asarray(v, np.float64) for v in o.alpha_sigma(p.t_hat))
    c = p.churn
    assert c.sum() >= 10, p
    np.testing.assert_allclose(p.scale[c] * a[c], a_hat[c], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.scale**2 * sig**2 + p.noise_std**2, sig_hat**2, rtol=1e-6)
    far = c & (np.abs(a) > 1e-6)
    ratio = (sig_hat[far] / a_hat[far]) / (sig[far] / a[far])
    np.testing.assert_allclose(ratio, 1 + p.gamma[far], rtol=1e-5)
    if name != "ve":  # the first step starts at α = 0: pure noise, nothing to raise
        assert not c[0] and p.t_hat[0] == t[0]
        assert np.all(p.t_hat <= m.time_domain.noise + 1e-12)


@pytest.mark.parametrize("name", PATHS)
def test_churn_samples_have_the_data_moments_on_every_path(name):
    m, _, x0 = _path_model(name)
    # VE carries an O(1/N) variance bias from the churn (0.179 at N = 32, 0.166 at 64, 0.162 at 128)
    n = 64 if name == "ve" else 32
    s = EDMSampler(n, s_churn=20.0, schedule="edm" if name == "ve" else "uniform")
    x = np.asarray(s.sample(3, m, x0).x, np.float64).reshape(-1)
    assert np.isfinite(x).all()
    se_mean, se_var = STD / np.sqrt(x.size), STD**2 * np.sqrt(2.0 / x.size)
    assert abs(x.mean() - MEAN) < 4 * se_mean, (x.mean(), se_mean)
    assert abs(x.var() - STD**2) < 4 * se_var + 4e-3, (x.var(), se_var)
