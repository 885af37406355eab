"""Golden trajectories from k-diffusion and NVlabs/edm2 (tools/fixtures/edm_samplers.py).

The model is the exact denoiser of Gaussian data on x_σ = x + σ·n; the references and our
samplers get the same initial and churn noise. Every model call (input x and σ, in order) and the
output must agree to rel 1e-4 of the largest magnitude (float32 here, float64 there): Euler,
Heun, DPM-Solver++ 2M against k-diffusion, and the EDM sampler with and without churn against
both k-diffusion's `sample_heun` and edm2's `edm_sampler`.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnx_interfaces.base import TimeDomain
from nnx_interfaces.oracles import ve_path
from nnx_samplers import DPMSolverPP, EDMSampler, Euler, FunctionModel, Heun

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "edm_samplers.npz")
META = json.loads(str(FIXTURE["meta"]))
MADE = META["_made_by"]
MU = np.asarray(MADE["data"]["mean"], np.float32)
STD = MADE["data"]["std"]
TD = TimeDomain(MADE["grid"]["sigma_max"], 0.0, "sigma", MADE["grid"]["sigma_min"])


def _recording_model():
    calls = []

    def record(x, t):
        calls.append((np.asarray(x), float(np.asarray(t)[0])))

    def denoise(x, t):
        jax.debug.callback(record, x, t, ordered=True)
        w = (STD**2 / (STD**2 + t**2))[:, None]
        return MU + w * (x - MU)

    return FunctionModel(TD, denoise=denoise, alpha_sigma=ve_path), calls


def _sampler(name):
    kw = {k: v for k, v in META[name].items() if k.startswith("s_")}
    n = META[name]["num_steps"]
    fn = META[name]["k_diffusion"]
    if fn == "sample_euler":
        return Euler(n, schedule="edm")
    if fn == "sample_dpmpp_2m":
        return DPMSolverPP(n, order=2, schedule="edm")
    noise = jnp.asarray(FIXTURE[f"{name}/noise"], jnp.float32)
    return EDMSampler(
        n,
        s_churn=kw.get("s_churn", 0.0),
        s_min=kw.get("s_tmin", 0.0),
        s_max=kw.get("s_tmax", float("inf")),
        s_noise=kw.get("s_noise", 1.0),
        noise_sampler=lambda key, i, x: noise[i],
    )


def _close(ours, ref, what):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    err = float(np.abs(ours - ref).max())
    assert err <= 1e-4 * float(np.abs(ref).max()), (what, err, float(np.abs(ref).max()))


CONFIGS = [k for k in META if not k.startswith("_")]


@pytest.mark.parametrize("name", CONFIGS)
def test_sampler_matches_the_reference_call_by_call(name):
    model, calls = _recording_model()
    x_init = jnp.asarray(FIXTURE[f"{name}/x_init"], jnp.float32)
    out = _sampler(name).sample(0, model, x_init).x
    jax.effects_barrier()
    ref_x, ref_sigma = FIXTURE[f"{name}/calls_x"], FIXTURE[f"{name}/calls_sigma"]
    assert len(calls) == len(ref_sigma), (len(calls), len(ref_sigma))
    for i, ((x, sigma), rx, rs) in enumerate(zip(calls, ref_x, ref_sigma, strict=True)):
        assert abs(sigma - rs) <= 1e-6 * rs, (i, sigma, rs)
        _close(x, rx, f"call {i} (σ = {rs:.4g})")
    _close(out, FIXTURE[f"{name}/out"], "output")
    if f"{name}/edm2_out" in FIXTURE:  # edm2's edm_sampler agrees with k-diffusion's sample_heun
        _close(out, FIXTURE[f"{name}/edm2_out"], "output vs edm2")
        for i, (x, _) in enumerate(calls):
            _close(x, FIXTURE[f"{name}/edm2_calls_x"][i], f"call {i} vs edm2")


def test_heun_without_churn_is_the_same_program_result():
    """EDMSampler with S_churn = 0 and Heun on the ρ-grid are one algorithm."""
    model, _ = _recording_model()
    x_init = jnp.asarray(FIXTURE["heun/x_init"], jnp.float32)
    a = EDMSampler(12).sample(0, model, x_init).x
    b = Heun(12, schedule="edm").sample(0, model, x_init).x
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    _close(b, FIXTURE["heun/out"], "Heun output")


# --- EDM's own general-path sampler on the VP path (tools/fixtures/edm_vp_sampler.py) ----------
VP_FIX = np.load(Path(__file__).parent / "fixtures" / "edm_vp_sampler.npz")
VP_META = json.loads(str(VP_FIX["meta"]))
VP = VP_META["_made_by"]["vp"]


def vp_path(t):
    """x_t = α·x + σ·n with α = 1/sqrt(1 + ς²), ς(t)² = exp(½β_d t² + β_min t) − 1 (edm's VP)."""
    xp = np if isinstance(t, np.ndarray) else jnp
    e = 0.5 * VP["beta_d"] * t**2 + VP["beta_min"] * t
    return xp.exp(-0.5 * e), xp.sqrt(-xp.expm1(-e))


@pytest.mark.parametrize("name", [k for k in VP_META if not k.startswith("_")])
def test_edm_sampler_on_the_vp_path_matches_edm_ablation_sampler(name):
    """Churn of the VE-equivalent level σ/α (t̂ beyond t = 1 on the first step) and the noise
    raise α̂/α·x + sqrt(ς̂² − ς²)·α̂·ε, as Karras et al.'s own general sampler, call by call."""
    calls = []

    def record(x, t):
        calls.append((np.asarray(x), float(np.asarray(t)[0])))

    def denoise(x, t):  # edm's net(x/α, ς): the VE denoiser of Gaussian data
        a, s = vp_path(t)
        x_ve, level = x / a[:, None], s / a
        jax.debug.callback(record, x_ve, level, ordered=True)
        return MU + (STD**2 / (STD**2 + level**2))[:, None] * (x_ve - MU)

    times = VP_FIX[f"{name}/times"]
    td = TimeDomain(1.0, 0.0, "t", float(times[-2]))
    model = FunctionModel(td, denoise=denoise, alpha_sigma=vp_path)
    cfg = VP_META[name]
    noise = jnp.asarray(VP_FIX[f"{name}/noise"], jnp.float32)
    sampler = EDMSampler(
        cfg["num_steps"],
        schedule=times,
        s_churn=cfg["s_churn"],
        s_min=cfg["s_min"],
        s_max=cfg["s_max"],
        s_noise=cfg["s_noise"],
        noise_sampler=lambda key, i, x: noise[i],
    )
    if cfg["s_churn"] > 0 and cfg["s_min"] == 0:
        assert sampler.churn_plan(model).t_hat[0] > 1.0  # σ̂ > σ_max: beyond the domain
    out = sampler.sample(0, model, jnp.asarray(VP_FIX[f"{name}/x_init"], jnp.float32)).x
    jax.effects_barrier()
    ref_x, ref_sigma = VP_FIX[f"{name}/calls_x"], VP_FIX[f"{name}/calls_sigma"]
    assert len(calls) == len(ref_sigma)
    for i, ((x, sigma), rx, rs) in enumerate(zip(calls, ref_x, ref_sigma, strict=True)):
        assert abs(sigma - rs) <= 1e-4 * rs, (i, sigma, rs)
        _close(x, rx, f"call {i} (σ = {rs:.4g})")
    _close(out, VP_FIX[f"{name}/out"], "output")
