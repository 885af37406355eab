"""Autoregressive video rollout with a KV cache: frame by frame with any per-frame sampler.

For a causal video model (Diffusion Forcing, Chen et al. 2024; Self Forcing, Huang et al. 2025)
and noise x_init = (n¹, …, n^F) `[B, F, H, W, C]`, with c the context level (`context_noise`,
a time in the model's domain) and (α, σ) the model's path:

    cache ← push(ĉ^j, c) for every context frame j        ĉ^j = α(c)·x_ctx^j + σ(c)·ε^j
    for k = 1 … F:                                        (one `lax.scan` over frames)
        x̂^k   = sampler.integrate(n^k) with  pred(x, t) = the interface's pred of
                 network.step(c_in(t)·x, c_noise(t), cache)     (frame k sees the cache + itself)
        cache ← push(α(c)·x̂^k + σ(c)·ε^k, c)                   (one more step, its cache kept)

ε is fresh noise (none when c is the data end, "clean context"). The per-frame sampler is any
`Sampler` (Euler, Heun, EDMSampler, DDIM, DPMSolverPP, EulerMaruyama, DDPMAncestral): its own
`integrate` runs inside the scan body with the model evaluation above, so every step rule is
the sampler's own. The cache is a rolling window of `window` context frames (default: the
network's, num_frames − 1), so F may exceed the training length. With a clean context and
W ≥ F − 1 this equals the full-sequence forward on the "autoregressive" noise matrix
(`DiffusionForcingSampler`); with a smaller window it equals the full forward with `window=W`.

Where the time domain has eps > 0 (EDM: the network is never evaluated at σ = 0), a frame at
the data end is given to the network at `last_eval` (σ_min), without adding noise.

Classifier-free guidance: the conditional and the null-label branch keep separate caches, held
as one 2B cache (rows [cond; uncond]), and every evaluation and push is one 2B network call.
The network sees the whole batch in each call (the sampler's `eval_batch` is not used: the
cache belongs to the whole batch). Randomness: the seed is split into a context key and a
generation key; frame k of the generation uses `split(generation_key, F)[k]`, split again into
(sampler key, context-noise key); context frame j uses `split(context_key, K)[j]`. The whole
rollout is ONE jitted program, cached per (rollout, sampler, model graph, guidance, grid); jit
caches the shapes.

The network protocol (duck-typed; `nnx_backbones.VideoDiT` has it):
    network.init_cache(batch, window) -> cache                  (a pytree of arrays)
    network.step(x [B, H, W, C], t [B], cache, *, y=None) -> (out [B, H, W, C], cache)
    network.causal (True; optional), network.temporal_patch (1; optional)
A frame-chunked network (`temporal_patch` = p > 1, e.g. `VideoDiT(temporal_patch=2)`) is rolled
out chunk by chunk: the "frame" above is a chunk of p frames `[B, p, H, W, C]` at one level
(`step` takes chunks), so F and the number of context frames must be multiples of p.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_interfaces.base import Interfaces, TimeDomain
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.forcing import FrameStep, check_frame_network
from nnx_samplers.base import (
    Sampler,
    SampleResult,
    _guidance_parts,
    check_velocity,
    resolve_key,
    time_array,
)
from nnx_samplers.errors import SamplerConfigError
from nnx_samplers.guidance import Autoguidance, ClassifierFreeGuidance, Evaluator
from nnx_samplers.model import Model, ModelInfo, bcast_right, model_info
from nnx_samplers.ode import Euler


def network_time(td: TimeDomain, t):
    """The time at which a frame at level `t` is given to the network: `t`, except closer than
    eps to the data end (where the network may not be evaluated), there `last_eval`."""
    if td.eps <= 0:
        return t
    near_data = np.abs(np.asarray(t, np.float64) - td.data) < td.eps
    return np.where(near_data, td.last_eval, t)


def frame_stepper(model: Any, cache: Any) -> Any:
    """The interface evaluated on one frame through `network.step` on `cache`: the model's own
    `frame_step` (`DiffusionForcing`), else its formulas through `FrameStep`."""
    if hasattr(model, "frame_step"):
        return model.frame_step(cache)
    return FrameStep(model, cache)


def check_frame_model(model: Any) -> Any:
    """The model's network, checked for the KV-cache protocol (`SamplerConfigError` if not)."""
    if not isinstance(model, Interfaces):
        raise SamplerConfigError(
            f"Autoregressive sampling needs an nnx_interfaces.Interfaces (e.g. DiffusionForcing) "
            f"whose network has a KV cache; got {type(model).__name__}."
        )
    network = model.network
    try:
        check_frame_network(network)
    except InterfaceConfigError as e:
        raise SamplerConfigError(str(e)) from None
    patch = getattr(network, "temporal_patch", 1)
    if not isinstance(patch, int) or patch < 1:
        raise SamplerConfigError(
            f"network.temporal_patch must be a positive int (frames per chunk); got {patch!r}."
        )
    return network


