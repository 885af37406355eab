"""One small adapter over what a sampler may ask of a model: pred, score, denoise, alpha_sigma.

A model is either an `nnx_interfaces.Interfaces` (it brings its own `time_domain`, `pred`, `score`,
`denoise`, `alpha_sigma` and `two_time`), or a `FunctionModel`: plain functions with the time
domain (and, where a sampler needs it, the affine path) given explicitly. This is how closed-form
oracles are fed to samplers:

    FunctionModel(TimeDomain(noise=1.0, data=0.0), velocity=oracle.velocity,
                  alpha_sigma=linear_path)

For an affine path x_t = α(t)·x + σ(t)·n, any one of velocity v, denoiser x̂ or score s gives the
others (the identities of `nnx_interfaces.base`):

    x̂ = (σ'·x − σ·v) / (α·σ' − α'·σ)          v = α'·x̂ + σ'·(x − α·x̂) / σ
    s = −(x − α·x̂) / σ²                         x̂ = (x + σ²·s) / α

Functions take `(x [B, ...], t [B])`, plus `r [B]` for two-time velocities, plus `y=` when the
sampler is given labels; they return arrays shaped like `x`.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.base import Interfaces, TimeDomain
from nnx_samplers.errors import SamplerConfigError


def bcast_right(a: jax.Array, x: jax.Array) -> jax.Array:
    """`[B]` → `[B, 1, ..., 1]` broadcasting against `x: [B, ...]`."""
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


@dataclasses.dataclass(frozen=True)
class FunctionModel:
    """A model given as plain functions (at least one of velocity / denoise / score).

    Attributes:
      time_domain: where noise and data are (required: a function carries no time convention).
      velocity: `(x, t[, r], *, y=None) -> dx/dt`; with `two_time=True`, the average velocity
        over [t, r].
      denoise: `(x, t, *, y=None) -> E[x | x_t]`.
      score: `(x, t, *, y=None) -> ∇ log p_t(x)`.
      alpha_sigma: `t -> (α(t), σ(t))`; needed to convert between the three and by samplers that
        use the path (DPM-Solver++, DDIM, denoise-renoise, EDM churn, logSNR schedule).
      two_time: whether `velocity` takes a second time r.
    """

    time_domain: TimeDomain
    velocity: Callable | None = None
    denoise: Callable | None = None
    score: Callable | None = None
    alpha_sigma: Callable | None = None
    two_time: bool = False

    def __post_init__(self):
        if not isinstance(self.time_domain, TimeDomain):
            raise SamplerConfigError(
                f"FunctionModel.time_domain must be an nnx_interfaces.TimeDomain; got "
                f"{type(self.time_domain).__name__}."
            )
        if self.velocity is None and self.denoise is None and self.score is None:
            raise SamplerConfigError(
                "FunctionModel needs at least one of velocity=, denoise= or score=."
            )
        if self.two_time and self.velocity is None:
            raise SamplerConfigError("A two-time FunctionModel needs velocity=(x, t, r) -> u.")


def _call(fn: Callable, *args, y=None):
    return fn(*args) if y is None else fn(*args, y=y)


def _has_alpha_sigma(model) -> bool:
    if isinstance(model, FunctionModel):
        return model.alpha_sigma is not None
    try:
        model.alpha_sigma(jnp.zeros((1,), jnp.float32))
    except NotImplementedError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a sampler knows about a model before tracing (hashable, static)."""

    time_domain: TimeDomain
    two_time: bool
    has_alpha_sigma: bool
    has_velocity: bool = True  # False: a consistency model (only denoise = the ODE's end point)
    name: str = "the model"
    learned_variance: bool = False  # the model has `denoise_and_variance` (e.g. DiT's learn_sigma)


def model_info(model: "Interfaces | FunctionModel") -> ModelInfo:
    """Check the model type and read its static description."""
    if isinstance(model, FunctionModel):
        return ModelInfo(model.time_domain, model.two_time, model.alpha_sigma is not None)
    if isinstance(model, Interfaces):
        learned = bool(getattr(model, "learned_variance", False))
        return ModelInfo(
            model.time_domain,
            bool(model.two_time),
            _has_alpha_sigma(model),
            bool(getattr(model, "has_velocity", True)),
            type(model).__name__,
            learned_variance=learned,
        )
    raise SamplerConfigError(
        f"A sampler's model must be an nnx_interfaces.Interfaces or an nnx_samplers.FunctionModel; "
        f"got {type(model).__name__}. Wrap a plain function as FunctionModel(time_domain, "
        f"velocity=fn, alpha_sigma=...)."
    )


