"""Classifier-free guidance (with a guidance interval) and autoguidance.

Classifier-free guidance (Ho & Salimans 2022), limited to t ∈ [t_lo, t_hi] (Kynkäänniemi et al.
2024, "guidance interval"):

    D_w(x, t, y) = D(x, t, ∅) + w·(D(x, t, y) − D(x, t, ∅))   if t_lo ≤ t ≤ t_hi,
                   D(x, t, y)                                  otherwise,

where D is whatever the sampler asks for (pred / denoise / score: for an affine path each is affine
in the network output, so guiding any of them is the same). The conditional and the null-label
(∅ = `null_label`, by convention `num_classes`) branches run as ONE network call on a 2B batch
(`batching="concat"`) or as two batch-B calls (`"split"`); same numbers either way (the network
is per-sample), only the speed differs: `None` picks the backend's faster one ("split" on CPU,
"concat" elsewhere; bench/README.md).

`channels=k` guides only the first k channels (last axis) and keeps the conditional output on
the rest, as DiT's `forward_with_cfg` does (guidance on 3 of the 4 latent channels; the paper's
FID 2.27 is measured so). A sampler that also asks for a model variance (`denoise_and_variance`)
gets the guided x̂ and the conditional branch's variance, as in DiT/GLIDE.

Autoguidance (Karras et al. 2024) replaces the unconditional branch by a weaker `guide` model:
D_w = D_guide + w·(D − D_guide): two network calls per evaluation.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from nnx_samplers.errors import SamplerConfigError
from nnx_samplers.model import Model, bcast_right

CFG_BATCHING = (None, "concat", "split")


def default_eval_batch() -> int:
    """The network sub-batch `Evaluator` uses when a sampler's `eval_batch` is None: 8 on CPU,
    where a DiT-S/2 forward runs at ~0.9 of the matmul roofline at batch 8 but ~0.6 at batch 16
    (activations out of cache; bench/README.md, "Inference"); 0 (the whole batch) elsewhere."""
    return 8 if jax.default_backend() == "cpu" else 0


def chunked_call(fn, b: int, chunk: int, *args, **kwargs):
    """`fn(*args, **kwargs)` evaluated on sub-batches of `chunk` rows (`lax.map`, then one call on
    the remainder) when b > chunk > 0; array arguments with leading dimension b are split, the
    rest passed whole. The network is per-sample, so the result is the same as one call."""
    if chunk <= 0 or b <= chunk:
        return fn(*args, **kwargs)
    names = list(kwargs)
    flat = list(args) + [kwargs[k] for k in names]
    split = [isinstance(a, jax.Array) and a.ndim > 0 and a.shape[0] == b for a in flat]
    n = b // chunk

    def call(parts):
        it = iter(parts)
        full = [next(it) if s else a for a, s in zip(flat, split, strict=True)]
        return fn(*full[: len(args)], **dict(zip(names, full[len(args) :], strict=True)))

    batched = [a for a, s in zip(flat, split, strict=True) if s]
    head = [a[: n * chunk].reshape(n, chunk, *a.shape[1:]) for a in batched]
    out = jax.lax.map(call, head)
    out = jax.tree.map(lambda o: o.reshape(n * chunk, *o.shape[2:]), out)
    if n * chunk == b:
        return out
    tail = call([a[n * chunk :] for a in batched])
    return jax.tree.map(lambda h, t: jnp.concatenate([h, t]), out, tail)


def cfg_batching(batching: str | None) -> str:
    """The CFG batching to run: `batching`, or for None the backend default: "split" (two B
    calls) on CPU, measured 1.09× faster per evaluation than one 2B call for DiT-S/2 at B = 8
    (bench/README.md, "Inference"); "concat" (one 2B call, better occupancy) elsewhere."""
    if batching is not None:
        return batching
    return "split" if jax.default_backend() == "cpu" else "concat"


def _check(scale: float, interval, channels=None):
    if not isinstance(scale, (int, float)):
        raise SamplerConfigError(f"guidance scale must be a float; got {scale!r}.")
    if channels is not None and not (isinstance(channels, int) and channels >= 1):
        raise SamplerConfigError(
            f"guidance channels must be a positive int (guide the first k channels) or None "
            f"(all); got {channels!r}."
        )
    if interval is not None and (len(interval) != 2 or not interval[0] <= interval[1]):
        raise SamplerConfigError(
            f"guidance interval must be (t_lo, t_hi) with t_lo <= t_hi; got {interval!r}."
        )


@dataclasses.dataclass(frozen=True)
class ClassifierFreeGuidance:
    """CFG with scale w, optional interval (t_lo, t_hi) in the model's time, and the null label.

    `null_label=None` reads `model.network.num_classes` (the backbone contract's null label).
    `channels=k` guides only the first k channels of the last axis (DiT's `forward_with_cfg`:
    k = 3 on 4 latent channels); None guides all.
    """

    scale: float
    interval: tuple[float, float] | None = None
    null_label: int | None = None
    channels: int | None = None
    batching: str | None = None

    def __post_init__(self):
        _check(self.scale, self.interval, self.channels)
        if self.batching not in CFG_BATCHING:
            raise SamplerConfigError(
                f"guidance batching must be one of {CFG_BATCHING}; got {self.batching!r}."
            )
        if self.interval is not None:
            object.__setattr__(self, "interval", tuple(float(v) for v in self.interval))


@dataclasses.dataclass(frozen=True, eq=False)
class Autoguidance:
    """Autoguidance by a weaker `guide` model (an `Interfaces` or a `FunctionModel` with the same
    time domain) with scale w and optional interval."""

    guide: Any
    scale: float
    interval: tuple[float, float] | None = None

    def __post_init__(self):
        _check(self.scale, self.interval)


@dataclasses.dataclass(frozen=True)
class GuidanceSpec:
    """The static (hashable) part of a guidance, given to the jitted program."""

    kind: str  # "cfg" | "auto"
    scale: float
    interval: tuple[float, float] | None
    null_label: int | None = None
    channels: int | None = None
    batching: str = "concat"


def _in_interval(t: jax.Array, interval) -> jax.Array:
    if interval is None:
        return jnp.ones(t.shape, bool)
    return (t >= interval[0]) & (t <= interval[1])


def _guide(g: GuidanceSpec, cond: jax.Array, uncond: jax.Array, t: jax.Array) -> jax.Array:
    """uncond + w·(cond − uncond) inside the interval and on the guided channels, else cond."""
    on = bcast_right(_in_interval(t, g.interval), cond)
    if g.channels is not None:
        on = on & (jnp.arange(cond.shape[-1]) < g.channels)
    return jnp.where(on, uncond + g.scale * (cond - uncond), cond)


class Evaluator:
    """What samplers call: `pred`, `denoise`, `score`, `pred_and_score`, `denoise_and_variance`,
    with labels and guidance applied; `alpha_sigma`/`time_domain` pass through. One method call =
    one NFE (CFG: one call on a 2B batch; autoguidance: one call of each model)."""

    def __init__(
        self,
        model: Model,
        y=None,
        guidance: GuidanceSpec | None = None,
        guide=None,
        eval_batch: int | None = None,
    ):
        self.model, self.y, self.guidance, self.guide = model, y, guidance, guide
        self.eval_batch = default_eval_batch() if eval_batch is None else eval_batch
        self.time_domain = model.time_domain
        self.alpha_sigma = model.alpha_sigma
        self.path_derivatives = model.path_derivatives

    def _call(self, model, method: str, x, t, *rest, y):
        """One network evaluation, on sub-batches of `eval_batch` rows (`chunked_call`)."""
        fn = getattr(model, method)
        return chunked_call(fn, x.shape[0], self.eval_batch, x, t, *rest, y=y)

    def _eval(self, method: str, x, t, *rest):
        g = self.guidance
        if g is None:
            return self._call(self.model, method, x, t, *rest, y=self.y)
        if g.kind == "cfg" and g.batching == "split":
            y_null = jnp.full_like(self.y, g.null_label)
            cond = self._call(self.model, method, x, t, *rest, y=self.y)
            uncond = self._call(self.model, method, x, t, *rest, y=y_null)
        elif g.kind == "cfg":
            b = x.shape[0]
            y_null = jnp.full_like(self.y, g.null_label)
            cat = lambda a, c: jnp.concatenate([a, c], axis=0)  # noqa: E731
            out = self._call(
                self.model, method, cat(x, x), cat(t, t), *(cat(r, r) for r in rest),
                y=cat(self.y, y_null),
            )  # fmt: skip
            cond, uncond = jax.tree.map(lambda o: o[:b], out), jax.tree.map(lambda o: o[b:], out)
        else:
            cond = self._call(self.model, method, x, t, *rest, y=self.y)
            uncond = self._call(self.guide, method, x, t, *rest, y=self.y)
        if isinstance(cond, tuple):  # (x̂, variance): guide x̂, keep the conditional variance
            return (_guide(g, cond[0], uncond[0], t), *cond[1:])
        return _guide(g, cond, uncond, t)

    def pred(self, x, t, r=None):
        return self._eval("pred", x, t) if r is None else self._eval("pred", x, t, r)

    def denoise(self, x, t):
        return self._eval("denoise", x, t)

    def score(self, x, t):
        return self._eval("score", x, t)

    def denoise_and_variance(self, x, t):
        """(x̂ guided, the model's variance output from the conditional branch)."""
        return self._eval("denoise_and_variance", x, t)

    def pred_and_score(self, x, t, use_path: bool):
        """(v, ∇ log p) from ONE evaluation when the path is known (`use_path`), else two."""
        v = self.pred(x, t)
        if not use_path:
            return v, self.score(x, t)
        x_hat = self.model.denoise_from_velocity(x, t, v)
        return v, self.model.score_from_denoised(x, t, x_hat)
