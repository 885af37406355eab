"""Diffusion Forcing (Chen et al., 2024): an image objective applied to videos with one
independent noise level per frame.

For a video x = (x¹, …, x^T) `[B, T, ...]` and an image interface with path
x_t = α(t)·x + σ(t)·n, preconditioning (c_in, c_out, c_skip, c_noise), target and loss weight λ:

    t        = (t¹, …, t^T),  t^k ~ p_train independently per frame   (noise_levels="independent")
               or t^k = t for all k (one level per clip, full-sequence diffusion: "shared")
    x_t^k    = α(t^k)·x^k + σ(t^k)·n^k,  n ~ N(0, I)
    F        = network(c_in(t)·x_t, c_noise(t))                         t: [B, T] to the network
    D^k      = c_skip(t^k)·x_t^k + c_out(t^k)·F^k       (the base's output, per frame)
    loss     = mean_{B, T} λ(t^k)·mean‖D^k − target^k‖²                  (λ = 1 for SiT)

`pred`, `score` and `denoise` are the base interface's formulas with every coefficient taken per
frame (t `[B, T]` broadcasts over each frame's entries), so a frame-causal video network (e.g.
`nnx_backbones.VideoDiT`) trained this way denoises each frame at its own level given noisier or
cleaner context. With all frames at one level the loss is the base's image loss on the frames.
Supported bases: `SiTInterface` (velocity) and `EDMInterface` (denoiser with λ(σ)); their losses
have exactly the form above.

Frame-by-frame evaluation (KV cache). A causal video network with the cache protocol
`init_cache(batch, window) -> cache` and `step(x [B, H, W, C], t [B], cache, *, y=None) ->
(out, cache)` (e.g. `VideoDiT`) evaluates one frame attending to cached context frames.
`frame_step(cache)` gives the base interface with its network call replaced by that step:

    F^k = network.step(c_in(t)·x^k, c_noise(t), cache)[0]        one frame, t: [B]
    pred / denoise / score = the base's formulas on F^k

and `FrameStep.push(x^k, t)` runs the same step and keeps the returned cache (frame k stored
as context at level t). Autoregressive samplers (`nnx_samplers.Autoregressive`) use these.
"""

import inspect
import types
from typing import Any

import jax
import jax.numpy as jnp

from nnx_interfaces.base import Interfaces, TimeDomain
from nnx_interfaces.edm import EDMInterface
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.sit import SiTInterface

_SUPPORTED = (SiTInterface, EDMInterface)
NOISE_LEVELS = ("independent", "shared")


