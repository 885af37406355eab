"""Autoregressive KV-cache rollout and Diffusion-Forcing noise-matrix sampling.

A tiny random causal VideoDiT: the cached rollout equals the full-sequence forward on the
"autoregressive" noise matrix (and the full forward with `window=` past the training length).
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones import VideoDiT
from nnx_interfaces import DiffusionForcing, EDMInterface, SiTInterface
from nnx_interfaces.forcing import FrameStep
from nnx_samplers import (
    DDIM,
    Autoguidance,
    Autoregressive,
    ClassifierFreeGuidance,
    DDPMAncestral,
    DiffusionForcingSampler,
    DPMSolverPP,
    EDMSampler,
    Euler,
    EulerMaruyama,
    FunctionModel,
    Heun,
    SamplerConfigError,
    scheduling_matrix,
)
from nnx_samplers.autoregressive import network_time
from nnx_samplers.base import resolve_key

KW = dict(input_size=8, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=4)


def _randomise(net, seed=0):
    """Perturb every parameter (adaLN-Zero starts as the identity, which would hide bugs)."""
    state = nnx.state(net, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        a + 0.2 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)
    ]
    nnx.update(net, jax.tree.unflatten(tree, leaves))
    return net


@pytest.fixture(scope="module")
def net():
    return _randomise(VideoDiT(num_frames=4, num_classes=5, rngs=nnx.Rngs(0), **KW))


@pytest.fixture(scope="module")
def sit(net):
    return DiffusionForcing(SiTInterface(net, rngs=nnx.Rngs(0)))


def _noise(frames=4, b=2, seed=1):
    return jax.random.normal(jax.random.key(seed), (b, frames, 8, 8, 3))


Y = jnp.array([1, 3])


@pytest.mark.parametrize(
    ("per_frame", "cfg"), [(Euler(4), None), (Heun(3), ClassifierFreeGuidance(2.5))],
    ids=["euler", "heun-cfg"],
)  # fmt: skip
def test_cached_rollout_equals_the_autoregressive_noise_matrix(sit, per_frame, cfg):
    x0 = _noise()
    ar = Autoregressive(per_frame).sample(0, sit, x0, y=Y, guidance=cfg)
    update = type(per_frame).__name__.lower()
    full = DiffusionForcingSampler(per_frame.num_steps, matrix="autoregressive", update=update)
    ref = full.sample(0, sit, x0, y=Y, guidance=cfg)
    assert ar.x.shape == x0.shape
    np.testing.assert_allclose(ar.x, ref.x, atol=1e-5, rtol=0)
    n = per_frame.nfe(sit)
    assert ar.nfe == 4 * n + 4  # per frame: the sampler's evaluations + one push
    assert ref.nfe == 4 * n  # one (Heun: two) full-sequence calls per matrix row, 4·N rows


@pytest.fixture(scope="module")
def edm(net):
    return DiffusionForcing(EDMInterface(net, sigma_max=10.0, rngs=nnx.Rngs(0)))


def _full_forward(model, window=None):
    """The full-sequence forward (no cache) as a FunctionModel: t `[B, F]`."""
    return FunctionModel(
        model.time_domain,
        velocity=lambda x, t, y=None: model.pred(x, t, y=y, window=window),
        alpha_sigma=model.alpha_sigma,
    )


@pytest.mark.parametrize("window", [None, 2])
def test_rolling_window_equals_the_windowed_full_forward(sit, window):
    """6 frames on a 4-frame network: the rolling cache of W frames (default num_frames − 1 = 3)
    is the full forward with the sliding mask `window=W`."""
    x0 = _noise(frames=6)
    ar = Autoregressive(Euler(3), window=window).sample(0, sit, x0, y=Y)
    w = 3 if window is None else window
    full = DiffusionForcingSampler(3, matrix="autoregressive")
    ref = full.sample(0, _full_forward(sit, window=w), x0, y=Y)
    np.testing.assert_allclose(ar.x, ref.x, atol=1e-5, rtol=0)
    if window is not None:  # the window matters: the unwindowed forward differs
        unwindowed = full.sample(0, _full_forward(sit), x0, y=Y).x
        assert float(jnp.abs(ar.x - unwindowed).max()) > 1e-2


def _manual_rollout(model, sampler, seed, x0, *, y=None, context=None, c=0.0, window=None):
    """The rollout written out: per frame, `sampler.sample` on the full forward over the stored
    frames (at the push level) and the current one, with the documented key scheme."""
    td, b = model.time_domain, x0.shape[0]
    t_push = float(network_time(td, c))
    k_ctx, k_gen = jax.random.split(resolve_key(seed))
    stored = []

    def store(x, k):
        if c != td.data:
            a, s = model.alpha_sigma(jnp.full((b,), c))
            x = a[:, None, None, None] * x + s[:, None, None, None] * jax.random.normal(k, x.shape)
        stored.append(x)

    if context is not None:
        for j, kj in enumerate(jax.random.split(k_ctx, context.shape[1])):
            store(context[:, j], kj)
    out = []
    for k, kk in enumerate(jax.random.split(k_gen, x0.shape[1])):
        k_sample, k_noise = jax.random.split(kk)
        prev = jnp.stack(stored, 1) if stored else x0[:, :0]

        def velocity(x, t, prev=prev):
            video = jnp.concatenate([prev, x[:, None]], 1)
            times = jnp.concatenate([jnp.full(prev.shape[:2], t_push), t[:, None]], 1)
            return model.pred(video, times, y=y, window=window)[:, -1]

        fm = FunctionModel(td, velocity=velocity, alpha_sigma=model.alpha_sigma)
        x = sampler.sample(k_sample, fm, x0[:, k]).x
        store(x, k_noise)
        out.append(x)
    return jnp.stack(out, 1)


MANUAL = {  # (network, per-frame sampler, context frames, context_noise, window)
    # EDM (eps > 0: clean frames at σ_min), churn noise, a clean context frame
    "edm_churn-context": ("video_dit", EDMSampler(3, s_churn=4.0), 1, 0.0, None),
    # stochastic, a renoised context of 2 frames
    "euler_maruyama-context-noised": ("oracle", EulerMaruyama(3), 2, 0.3, None),
    "ddpm-4frames": ("oracle", DDPMAncestral(3, variance="fixed_small"), 0, 0.0, None),
    # a one-frame window, renoised context
    "dpm_solver-window1": ("oracle", DPMSolverPP(3), 1, 0.5, 1),
    "ddim_eta": ("oracle", DDIM(3, eta=0.7), 0, 0.2, None),
}


@pytest.mark.parametrize("case", list(MANUAL), ids=list(MANUAL))
def test_every_per_frame_sampler_matches_the_written_out_rollout(edm, case):
    """Any per-frame sampler, stochastic ones with their documented per-frame keys, context,
    renoised context and windows: the rollout is the written-out loop (the cheap Gaussian oracle
    network where the VideoDiT is not needed)."""
    kind, sampler, k, c, window = MANUAL[case]
    if kind == "video_dit":
        model, shape, y = edm, (2, 2, 8, 8, 3), Y
    else:
        model, shape, y = _oracle_model(0.8), (2, 4, 1, 1, 2), None
    x0 = jax.random.normal(jax.random.key(2), shape)
    context = None if k == 0 else jax.random.normal(jax.random.key(3), (2, k, *shape[2:]))
    ar = Autoregressive(sampler, context_noise=c, window=window)
    got = ar.sample(5, model, x0, y=y, context=context)
    w = model.network.num_frames - 1 if window is None else window  # the cache's default
    want = _manual_rollout(model, sampler, 5, x0, y=y, context=context, c=c, window=w)
    assert bool(jnp.isfinite(got.x).all())
    # EDM: outputs up to ~15 (σ_max = 10) through float32 churn steps
    np.testing.assert_allclose(got.x, want, atol=1e-4 if kind == "video_dit" else 2e-5, rtol=0)
    assert got.nfe == shape[1] * (sampler.nfe(model) + 1) + k


def test_clean_context_resumes_a_rollout():
    """Generating 3 frames, then giving the first 2 as clean context, reproduces frame 3."""
    model = _oracle_model(0.8)
    x0 = jax.random.normal(jax.random.key(0), (2, 3, 1, 1, 2))
    ar = Autoregressive(Heun(4))
    full = ar.sample(0, model, x0).x
    # frame k depends only on the noise of frame k and the frames before it
    resumed = ar.sample(0, model, x0[:, 2:], context=full[:, :2]).x
    np.testing.assert_allclose(resumed[:, 0], full[:, 2], atol=1e-5, rtol=0)
    alone = ar.sample(0, model, x0[:, 2:]).x
    assert float(jnp.abs(alone[:, 0] - full[:, 2]).max()) > 1e-2


def test_cfg_matches_the_guided_per_frame_math(sit):
    """v = v(∅) + w·(v(y) − v(∅)), each branch with its own context (pushed with its label)."""
    w, x0, null = 2.5, _noise(frames=2, seed=4), jnp.full_like(Y, 5)
    context = jax.random.normal(jax.random.key(6), (2, 1, 8, 8, 3))
    ar = Autoregressive(Euler(2))
    got = ar.sample(0, sit, x0, y=Y, context=context, guidance=ClassifierFreeGuidance(w))
    grid, frames = np.linspace(1.0, 0.0, 3), [context[:, 0]]
    for k in range(2):
        x = x0[:, k]
        for i in range(2):
            video = jnp.stack([*frames, x], 1)
            t = jnp.concatenate([jnp.zeros((2, len(frames))), jnp.full((2, 1), grid[i])], 1)
            cond, uncond = sit.pred(video, t, y=Y)[:, -1], sit.pred(video, t, y=null)[:, -1]
            assert float(jnp.abs(cond - uncond).max()) > 1e-2  # the label matters
            x = x + (grid[i + 1] - grid[i]) * (uncond + w * (cond - uncond))
        frames.append(x)
        np.testing.assert_allclose(got.x[:, k], x, atol=1e-5, rtol=0)


def test_clear_errors(sit, net):
    x0, ar = _noise(frames=2), Autoregressive(Euler(2))
    with pytest.raises(SamplerConfigError, match=r"\[B, F, 8, 8, 3\]"):
        ar.sample(0, sit, x0[:, 0], y=Y)
    with pytest.raises(SamplerConfigError, match="context"):
        ar.sample(0, sit, x0, y=Y, context=x0[:, :, :4])
    with pytest.raises(SamplerConfigError, match="batch"):
        ar.sample(0, sit, x0, y=Y, context=x0[:1])
    with pytest.raises(SamplerConfigError, match="labels"):
        ar.sample(0, sit, x0, guidance=ClassifierFreeGuidance(2.0))
    with pytest.raises(SamplerConfigError, match="ClassifierFreeGuidance only"):
        ar.sample(0, sit, x0, y=Y, guidance=Autoguidance(sit, 2.0))
    with pytest.raises(SamplerConfigError, match="outside the model's time domain"):
        Autoregressive(Euler(2), context_noise=1.5).sample(0, sit, x0, y=Y)
    with pytest.raises(SamplerConfigError, match="window"):
        Autoregressive(Euler(2), window=0)
    with pytest.raises(SamplerConfigError, match="per-frame Sampler"):
        Autoregressive("euler")
    with pytest.raises(SamplerConfigError, match="full-sequence"):
        Autoregressive(DiffusionForcingSampler(2))
    non_causal = VideoDiT(num_frames=2, causal=False, num_classes=5, rngs=nnx.Rngs(0), **KW)
    with pytest.raises(SamplerConfigError, match="causal=True"):
        ar.sample(0, DiffusionForcing(SiTInterface(non_causal, rngs=nnx.Rngs(0))), x0, y=Y)
    image = DiffusionForcing(SiTInterface(_NoCache(), rngs=nnx.Rngs(0)))
    with pytest.raises(SamplerConfigError, match="lacks init_cache, step"):
        ar.sample(0, image, x0, y=Y)
    chunked = DiffusionForcing(SiTInterface(_Chunked(), rngs=nnx.Rngs(0)))
    with pytest.raises(SamplerConfigError, match="multiple of 2"):
        ar.sample(0, chunked, _noise(frames=3), y=Y)
    with pytest.raises(SamplerConfigError, match="Interfaces"):
        ar.sample(0, _full_forward(sit), x0, y=Y)
    with pytest.raises(SamplerConfigError, match="noise matrix"):
        DiffusionForcingSampler(2, matrix="diagonal")
    with pytest.raises(SamplerConfigError, match=r"x_init: \[B, F, ...\]"):
        DiffusionForcingSampler(2).sample(0, sit, x0[:, 0, 0, 0])


def test_chunked_rollout_equals_the_prefix_forward():
    """temporal_patch = 2: chunk by chunk through the cache equals Euler on each chunk with the
    full forward over [finished chunks at the data end; this chunk] (written out here)."""
    net2 = _randomise(
        VideoDiT(num_frames=4, temporal_patch=2, num_classes=5, rngs=nnx.Rngs(0), **KW)
    )
    model = DiffusionForcing(SiTInterface(net2, rngs=nnx.Rngs(0)), frames_per_level=2)
    x0, steps = _noise(frames=6), 3
    res = Autoregressive(Euler(steps)).sample(0, model, x0, y=Y)
    assert res.nfe == 3 * steps + 3  # per chunk: the sampler's evaluations + one push
    grid = Euler(steps).grid(model)
    done = x0[:, :0]
    for c in range(3):
        x = x0[:, 2 * c : 2 * c + 2]
        for i in range(steps):
            video = jnp.concatenate([done, x], axis=1)
            times = jnp.concatenate(
                [jnp.zeros((2, done.shape[1])), jnp.full((2, 2), grid[i])], axis=1
            )
            # the default window (num_frames/2 − 1 = 1 chunk) is the full forward's window=1
            v = model.pred(video, times, y=Y, window=1)[:, -2:]
            x = x + (grid[i + 1] - grid[i]) * v
        done = jnp.concatenate([done, x], axis=1)
    np.testing.assert_allclose(np.asarray(res.x), np.asarray(done), atol=2e-5)


class _NoCache(nnx.Module):
    def __call__(self, x, t, *, y=None, train=False):
        return x


class _Chunked(_NoCache):
    temporal_patch = 2

    def init_cache(self, batch, window=None):
        return ()

    def step(self, x, t, cache, *, y=None):
        return x, cache


def test_frame_step_runs_the_base_formulas_on_one_frame(edm, net):
    """FrameStep: EDM's own denoise/pred/score on one cached step equal the full forward's last
    frame (the cache holding frame 0 at σ = 1)."""
    x = _noise(frames=2, seed=7)
    cache = edm.frame_step(edm.init_cache(2)).push(x[:, 0], jnp.ones(2), y=Y)
    step = edm.frame_step(cache)
    assert isinstance(step, FrameStep)
    t = jnp.full((2, 2), 1.0).at[:, 1].set(0.7)
    for name in ("denoise", "pred", "score"):
        got = getattr(step, name)(x[:, 1], t[:, 1], y=Y)
        want = getattr(edm, name)(x, t, y=Y)[:, 1]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=name)


# --- a closed-form Gaussian-video oracle ---------------------------------------------------------


TRACES = {"step": 0}  # GaussianVideoOracle.step traces (the jit test)


class GaussianVideoOracle(nnx.Module):
    """The exact velocity network of Gaussian videos on the SiT path, with the KV-cache protocol.

    Videos `[F, D]` (frames of shape `[1, 1, D]`) are x ~ N(μ, K ⊗ S): K_ij = ρ^|i−j| (a
    stationary AR(1) chain over frames, any length: given the previous frame, earlier ones tell
    nothing), S the channel covariance. Frame j is seen at its own level t_j:
    z_j = (1 − t_j)·x_j + t_j·n_j, i.e. z = A·x + T·n. Frame k's output is the exact velocity
    E[n_k − x_k | z_V] over the visible frames V (causal: frames ≤ k, the last `window` + 1 of
    them; joint: all frames):

        C = A·Σ_V·A + T²,   E[x | z] = μ + Σ_V·A·C⁻¹(z − A·μ),   E[n | z] = T·C⁻¹(z − A·μ).

    An empty cache slot is a frame at pure noise (t = 1, z = 0): it tells nothing.
    """

    def __init__(self, rho, mean, chan_cov, *, num_frames=3, causal=True, num_classes=None):
        self.rho, self.causal, self.num_frames = float(rho), causal, num_frames
        self.mean = tuple(map(float, mean))  # static (hashable) attributes
        self.chan_cov = tuple(tuple(map(float, row)) for row in chan_cov)
        self.num_classes = num_classes

    def cov(self, frames) -> jax.Array:
        """Σ over the frames with indices `frames` (flattened frame-major, channels inner)."""
        i = np.asarray(frames)
        k = self.rho ** np.abs(i[:, None] - i[None, :])
        return jnp.asarray(np.kron(k, np.asarray(self.chan_cov)), jnp.float32)

    def _velocity(self, z, t, frames):
        """E[n_last − x_last | z] for frames (indices `frames`) z `[B, V, D]` at levels `[B, V]`."""
        b, v, d = z.shape
        a = jnp.repeat(1.0 - t, d, axis=1)  # diagonal of A, [B, V·D]
        s = jnp.repeat(t, d, axis=1)  # diagonal of T
        cov, mean = self.cov(frames), jnp.tile(jnp.asarray(self.mean), v)
        c = a[:, :, None] * cov[None] * a[:, None, :] + jax.vmap(jnp.diag)(s**2)
        w = jnp.linalg.solve(c, (z.reshape(b, v * d) - a * mean)[..., None])[..., 0]
        ex = mean + jnp.einsum("ij,bj->bi", cov, a * w)
        return (s * w - ex)[:, -d:]

    def __call__(self, x, t, *, y=None, train=False, window=None):
        b, frames = x.shape[:2]
        z, out = x.reshape(b, frames, -1), []
        t = jnp.broadcast_to(t if t.ndim == 2 else t[:, None], (b, frames))
        for k in range(frames):
            if self.causal:
                lo = 0 if window is None else max(0, k - window)
                idx = np.arange(lo, k + 1)
            else:  # all frames visible, frame k last
                idx = np.array([j for j in range(frames) if j != k] + [k])
            out.append(self._velocity(z[:, idx], t[:, idx], idx))
        return jnp.stack(out, axis=1).reshape(x.shape)

    def init_cache(self, batch, window=None):
        window = max(self.num_frames - 1, 1) if window is None else window
        d = len(self.mean)
        return (jnp.zeros((batch, window, d)), jnp.ones((batch, window)))

    def step(self, x, t, cache, *, y=None):
        TRACES["step"] += 1
        zc, tc = cache
        z = jnp.concatenate([zc, x.reshape(x.shape[0], 1, -1)], axis=1)
        tt = jnp.concatenate([tc, t[:, None]], axis=1)
        out = self._velocity(z, tt, np.arange(z.shape[1])).reshape(x.shape)
        return out, (z[:, 1:], tt[:, 1:])


def _oracle_model(rho, *, causal=True, num_frames=3):
    """DiffusionForcing(SiT) on the Gaussian-video oracle: frames `[1, 1, 2]`."""
    oracle = GaussianVideoOracle(
        rho, [0.5, -0.3], [[1.0, 0.4], [0.4, 0.6]], num_frames=num_frames, causal=causal
    )
    return DiffusionForcing(SiTInterface(oracle, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("per_frame", [Euler(6), Heun(4)], ids=["euler", "heun"])
def test_independent_frames_rollout_equals_full_sequence_sampling(per_frame):
    """Block-diagonal covariance (ρ = 0): a frame's velocity depends on that frame only, so the
    rollout and full-sequence sampling (every frame at one level) agree sample for sample."""
    model = _oracle_model(0.0)
    x0 = jax.random.normal(jax.random.key(0), (8, 4, 1, 1, 2))
    ar = Autoregressive(per_frame).sample(0, model, x0)
    update = type(per_frame).__name__.lower()
    full = DiffusionForcingSampler(per_frame.num_steps, matrix="full_sequence", update=update)
    np.testing.assert_allclose(ar.x, full.sample(0, model, x0).x, atol=1e-5, rtol=0)


def _moments_error(x, model, frames):
    flat = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    cov = np.asarray(model.network.cov(np.arange(frames)))
    mean = np.tile(model.network.mean, frames)
    return np.abs(np.cov(flat.T) - cov).max(), np.abs(flat.mean(0) - mean).max()


@pytest.mark.slow
def test_correlated_frames_rollout_and_noise_matrices_match_the_covariance():
    """Frames correlated over time (ρ = 0.8, 4 frames × 2 channels): the sample mean and
    covariance of 8192 videos from the same fixed noise match μ and Σ = K ⊗ S.

    Tolerance 0.06 on each covariance entry: with N = 8192 samples an entry's sampling standard
    deviation is sqrt((Σ_ii·Σ_jj + Σ_ij²)/N) ≤ sqrt(2/N) = 0.016, so the max over the 36 distinct
    entries stays below ~3.5σ = 0.055 for exact samples (measured: 0.02 with Heun(16), whose
    discretization error is ~1e-3 here); EulerMaruyama(64) adds an O(h) bias (measured 0.04 in
    total). The mean: σ/sqrt(N) ≤ 0.011 per entry, tolerance 0.04.

    With a causal network, only schedules where every later frame is pure noise while a frame
    moves (the rollout, the "autoregressive" matrix) are exact; full-sequence and pyramid
    schedules need the joint (non-causal) per-frame-level denoiser — with the causal one they
    are measurably off (0.3–0.4), which also shows this test can fail.
    """
    frames, causal, joint = 4, _oracle_model(0.8, num_frames=4), None
    x0 = jax.random.normal(jax.random.key(0), (8192, frames, 1, 1, 2))
    for per_frame, tol in ((Heun(16), 0.06), (EulerMaruyama(64), 0.06)):
        cov_err, mean_err = _moments_error(Autoregressive(per_frame).sample(1, causal, x0).x,
                                           causal, frames)  # fmt: skip
        assert cov_err < tol and mean_err < 0.04, (per_frame, cov_err, mean_err)
    joint = _oracle_model(0.8, causal=False, num_frames=4)
    for matrix in ("full_sequence", "pyramid", "autoregressive"):
        res = DiffusionForcingSampler(16, matrix=matrix, update="heun").sample(0, joint, x0)
        cov_err, mean_err = _moments_error(res.x, joint, frames)
        assert cov_err < 0.06 and mean_err < 0.04, (matrix, cov_err, mean_err)
    biased = DiffusionForcingSampler(16, matrix="pyramid", update="heun").sample(0, causal, x0)
    assert _moments_error(biased.x, causal, frames)[0] > 0.2


def test_one_jitted_program_without_recompiling():
    """The rollout is one program: the second call (new noise and seed) traces nothing."""
    model = _oracle_model(0.5)
    ar = Autoregressive(Heun(3))
    x0 = jax.random.normal(jax.random.key(0), (4, 3, 1, 1, 2))
    ctx = jax.random.normal(jax.random.key(1), (4, 2, 1, 1, 2))
    first = ar.sample(0, model, x0, context=ctx)
    traced = TRACES["step"]
    assert traced > 0
    second = ar.sample(jax.random.key(7), model, x0 + 1.0, context=ctx)
    assert TRACES["step"] == traced  # cached program, same shapes: no retrace
    assert float(jnp.abs(first.x - second.x).max()) > 1e-3


def test_noise_matrix_moves_only_frames_whose_level_changes():
    """Row by row, a frame whose level does not change is bit-for-bit unchanged; the
    trajectory has one state per matrix row."""
    model = _oracle_model(0.8, num_frames=4)
    x0 = jax.random.normal(jax.random.key(0), (2, 4, 1, 1, 2))
    for matrix in ("pyramid", "autoregressive", "full_sequence"):
        sampler = DiffusionForcingSampler(3, matrix=matrix, update="ddim")
        res = sampler.sample(0, model, x0, return_trajectory=True)
        levels = sampler.levels(4)
        traj = np.asarray(res.trajectory)
        assert traj.shape[0] == levels.shape[0]
        assert res.nfe == levels.shape[0] - 1
        same = levels[1:] == levels[:-1]  # [M, F]
        moved = np.abs(traj[1:] - traj[:-1]).max(axis=(1, 3, 4, 5))  # [M, F]
        assert (moved[same] == 0).all() and (moved[~same] > 0).all()
        np.testing.assert_array_equal(traj[-1], res.x)


def test_scheduling_matrices():
    """The reference's conventions (also pinned by the reference fixture test): level N is
    noise, 0 clean; the pyramid lags ⌊f·u⌋ levels per frame."""
    np.testing.assert_array_equal(
        scheduling_matrix("full_sequence", 2, 2), [[2, 2], [1, 1], [0, 0]]
    )
    np.testing.assert_array_equal(
        scheduling_matrix("pyramid", 2, 3), [[2, 2, 2], [1, 2, 2], [0, 1, 2], [0, 0, 1], [0, 0, 0]]
    )
    ar = scheduling_matrix("autoregressive", 2, 2)
    np.testing.assert_array_equal(ar, [[2, 2], [1, 2], [0, 2], [0, 1], [0, 0]])


def test_scheduling_matrices_match_the_reference_implementation():
    """buoyancy99/diffusion-forcing's own `_generate_scheduling_matrix` (fixture made by
    tools/fixtures/diffusion_forcing_matrix.py): full-sequence, pyramid, autoregressive."""
    path = Path(__file__).parent / "fixtures" / "diffusion_forcing_matrix.npz"
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        assert len(meta["configs"]) == 18
        for (kind, n, f, u), key in zip(meta["configs"], meta["keys"], strict=True):
            want = data[key]
            np.testing.assert_array_equal(scheduling_matrix(kind, n, f, u), want, err_msg=key)
            sampler = DiffusionForcingSampler(n, matrix=kind, uncertainty_scale=u)
            np.testing.assert_array_equal(sampler.levels(f), want, err_msg=key)


@pytest.mark.parametrize("per_frame", [Heun(3), DDIM(3)], ids=["heun", "ddim"])
def test_edm_domain_rollout_equals_the_autoregressive_noise_matrix(per_frame):
    """EDM's time domain (eps = σ_min > 0, data at σ = 0): clean frames are given to the network
    at σ_min in both samplers, and Heun's last step to σ = 0 is an Euler step in both."""
    oracle = GaussianVideoOracle(0.8, [0.5, -0.3], [[1.0, 0.4], [0.4, 0.6]], num_frames=3)
    model = DiffusionForcing(EDMInterface(oracle, sigma_max=5.0, rngs=nnx.Rngs(0)))
    x0 = 5.0 * jax.random.normal(jax.random.key(0), (4, 3, 1, 1, 2))
    ar = Autoregressive(per_frame).sample(0, model, x0)
    update = type(per_frame).__name__.lower()
    full = DiffusionForcingSampler(3, matrix="autoregressive", update=update)
    np.testing.assert_allclose(ar.x, full.sample(0, model, x0).x, atol=1e-5, rtol=1e-5)