@dataclasses.dataclass(frozen=True)
class Autoregressive:
    """Frame-by-frame rollout of a causal video model with a KV cache (module docstring).

    Attributes:
      sampler: the per-frame sampler (any `Sampler`; its grid, steps and noise are used as is).
      context_noise: the level (a time in the model's domain; 0 = the data end for SiT / EDM)
        at which context and generated frames are pushed into the cache; > 0 renoises them with
        fresh noise x = α·x̂ + σ·ε.
      window: context frames held by the rolling cache (None: the network's default).
    """

    sampler: Sampler = Euler(num_steps=16)  # noqa: RUF009 (frozen, hashable: safe to share)
    context_noise: float = 0.0
    window: int | None = None

    def __post_init__(self):
        if not isinstance(self.sampler, Sampler):
            raise SamplerConfigError(
                f"Autoregressive(sampler=...) takes a per-frame Sampler (Euler, Heun, EDMSampler, "
                f"...); got {type(self.sampler).__name__}."
            )
        if getattr(self.sampler, "full_sequence", False):
            raise SamplerConfigError(
                f"{type(self.sampler).__name__} runs the full-sequence forward itself; call its "
                f"sample() directly instead of wrapping it in Autoregressive."
            )
        if not isinstance(self.context_noise, (int, float)) or not np.isfinite(self.context_noise):
            raise SamplerConfigError(
                f"context_noise must be a finite float time; got {self.context_noise!r}."
            )
        object.__setattr__(self, "context_noise", float(self.context_noise))
        if self.window is not None and (
            not isinstance(self.window, (int, np.integer)) or self.window < 1
        ):
            raise SamplerConfigError(
                f"window must be None (the network's default) or a positive int; got "
                f"{self.window!r}."
            )

    def nfe(self, model: Any, num_frames: int, num_context: int = 0) -> int:
        """Network evaluations per sample: the sampler's per frame, plus one push per context
        and generated frame (CFG: one 2B call each); per chunk for a `temporal_patch` network."""
        per_frame = self.sampler.count_nfe(self.sampler.grid(model), model_info(model))
        patch = getattr(getattr(model, "network", None), "temporal_patch", 1)
        chunks, context_chunks = num_frames // patch, num_context // patch
        return chunks * per_frame + context_chunks + chunks

    def sample(
        self,
        rngs_or_key: Any,
        model: Any,
        x_init: jax.Array,
        *,
        y: jax.Array | None = None,
        context: jax.Array | None = None,
        guidance: ClassifierFreeGuidance | None = None,
    ) -> SampleResult:
        """Generate `F` frames from `x_init: [B, F, H, W, C]` (noise at the noise end).

        Args:
          rngs_or_key: `nnx.Rngs`, a PRNG key or an int seed.
          model: a `DiffusionForcing` (or any `Interfaces`) whose network has the KV-cache
            protocol (module docstring).
          x_init: `[B, F, H, W, C]` noise; F may exceed the network's `num_frames`.
          y: optional `[B]` labels.
          context: optional clean prefix `[B, K, H, W, C]`, pushed into the cache first.
          guidance: optional `ClassifierFreeGuidance` (separate caches per branch).
        Returns:
          `SampleResult` with `x: [B, F, H, W, C]` (the generated frames, without the context),
          `nfe` per sample (`nfe()`), no trajectory, and the per-frame grid as `times`.
        """
        network = check_frame_model(model)
        info = model_info(model)
        check_velocity(self.sampler, info)
        self.sampler.check(info)
        td = info.time_domain
        if not min(td.data, td.noise) <= self.context_noise <= max(td.data, td.noise):
            raise SamplerConfigError(
                f"context_noise={self.context_noise} is outside the model's time domain "
                f"[{td.low}, {td.high}] (data end {td.data}, noise end {td.noise})."
            )
        if self.context_noise != td.data and not info.has_alpha_sigma:
            raise SamplerConfigError(
                "context_noise off the data end renoises frames through the path α, σ; this "
                "model has no alpha_sigma."
            )
        _check_video(network, x_init, "x_init")
        if context is not None:
            _check_video(network, context, "context")
            if context.shape[0] != x_init.shape[0]:
                raise SamplerConfigError(
                    f"context has batch {context.shape[0]}, x_init {x_init.shape[0]}; they must "
                    f"agree (context: [B, K, H, W, C])."
                )
        if isinstance(guidance, Autoguidance):
            raise SamplerConfigError(
                "Autoregressive supports ClassifierFreeGuidance only (an autoguidance guide would "
                "need its own KV cache); pass guidance=ClassifierFreeGuidance(...) or None."
            )
        g_spec, _, _ = _guidance_parts(guidance, model, info, y is not None)
        if g_spec is not None:  # one 2B call per evaluation: the 2B cache holds both branches
            g_spec = dataclasses.replace(g_spec, batching="concat")
        if y is not None and y.shape != (x_init.shape[0],):
            raise SamplerConfigError(
                f"y must be [B] = [{x_init.shape[0]}] labels; got shape {tuple(y.shape)}."
            )
        sampler = self.sampler.prepare(model)
        grid = self.sampler.grid(model)
        static, state = nnx.split(model)
        program = _rollout_program(
            self,
            sampler,
            static,
            info,
            g_spec,
            tuple(float(v) for v in grid),
            getattr(network, "temporal_patch", 1),
        )
        x = program(state, resolve_key(rngs_or_key), x_init, y, context)
        k = 0 if context is None else context.shape[1]
        return SampleResult(
            x=x, nfe=self.nfe(model, x_init.shape[1], k), trajectory=None, times=grid
        )