class DiffusionForcing(Interfaces):
    """Per-frame noise levels on top of an image interface (module docstring).

    Args:
      base: the image objective (`SiTInterface` or `EDMInterface`) wrapping the video network;
        its network, rngs, time distribution and preconditioning are used as they are.
      noise_levels: "independent" (one training level per frame, Diffusion Forcing) or
        "shared" (one per clip).
      frames_per_level: with "independent", consecutive groups of this many frames share a
        level (2 for a `VideoDiT(temporal_patch=2)`: one level per chunk); T must be a
        multiple of it.
    """

    def __init__(
        self, base: Interfaces, *, noise_levels: str = "independent", frames_per_level: int = 1
    ):
        if type(base).loss not in tuple(cls.loss for cls in _SUPPORTED):
            names = ", ".join(cls.__name__ for cls in _SUPPORTED)
            raise InterfaceConfigError(
                f"DiffusionForcing supports the losses of {names}; got {type(base).__name__}. "
                f"Wrap one of those (per-frame noise for other objectives is not implemented)."
            )
        if noise_levels not in NOISE_LEVELS:
            raise InterfaceConfigError(
                f"noise_levels must be one of {NOISE_LEVELS}; got {noise_levels!r}."
            )
        if int(frames_per_level) != frames_per_level or frames_per_level < 1:
            raise InterfaceConfigError(
                f"frames_per_level must be a positive integer; got {frames_per_level!r}."
            )
        super().__init__(base.network, base.train_time_dist_type, rngs=base.rngs)
        self.base = base
        self.noise_levels = noise_levels
        self.frames_per_level = int(frames_per_level)

    # --- the base's math, per frame ----------------------------------------------------------
    @property
    def time_domain(self) -> TimeDomain:
        return self.base.time_domain

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.base.alpha_sigma(t)

    def c_in(self, t: jax.Array) -> jax.Array:
        return self.base.c_in(t)

    def c_out(self, t: jax.Array) -> jax.Array:
        return self.base.c_out(t)

    def c_skip(self, t: jax.Array) -> jax.Array:
        return self.base.c_skip(t)

    def c_noise(self, t: jax.Array) -> jax.Array:
        return self.base.c_noise(t)

    def loss_weight(self, t: jax.Array) -> jax.Array:
        """λ(t) of the base (EDM's λ(σ)); 1 for SiT."""
        weight = getattr(self.base, "loss_weight", None)
        return jnp.ones_like(t) if weight is None else weight(t)

    def sample_t(
        self, shape: tuple[int, ...], data_shape: tuple[int, ...] | None = None
    ) -> jax.Array:
        """Training levels `[B, T]` (`shape`): independent per frame (per group of
        `frames_per_level` frames, which must hold whole chunks of a network with
        `temporal_patch`), or one per clip repeated. `data_shape`: one frame's shape (SiT's
        resolution shift is per frame)."""
        if len(shape) != 2:
            raise ValueError(f"DiffusionForcing draws [B, T] times; got shape {shape}.")
        group = self.frames_per_level
        patch = int(getattr(self.network, "temporal_patch", 1))
        if self.noise_levels == "independent" and group % patch:
            raise InterfaceConfigError(
                f"the network conditions each {patch}-frame chunk on one time (temporal_patch="
                f"{patch}), but frames_per_level={group} would give the frames of a chunk "
                f"different training levels; use DiffusionForcing(..., frames_per_level={patch})."
            )
        if self.noise_levels == "independent" and shape[1] % group:
            raise ValueError(
                f"frames_per_level={group} needs T a multiple of {group}; got T = {shape[1]}."
            )
        draw = (shape[0], shape[1] // group) if self.noise_levels == "independent" else shape[:1]
        if isinstance(self.base, SiTInterface):
            t = self.base.sample_t(draw, data_shape=data_shape)
        else:
            t = self.base.sample_t(draw)
        if t.ndim == 1:
            return jnp.broadcast_to(t[:, None], shape)
        return t if group == 1 else jnp.repeat(t, group, axis=1)

    def sample_n(self, shape: tuple[int, ...]) -> jax.Array:
        return self.base.sample_n(shape)

    def sample_x_t(self, x: jax.Array, n: jax.Array, t: jax.Array) -> jax.Array:
        return self.base.sample_x_t(x, n, self._frame_times(x, t))

    def target(self, x: jax.Array, n: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        return self.base.target(x, n, self._frame_times(x, t), *args, **kwargs)

    def pred(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """The base's dx/dt per frame: `x_t: [B, T, ...]`, `t: [B, T]` (or `[B]`)."""
        return self.base.pred(x_t, self._frame_times(x_t, t), *args, **kwargs)

    def score(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """∇ log p_t per frame (the base's formula with t `[B, T]`)."""
        return self.base.score(x_t, self._frame_times(x_t, t), *args, **kwargs)

    def denoise(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """E[x | x_t] per frame (the base's formula with t `[B, T]`)."""
        return self.base.denoise(x_t, self._frame_times(x_t, t), *args, **kwargs)

    # --- loss --------------------------------------------------------------------------------
    def loss(
        self,
        x: jax.Array,
        *args,
        return_aux: bool = False,
        t: jax.Array | None = None,
        **kwargs,
    ) -> Any:
        """mean_{B,T} λ(t^k)·mean‖D^k − target^k‖² with per-frame levels.

        Args:
          x: clean videos `[B, T, ...]`; t: optional levels `[B, T]` (default: drawn by
            `sample_t`); `*args`, `**kwargs` go to the network (`y=`; `train` defaults to True).
        Returns:
          the scalar loss, or `(loss, aux)` with aux keys `loss`, `mse` (unweighted),
          `per_example` `[B]`, `per_frame` `[B, T]` (weighted), `t` `[B, T]` (and `hidden`).
        """
        if x.ndim < 3:
            raise ValueError(
                f"DiffusionForcing expects videos x: [B, T, ...] (frames on axis 1); got "
                f"{tuple(x.shape)}."
            )
        kwargs.setdefault("train", True)
        if t is None:
            t = self.sample_t(x.shape[:2], data_shape=x.shape[2:])
        t = self._frame_times(x, t)
        n = self.sample_n(x.shape)
        x_t = self.sample_x_t(x, n, t)
        f, hidden = self.network_output(x_t, t, *args, **kwargs)
        err = (self.precondition(x_t, t, f) - self.target(x, n, t)) ** 2
        sq = jnp.mean(err, axis=tuple(range(2, x.ndim)))  # [B, T]
        per_frame = self.loss_weight(t) * sq
        loss = jnp.mean(per_frame)
        if not return_aux:
            return loss
        aux = {
            "loss": loss,
            "mse": jnp.mean(sq),
            "per_example": jnp.mean(per_frame, axis=1),
            "per_frame": per_frame,
            "t": t,
        }
        if hidden is not None:
            aux["hidden"] = hidden
        return loss, aux

    # --- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _frame_times(x: jax.Array, t: jax.Array) -> jax.Array:
        """`t: [B, T]` (or `[B]`, broadcast to every frame) checked against `x: [B, T, ...]`."""
        b, frames = x.shape[:2]
        if t.shape == (b,):
            return jnp.broadcast_to(t[:, None], (b, frames))
        if t.shape != (b, frames):
            raise ValueError(
                f"DiffusionForcing takes one time per frame, t: [B, T] = [{b}, {frames}] (or "
                f"[B]); got t.shape = {tuple(t.shape)} for x of shape {tuple(x.shape)}."
            )
        return t

    # --- frame by frame with a KV cache (autoregressive sampling) -------------------------------
    def init_cache(self, batch_size: int, window: int | None = None) -> Any:
        """An empty KV cache of the causal video network for `batch_size` rows and `window`
        context frames (None: the network's default)."""
        check_frame_network(self.network)
        return self.network.init_cache(batch_size, window)

    def frame_step(self, cache: Any) -> "FrameStep":
        """The base interface evaluated on ONE frame through `network.step` on `cache` (module
        docstring): `pred`/`denoise`/`score(x [B, H, W, C], t [B], y=)`, and `push`."""
        check_frame_network(self.network)
        return FrameStep(self.base, cache)


def check_frame_network(network: Any) -> None:
    """Raise `InterfaceConfigError` unless `network` is a frame-causal network with the KV-cache
    protocol `init_cache(batch, window)` / `step(x, t, cache, *, y=None) -> (out, cache)`."""
    missing = [m for m in ("init_cache", "step") if not callable(getattr(network, m, None))]
    if missing:
        raise InterfaceConfigError(
            f"Frame-by-frame (KV-cache) evaluation needs a network with init_cache(batch, window) "
            f"and step(x, t, cache, *, y=None) -> (out, cache); {type(network).__name__} lacks "
            f"{', '.join(missing)}. Use a causal video network such as nnx_backbones.VideoDiT."
        )
    if not getattr(network, "causal", True):
        raise InterfaceConfigError(
            f"Frame-by-frame (KV-cache) evaluation needs a frame-causal network; "
            f"{type(network).__name__} was built with causal=False (build it with causal=True)."
        )


class FrameStep:
    """An image interface whose network call is one KV-cached frame step (module docstring).

    Every method and property of `base` is evaluated with `self` = this object, so the base's own
    formulas (preconditioning, pred, denoise, score) run unchanged; only `network_output` differs:
    F = network.step(c_in(t)·x, c_noise(t), cache, y=y)[0] with `x: [B, H, W, C]`, `t: [B]`.
    """

    def __init__(self, base: Interfaces, cache: Any):
        self._base = base
        self.cache = cache

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_base", "cache"):  # not yet set (copy, pickle)
            raise AttributeError(name)
        attr = inspect.getattr_static(type(self._base), name, None)
        if isinstance(attr, staticmethod):
            return attr.__func__
        if isinstance(attr, classmethod):
            return attr.__get__(None, type(self._base))
        if isinstance(attr, property):
            return attr.fget(self)
        if inspect.isfunction(attr):
            return types.MethodType(attr, self)
        return getattr(self._base, name)

    def _step(self, x: jax.Array, t: jax.Array, y: jax.Array | None, kwargs: dict):
        unknown = {k for k, v in kwargs.items() if v is not None and k != "train"}
        if unknown or kwargs.get("train"):
            got = sorted(unknown) or "train=True"
            raise InterfaceConfigError(
                f"A KV-cached frame step takes only y= (inference); got {got}."
            )
        x_in = self.bcast_right(self.c_in(t), x) * x
        return self._base.network.step(x_in, self.c_noise(t), self.cache, y=y)

    def network_output(
        self, x_t: jax.Array, t: jax.Array, *args, y: jax.Array | None = None, **kwargs
    ) -> tuple[jax.Array, None]:
        """F = network.step(c_in(t)·x_t, c_noise(t), cache, y=y)[0] for one frame `[B, H, W, C]`."""
        if args:
            raise InterfaceConfigError("A KV-cached frame step takes labels only as y=.")
        return self._step(x_t, t, y, kwargs)[0], None

    def push(self, x: jax.Array, t: jax.Array, *, y: jax.Array | None = None) -> Any:
        """The cache with frame `x: [B, H, W, C]` at level `t: [B]` appended as context."""
        return self._step(x, t, y, {})[1]
