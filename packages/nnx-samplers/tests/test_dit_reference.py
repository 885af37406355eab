"""DiT's paper sampler against facebookresearch/DiT's own code (commit ed81ce2: models.py and
diffusion/ = ADM's gaussian_diffusion.py + respace.py), through the project's converter,
`DDPMInterface`, `ClassifierFreeGuidance(channels=3)` and `DDPMAncestral`. No torch.

`fixtures/dit/` (tools/fixtures/dit.py): a tiny random DiT in the release layout; its forward and
`forward_with_cfg` outputs; `p_sample_loop` trajectories with respacing ("10", "ddim5", "3,2"),
learned range / fixed small / fixed large variances, with and without clip_denoised, and the
injected noise of every step. Compared step by step (each state relative to its scale).
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.dit import load_dit
from nnx_backbones.dit import DiT
from nnx_interfaces.ddpm import DDPMInterface
from nnx_samplers import ClassifierFreeGuidance, DDPMAncestral
from nnx_samplers.guidance import Evaluator, GuidanceSpec
from nnx_samplers.model import Model

FIXTURES = Path(__file__).parent / "fixtures" / "dit"
NAMES = [
    "cfg_learned_range",  # DiT's paper path: respacing, learned range, 3-channel CFG, no clip
    "learned_range_clip",
    "fixed_small_clip_ddim5",
    "fixed_large_sections",
]


@pytest.fixture(scope="module")
def ddpm():
    net = nnx.eval_shape(
        lambda: DiT(
            input_size=8, patch_size=2, in_channels=4, hidden_size=16, depth=2, num_heads=2,
            num_classes=10, learn_sigma=True, rngs=nnx.Rngs(0),
        )
    )  # fmt: skip
    load_dit(net, FIXTURES / "dit_tiny.safetensors")
    return DDPMInterface(net, beta_schedule="linear", prediction="eps", rngs=nnx.Rngs(0))


def nhwc(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, -3, -1)


def release_x0(x, eps, n):
    """ADM's _predict_xstart_from_eps at the 0-based step n (float64)."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    ac = np.cumprod(1.0 - betas)[n][:, None, None, None]
    return np.sqrt(1.0 / ac) * x - np.sqrt(1.0 / ac - 1.0) * eps


def assert_close(got, want, rel=1e-4):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < rel, f"relative error {err:.2e} (max |ref| {np.abs(want).max():.3g})"


def test_ddpm_feeds_the_release_time_index(ddpm):
    """At alphas_cumprod[n] (t = (n + 1)/1000) the release's network sees step n: x̂ must equal
    the release's ε → x_0 conversion of its forward output at n."""
    ref = np.load(FIXTURES / "dit_forward.npz")
    x, n = nhwc(ref["x"]), ref["t"]
    got = ddpm.denoise(jnp.asarray(x), jnp.asarray((n + 1) / 1000.0, jnp.float32), y=ref["y"])
    assert_close(got, release_x0(x, nhwc(ref["out"])[..., :4], n))


def test_three_channel_guidance_is_forward_with_cfg(ddpm):
    """ClassifierFreeGuidance(channels=3) on x̂ = DiT's forward_with_cfg (guided ε on channels
    0–2, conditional ε on channel 3 and conditional variance values)."""
    ref = np.load(FIXTURES / "dit_forward.npz")
    b = 2
    x, n, y = nhwc(ref["cfg_x"])[:b], ref["cfg_t"][:b], ref["cfg_y"][:b]
    out = nhwc(ref["cfg_out"])[:b]
    spec = GuidanceSpec("cfg", float(ref["cfg_scale"]), None, 10, 3)
    f = Evaluator(Model(ddpm), jnp.asarray(y), spec)
    x_hat, v = f.denoise_and_variance(jnp.asarray(x), jnp.asarray((n + 1) / 1000.0, jnp.float32))
    assert_close(x_hat, release_x0(x, out[..., :4], n))
    assert_close(v, out[..., 4:])
    # Guiding all four channels is a different (the standard) CFG.
    all_four = Evaluator(Model(ddpm), jnp.asarray(y), GuidanceSpec("cfg", 4.0, None, 10))
    x_all = all_four.denoise(jnp.asarray(x), jnp.asarray((n + 1) / 1000.0, jnp.float32))
    np.testing.assert_allclose(x_all[..., :3], x_hat[..., :3], rtol=1e-5, atol=1e-4)
    assert np.abs(np.asarray(x_all[..., 3] - x_hat[..., 3])).max() > 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_ancestral_trajectory_matches_p_sample_loop(ddpm, name):
    ref = np.load(FIXTURES / "dit_ddpm.npz")
    g = lambda k: ref[f"{name}/{k}"]  # noqa: E731
    cfg = float(g("cfg_scale"))
    b = g("x_init").shape[0] // (2 if cfg else 1)  # CFG: the conditional half of the 2B batch
    steps = g("timestep_map").size
    noise = jnp.asarray(nhwc(g("noise"))[:, :b])  # the reference's randn_like of every step
    sampler = DDPMAncestral(
        steps, schedule=str(g("respacing")), variance=str(g("variance")),
        clip_denoised=bool(g("clip_denoised")), noise_sampler=lambda key, i, x: noise[i],
    )  # fmt: skip
    # The respaced grid is the release's kept steps n at t = (n + 1)/T.
    np.testing.assert_allclose(
        sampler.grid(ddpm), np.append((g("timestep_map")[::-1] + 1) / 1000.0, 0.0), atol=1e-12
    )
    res = sampler.sample(
        0,
        ddpm,
        jnp.asarray(nhwc(g("x_init"))[:b]),
        y=jnp.asarray(g("y")[:b]),
        guidance=ClassifierFreeGuidance(cfg, channels=3) if cfg else None,
        return_trajectory=True,
    )
    want = nhwc(g("trajectory"))[:, :b]
    assert res.trajectory.shape == want.shape and res.nfe == steps
    for k in range(steps + 1):
        assert_close(res.trajectory[k], want[k])