def _check_video(network, x: Any, name: str) -> None:
    patch = getattr(network, "temporal_patch", 1)
    if getattr(x, "ndim", 0) == 5 and x.shape[1] % patch:
        raise SamplerConfigError(
            f"{name} has {x.shape[1]} frames; this network generates chunks of temporal_patch="
            f"{patch} frames, so the frame count must be a multiple of {patch}."
        )
    frame = getattr(network, "input_size", None)
    channels = getattr(network, "in_channels", None)
    want = None if frame is None or channels is None else (*tuple(frame), channels)
    if getattr(x, "ndim", 0) != 5 or (want is not None and tuple(x.shape[2:]) != want):
        shape = "[B, F, H, W, C]" if want is None else f"[B, F, {', '.join(map(str, want))}]"
        raise SamplerConfigError(
            f"{name} must be a video {shape} (frames on axis 1, channels last) for this "
            f"network; got shape {tuple(getattr(x, 'shape', ()))}."
        )


@functools.lru_cache(maxsize=64)
def _rollout_program(
    ar: Autoregressive, sampler, static, info: ModelInfo, guidance, grid, patch: int
):
    """The whole rollout (context pushes, then a scan over frames) as one jitted program."""
    grid = np.asarray(grid)
    td = info.time_domain
    c = ar.context_noise
    t_push = float(network_time(td, c))
    renoise = c != td.data
    cfg = guidance is not None

    def program(state, key, x_init, y, context):
        model = nnx.merge(static, state)
        b = x_init.shape[0]
        y_push = y
        if cfg:
            y_push = jnp.concatenate([y, jnp.full_like(y, guidance.null_label)])
        cache = model.network.init_cache(2 * b if cfg else b, ar.window)

        def push(cache, x, k):
            """Store frame x (renoised to level c) as context: one step, its cache kept."""
            if renoise:
                a, s = model.alpha_sigma(jnp.full((b,), c, jnp.float32))
                eps = jax.random.normal(k, x.shape, x.dtype)
                x = bcast_right(a, x) * x + bcast_right(s, x) * eps
            if cfg:
                x = jnp.concatenate([x, x])
            return frame_stepper(model, cache).push(x, time_array(t_push, x), y=y_push)

        k_ctx, k_gen = jax.random.split(key)
        if context is not None:
            ctx = _chunks(context, patch)
            keys = jax.random.split(k_ctx, ctx.shape[0])
            cache, _ = jax.lax.scan(lambda ca, xk: (push(ca, *xk), None), cache, (ctx, keys))

        def frame(cache, inp):
            x0, k = inp
            k_sample, k_noise = jax.random.split(k)
            f = Evaluator(Model(frame_stepper(model, cache)), y, guidance, eval_batch=0)
            x, _ = sampler.integrate(f, k_sample, x0, grid, info, False)
            return push(cache, x, k_noise), x

        frames = _chunks(x_init, patch)
        _, xs = jax.lax.scan(frame, cache, (frames, jax.random.split(k_gen, frames.shape[0])))
        xs = jnp.moveaxis(xs, 0, 1)  # [B, F/p, (p,) H, W, C]
        return xs.reshape(x_init.shape)

    return jax.jit(program)


def _chunks(video: jax.Array, patch: int) -> jax.Array:
    """`[B, F, ...]` → scan inputs: frames `[F, B, ...]` (p = 1) or chunks `[F/p, B, p, ...]`."""
    if patch == 1:
        return jnp.moveaxis(video, 1, 0)
    b, f = video.shape[:2]
    return jnp.moveaxis(video.reshape(b, f // patch, patch, *video.shape[2:]), 1, 0)