def split_model(model: "Interfaces | FunctionModel"):
    """(static part, dynamic state) for a jitted program: nnx modules via `nnx.split`."""
    if isinstance(model, FunctionModel):
        return model, None
    return nnx.split(model)


def merge_model(static, state) -> "Model":
    """Inverse of `split_model` inside the traced program, wrapped in a `Model`."""
    if isinstance(static, FunctionModel):
        return Model(static)
    return Model(nnx.merge(static, state))


class Model:
    """Uniform view of an `Interfaces` or a `FunctionModel` (used inside the traced program)."""

    def __init__(self, source: "Interfaces | FunctionModel"):
        self.source = source
        self.is_function = isinstance(source, FunctionModel)
        self.time_domain: TimeDomain = source.time_domain
        self.two_time = bool(source.two_time)

    # --- path -------------------------------------------------------------------------------
    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.is_function:
            if self.source.alpha_sigma is None:
                raise SamplerConfigError(
                    "This sampler needs the path coefficients α(t), σ(t): pass alpha_sigma= to "
                    "FunctionModel."
                )
            return self.source.alpha_sigma(t)
        return self.source.alpha_sigma(t)

    def path_derivatives(self, t: jax.Array):
        """(α, σ, α', σ') at `t: [B]`."""
        (a, s), (da, ds) = jax.jvp(self.alpha_sigma, (t,), (jnp.ones_like(t),))
        return a, s, da, ds

    # --- model outputs ----------------------------------------------------------------------
    def pred(self, x, t, r=None, *, y=None):
        """dx/dt (one time), or the average velocity over [t, r] (two-time models)."""
        args = (x, t) if r is None else (x, t, r)
        if not self.is_function:
            return _call(self.source.pred, *args, y=y)
        f = self.source
        if f.velocity is not None:
            return _call(f.velocity, *args, y=y)
        x_hat = self.denoise(x, t, y=y)
        a, s, da, ds = self.path_derivatives(t)
        b = lambda c: bcast_right(c, x)  # noqa: E731
        # v = α'·x̂ + σ'·n̂ with n̂ = (x − α·x̂) / σ
        return b(da) * x_hat + b(ds / s) * (x - b(a) * x_hat)

    def denoise(self, x, t, *, y=None):
        """E[x | x_t]."""
        if not self.is_function:
            return _call(self.source.denoise, x, t, y=y)
        f = self.source
        if f.denoise is not None:
            return _call(f.denoise, x, t, y=y)
        if f.velocity is not None:
            return self.denoise_from_velocity(x, t, _call(f.velocity, x, t, y=y))
        a, s = self.alpha_sigma(t)
        return (x + bcast_right(s**2, x) * _call(f.score, x, t, y=y)) / bcast_right(a, x)

    def score(self, x, t, *, y=None):
        """∇ log p_t(x)."""
        if not self.is_function:
            return _call(self.source.score, x, t, y=y)
        if self.source.score is not None:
            return _call(self.source.score, x, t, y=y)
        return self.score_from_denoised(x, t, self.denoise(x, t, y=y))

    def denoise_and_variance(self, x, t, *, y=None):
        """(E[x | x_t], the model's variance output) of an interface with a learned variance."""
        if self.is_function:
            raise SamplerConfigError(
                "A learned variance needs an interface with denoise_and_variance (e.g. "
                "DDPMInterface on a learn_sigma network); a FunctionModel has none."
            )
        return _call(self.source.denoise_and_variance, x, t, y=y)

    # --- conversions (affine paths) ------------------------------------------------------------
    def denoise_from_velocity(self, x, t, v):
        """x̂ = (σ'·x − σ·v) / (α·σ' − α'·σ)."""
        a, s, da, ds = self.path_derivatives(t)
        b = lambda c: bcast_right(c, x)  # noqa: E731
        return (b(ds) * x - b(s) * v) / b(a * ds - da * s)

    def score_from_denoised(self, x, t, x_hat):
        """s = −(x − α·x̂) / σ²."""
        a, s = self.alpha_sigma(t)
        return -(x - bcast_right(a, x) * x_hat) / bcast_right(s**2, x)
