"""Self Forcing (Huang et al. 2025, "Self Forcing: Bridging the Train-Test Gap in Autoregressive
Video Diffusion", arXiv:2506.08009): DMD (`nnx_interfaces.dmd`) on the causal generator's own
autoregressive rollouts.

Three video interfaces in the teacher's time variable t (conventions of the public code,
github.com/guandeh17/Self-Forcing, `pipeline/self_forcing_training.py`, `model/dmd.py`):

    generator  G_θ    `DiffusionForcing` around a frame-causal network with a KV cache
                      (`network.init_cache(B, window)`, `network.step(x_f, t, cache)`, e.g.
                      `nnx_backbones.VideoDiT`), initialised from the Diffusion-Forcing teacher
    real score        the teacher, frozen (full-sequence forward, t `[B, T]`)
    fake score        a video interface trained by its denoising loss on sg(rollouts); the paper
                      noises a whole video at one level (`DiffusionForcing(noise_levels="shared")`)

Rollout (paper Algorithm 1). Frame by frame (chunk by chunk for a network with
`temporal_patch = 2`), with the few-step times t_0 = T > t_1 > … > t_{K−1} of the grid and an
exit step s ∈ {0..K−1}:

    x_0^f = σ(t_0)·z_0^f
    x_{k+1}^f = α(t_{k+1})·sg(x̂_k^f) + σ(t_{k+1})·z_{k+1}^f,  x̂_k^f = G_θ(x_k^f, t_k | KV)   k < s
    x^f = G_θ(x_s^f, t_s | KV)                          with gradient (the frame's output)
    KV ← sg(KV ⊕ KV_θ(sg(x^f), t_ctx))                  push the clean output, no gradient

Each frame is one `network.step` evaluation on the cache of its context frames with the base's
preconditioning, x̂ = denoise(c_skip·x_t + c_out·F(c_in·x_t, c_noise(t) | KV)). `exit_step="rollout"`
(the paper's Algorithm 1 and the released config, `same_step_across_blocks: true`): one s per
rollout, here drawn per example; `"frame"`: one s per frame (chunk). Steps before s run without
gradient, and the cache is detached, so the gradient of a frame flows only through its own last
denoising step. The context is pushed at t_ctx = grid(`context_noise`) (0: the data end, the
clean output; > 0: renoised with fresh noise, the paper's `context_noise`).

Distribution matching on the rolled-out video x (DMD's loss, unchanged): one level per video,
t ~ grid(U[t_min, t_max]) (`uniform_timestep=True` in the public code), x_t = α_t·sg(x) + σ_t·n,

    g = (x̂_fake(x_t) − x̂_real(x_t)) / mean_{video}|x − x̂_real|,  L_DM = ½·mean‖x − sg(x − g)‖².

The critic is DMD's: the fake interface's own loss on sg(rollout), updated every step, the
generator every `fake_updates`-th step (TTUR), the teacher frozen.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.base import Interfaces
from nnx_interfaces.dmd import DMD
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.forcing import DiffusionForcing

EXIT_STEPS = ("rollout", "frame")


class SelfForcing(DMD):
    """DMD on autoregressive KV-cache rollouts of a causal video generator (module docstring).

    Args:
      generator: `DiffusionForcing` around a causal network with `init_cache`/`step`
        (initialised from the teacher's weights).
      fake: the fake score, a video interface (paper: `DiffusionForcing(..., "shared")`).
      teacher: the real score (a video interface), frozen.
      generator_steps: K few-step denoising steps per frame (paper: 4).
      fake_updates: critic updates per generator update (TTUR; paper: 5).
      exit_step: "rollout" (one exit step per rollout, Algorithm 1) or "frame" (per frame).
      context_noise: the time at which a generated frame enters the cache, as a fraction of the
        grid (0: clean).
      window: context frames held by the KV cache (default: the network's default).
      rngs: streams `noise`, `time` (default: the generator's).

    `guidance`, `null_label`, `t_min`, `t_max` and `normalize` are as for `DMD`.
    """

    def __init__(
        self,
        generator: Interfaces,
        fake: Interfaces,
        teacher: Interfaces,
        *,
        generator_steps: int = 4,
        fake_updates: int = 5,
        guidance: float = 1.0,
        null_label: int | None = None,
        t_min: float = 0.02,
        t_max: float = 0.98,
        normalize: bool = True,
        exit_step: str = "rollout",
        context_noise: float = 0.0,
        window: int | None = None,
        rngs: nnx.Rngs | None = None,
    ):
        if not isinstance(generator, DiffusionForcing):
            raise InterfaceConfigError(
                f"SelfForcing's generator must be a DiffusionForcing interface around a causal "
                f"video network; got {type(generator).__name__}. Wrap it: "
                f"DiffusionForcing(SiTInterface(VideoDiT(causal=True, ...)))."
            )
        net = generator.network
        if not (hasattr(net, "step") and hasattr(net, "init_cache")):
            raise InterfaceConfigError(
                f"SelfForcing rolls the generator out with a KV cache: its network needs "
                f"init_cache(batch, window) and step(x, t, cache, y=); {type(net).__name__} has "
                f"not (use nnx_backbones.VideoDiT)."
            )
        if not getattr(net, "causal", True):
            raise InterfaceConfigError(
                "SelfForcing needs a frame-causal generator network (VideoDiT(causal=True)); the "
                "KV-cache rollout of a bidirectional network is not its full-sequence function."
            )
        if exit_step not in EXIT_STEPS:
            raise InterfaceConfigError(f"exit_step must be one of {EXIT_STEPS}; got {exit_step!r}.")
        if not 0.0 <= context_noise <= 1.0:
            raise InterfaceConfigError(
                f"context_noise is a fraction of the time grid in [0, 1]; got {context_noise}."
            )
        super().__init__(
            generator,
            fake,
            teacher,
            generator_steps=generator_steps,
            fake_updates=fake_updates,
            guidance=guidance,
            null_label=null_label,
            t_min=t_min,
            t_max=t_max,
            normalize=normalize,
            rngs=rngs,
        )
        self.exit_step, self.context_noise, self.window = exit_step, float(context_noise), window

    # --- one frame through the cache -----------------------------------------------------------
    def step_denoise(
        self, x_t: jax.Array, t: jax.Array, cache: Any, *, y: Any = None
    ) -> tuple[jax.Array, Any]:
        """x̂ = E[x | x_t] of one frame (chunk) `x_t` at times `t: [B]`, attending to `cache`
        → `(x̂, cache with x_t pushed)` (the generator's preconditioning around `network.step`)."""
        frame = self.generator.frame_step(cache)
        return frame.denoise(x_t, t, y=y), frame.push(x_t, t, y=y)

    # --- the rollout ---------------------------------------------------------------------------
    def rollout(
        self,
        noise: jax.Array,
        exit_index: jax.Array,
        *,
        y: Any = None,
        context: jax.Array | None = None,
    ) -> jax.Array:
        """Autoregressive K-step rollout with the KV cache (module docstring), `lax.scan` over
        frames (chunks).

        Args:
          noise: `[K, B, T, ...]` normals, one per denoising step and frame.
          exit_index: `[B, T]` int, the step s ∈ {0..K−1} whose output each frame keeps (with
            gradient); constant within a chunk.
          y: labels `[B]`.
          context: `[B, T, ...]` normals renoising the pushed frames (needed when
            `context_noise > 0`).
        Returns:
          the video `[B, T, ...]`.
        """
        K, B, T = noise.shape[:3]
        if self.generator_steps != K or exit_index.shape != (B, T):
            raise ValueError(
                f"rollout takes noise [K={self.generator_steps}, B, T, ...] and exit_index "
                f"[B, T]; got {tuple(noise.shape)} and {tuple(exit_index.shape)}."
            )
        if self.context_noise > 0 and context is None:
            raise ValueError("context_noise > 0 needs the context noise `context: [B, T, ...]`.")
        net = self.generator.network
        c = _chunk_frames(net, T)
        t_ctx = jnp.full((B,), self.grid_time(jnp.float32(self.context_noise)))

        def chunks(a: jax.Array, axis: int) -> jax.Array:  # frames on `axis` → [T/c, ..., (c), ...]
            a = jnp.moveaxis(a, axis, 0)
            a = a.reshape(T // c, c, *a.shape[1:])
            return jnp.moveaxis(a, 1, 1 + axis) if c > 1 else a[:, 0]

        n_chunks = chunks(noise, 2)  # [T/c, K, B, (c), ...]
        e_chunks = chunks(exit_index, 1)[..., 0] if c > 1 else chunks(exit_index, 1)  # [T/c, B]
        ctx = chunks(context, 1) if context is not None else jnp.zeros((T // c, 0))

        def one_chunk(cache, inputs):
            z, exit_at, z_ctx = inputs

            frame = self.generator.frame_step(cache)

            def denoise(x, t):  # through the cache of the context, which stays as it is
                return frame.denoise(x, t, y=y)

            state, t_state = self.backward_simulation(denoise, z, exit_at)  # no gradient
            out = denoise(state, t_state)  # the frame, with gradient
            pushed = jax.lax.stop_gradient(out)
            if self.context_noise > 0:
                pushed = self._renoise(pushed, t_ctx, z_ctx)
            cache = frame.push(pushed, t_ctx, y=y)
            return jax.lax.stop_gradient(cache), out

        cache = jax.lax.stop_gradient(net.init_cache(B, self.window))
        _, video = jax.lax.scan(one_chunk, cache, (n_chunks, e_chunks, ctx))
        video = jnp.moveaxis(video, 0, 1)  # [B, T/c, (c), ...]
        return video.reshape(B, T, *video.shape[2 + (c > 1) :])

    def generate(self, noise: jax.Array, *, y: Any = None) -> jax.Array:
        """Autoregressive K-step sampling (every frame exits at the last step):
        `noise: [K, B, T, ...]` → `[B, T, ...]`."""
        exit_index = jnp.full(noise.shape[1:3], self.generator_steps - 1, jnp.int32)
        return self.rollout(noise, exit_index, y=y)

    def generate_train(self, shape: tuple[int, ...], *, y: Any = None) -> jax.Array:
        """A training rollout `[B, T, ...]` (`shape`), gradient only through each frame's exit
        step; exits drawn per rollout or per frame (chunk), uniformly in {0..K−1}."""
        if len(shape) < 3:
            raise ValueError(f"SelfForcing generates videos [B, T, ...]; got shape {shape}.")
        K, (B, T) = self.generator_steps, shape[:2]
        noise = jax.random.normal(self.rngs.noise(), (K, *shape))
        c = _chunk_frames(self.generator.network, T)
        n_exit = 1 if self.exit_step == "rollout" else T // c
        exit_index = jax.random.randint(self.rngs.time(), (B, n_exit), 0, K)
        exit_index = jnp.repeat(exit_index, T // n_exit, axis=1)
        context = None
        if self.context_noise > 0:
            context = jax.random.normal(self.rngs.noise(), shape)
        return self.rollout(noise, exit_index, y=y, context=context)


def _chunk_frames(net: nnx.Module, frames: int) -> int:
    """Frames per `network.step` call (the network's `temporal_patch`, 1 by default)."""
    c = int(getattr(net, "temporal_patch", 1))
    if frames % c:
        raise ValueError(
            f"the generator steps {c} frames at a time (temporal_patch={c}); a video of {frames} "
            f"frames is not a whole number of chunks. Use a multiple of {c} frames."
        )
    return c
