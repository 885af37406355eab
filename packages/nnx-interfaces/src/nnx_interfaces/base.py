"""The `Interfaces` contract: the math linking data, noise and a network.

Every objective is an `nnx.Module` wrapping a backbone (see `nnx_backbones.contract`) and an ABC
with the methods below. Each interface declares its `time_domain` (where noise and data are, in its
own time variable), so samplers integrate `pred` from `time_domain.noise` to `time_domain.data`
without knowing which interface they run. `pred` returns dx/dt in that time variable, so an Euler
step is always `x + (t_next − t)·pred(x, t)`.

Two-time interfaces (MeanFlow, flow maps, shortcut models) take a second time:
`pred(x, t, r)` is the average velocity over [t, r], so one jump is `x + (r − t)·pred(x, t, r)`
(MeanFlow's x_r = x_t − (t − r)·u, a flow map's Φ(x, s, t) = x + (t − s)·f(x, s, t)), and
`pred(x, t, t)` is the instantaneous velocity. They set `two_time = True`.

Consistency models (sCT, sCD) set `has_velocity = False`: their only output is `denoise` =
f_θ(x_t, t), the end point of the probability-flow ODE through x_t, and they have no `pred` or
`score` (f_θ gives neither without inverting its Jacobian); ODE/SDE samplers refuse them and
the multistep consistency sampler (denoise, then re-noise) applies.

Affine paths x_t = α(t)·x + σ(t)·n declare `alpha_sigma(t)`; from it the base class derives the
denoiser x̂ = E[x | x_t] from any velocity (`denoise`), which is what data-prediction samplers
(DPM-Solver++, DDIM) use, and `nnx_interfaces.oracles` derives closed-form Gaussian answers.
"""

import abc
import dataclasses
import enum
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.errors import InterfaceConfigError


class TrainingTimeDistType(enum.StrEnum):
    """Training time distributions every interface supports, each with its own (mu, sigma)."""

    UNIFORM = "uniform"
    LOGNORMAL = "lognormal"
    LOGITNORMAL = "logitnormal"

    @classmethod
    def parse(cls, value: "str | TrainingTimeDistType") -> "TrainingTimeDistType":
        """Accept the enum or its (case-insensitive) name; raise a clear error otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            valid = ", ".join(repr(m.value) for m in cls)
            raise InterfaceConfigError(
                f"Unknown train_time_dist_type {value!r}; expected one of {valid}."
            ) from None


@dataclasses.dataclass(frozen=True)
class TimeDomain:
    """Where an interface's sampling starts and ends, in its own time variable.

    Attributes:
      noise: time value at the noise end (samplers start here), e.g. 1.0 for SiT, σ_max for EDM.
      data: time value at the data end (samplers stop here), e.g. 0.0 for SiT and EDM, 1.0 for the
        flow-map objectives (source at 0, data at 1).
      variable: what the time is: "t" (interpolation time), "sigma" (EDM noise level) or
        "angle" (TrigFlow).
      eps: the closest distance to the data end at which `pred`/`score` may be evaluated
        (e.g. EDM's σ_min = 0.002); schedules stop their last network evaluation there.
    """

    noise: float
    data: float
    variable: str = "t"
    eps: float = 0.0

    @property
    def low(self) -> float:
        return min(self.noise, self.data)

    @property
    def high(self) -> float:
        return max(self.noise, self.data)

    @property
    def direction(self) -> float:
        """+1 if sampling increases time (noise at low t), −1 if it decreases it."""
        return 1.0 if self.data > self.noise else -1.0

    @property
    def last_eval(self) -> float:
        """The time nearest the data end at which the network may still be evaluated."""
        return self.data - self.direction * self.eps


@dataclasses.dataclass(frozen=True)
class TreeUpdate:
    """One trained parameter tree of a multi-model objective and when the trainer updates it.

    A multi-model objective (DMD2: generator and fake score) lists one `TreeUpdate` per trained
    tree in `Interfaces.trained_trees()`; the trainer keeps an optimizer, learning-rate schedule
    and EMAs per tree and, in each step, in the listed order, updates the trees that are due.

    Attributes:
      tree: the objective's attribute (a submodule) whose `nnx.Param`s form the tree.
      loss: name of the objective's method giving this tree's loss, called like `loss`:
        `method(x, return_aux=True, **batch entries but x) -> (loss, aux)`; gradients are taken
        with respect to this tree only (every other tree is held fixed).
      every, offset: the tree is updated in step s (0-based) when s % every == offset.
    """

    tree: str
    loss: str = "loss"
    every: int = 1
    offset: int = 0

    def __post_init__(self):
        if not (self.every >= 1 and 0 <= self.offset < self.every):
            raise InterfaceConfigError(
                f"TreeUpdate({self.tree!r}): need every ≥ 1 and 0 ≤ offset < every; got "
                f"every={self.every}, offset={self.offset}."
            )


class Interfaces(nnx.Module, abc.ABC):
    """Base class of every diffusion / flow-matching / flow-map objective.

    Randomness: keys come from the `nnx.Rngs` given as `rngs`, defaulting to the wrapped network's
    `rngs` attribute, with the streams `time` (t), `noise` (n) and `label_dropout`.
    """

    two_time: bool = False
    # pred = dx/dt, score = ∇ log p_t and denoise = E[x | x_t] of the probability-flow ODE;
    # False for consistency models, whose only output is denoise = the ODE's end point.
    has_velocity: bool = True

    def __init__(
        self,
        network: nnx.Module,
        train_time_dist_type: str | TrainingTimeDistType,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        self.network = network
        self.train_time_dist_type = TrainingTimeDistType.parse(train_time_dist_type)
        if rngs is None:
            rngs = getattr(network, "rngs", None)
        if rngs is None:
            raise InterfaceConfigError(
                "No nnx.Rngs found: pass rngs=nnx.Rngs(...) or give the network an `rngs` "
                "attribute with the streams 'time', 'noise' and 'label_dropout'."
            )
        self.rngs = rngs

    # --- time domain and path --------------------------------------------------------------
    @property
    @abc.abstractmethod
    def time_domain(self) -> TimeDomain:
        """Where noise and data are in this interface's time variable."""

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Path coefficients (α(t), σ(t)) of x_t = α(t)·x + σ(t)·n, for affine paths."""
        raise NotImplementedError(f"{type(self).__name__} does not declare an affine path.")

    # --- preconditioning ---------------------------------------------------------------------
    @abc.abstractmethod
    def c_in(self, t: jax.Array) -> jax.Array: ...

    @abc.abstractmethod
    def c_out(self, t: jax.Array) -> jax.Array: ...

    @abc.abstractmethod
    def c_skip(self, t: jax.Array) -> jax.Array: ...

    @abc.abstractmethod
    def c_noise(self, t: jax.Array) -> jax.Array: ...

    # --- training distribution ---------------------------------------------------------------
    @abc.abstractmethod
    def sample_t(self, shape: tuple[int, ...]) -> jax.Array:
        """Draw training times from the `time` stream."""

    @abc.abstractmethod
    def sample_n(self, shape: tuple[int, ...]) -> jax.Array:
        """Draw noise from the `noise` stream."""

    @abc.abstractmethod
    def sample_x_t(self, x: jax.Array, n: jax.Array, t: jax.Array) -> jax.Array: ...

    @abc.abstractmethod
    def target(self, x: jax.Array, n: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array: ...

    # --- model outputs -----------------------------------------------------------------------
    @abc.abstractmethod
    def pred(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """dx/dt of the probability-flow ODE in this interface's time variable."""

    @abc.abstractmethod
    def score(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """∇ log p_t(x_t)."""

    @abc.abstractmethod
    def loss(self, x: jax.Array, *args, return_aux: bool = False, **kwargs) -> Any:
        """Training loss (a scalar), or `(loss, aux_dict)` with `return_aux=True`."""

    def __call__(self, x: jax.Array, *args, **kwargs) -> Any:
        return self.loss(x, *args, **kwargs)

    # --- what the trainer trains (several models in one objective) ---------------------------
    def trained_trees(self) -> tuple[TreeUpdate, ...]:
        """The trained trees and their update schedule; () (the default): one tree, every
        `nnx.Param` outside `frozen_trees()`, trained by `loss` in every step."""
        return ()

    def frozen_trees(self) -> tuple[str, ...]:
        """Attributes (submodules) whose `nnx.Param`s are never trained (a distillation
        teacher): the trainer keeps them without optimizer state or EMA, unchanged bit for bit."""
        return ()

    def network_output(
        self, x_t: jax.Array, t: jax.Array, *args, **kwargs
    ) -> tuple[jax.Array, jax.Array | None]:
        """Raw backbone output F = network(c_in(t)·x_t, c_noise(t), *args, **kwargs).

        Returns `(F, hidden)`: `hidden` is the backbone's hidden tokens when `return_hidden_at`
        is among the kwargs (REPA), else None. Labels and `r` travel in `kwargs` (`y=`, `r=`).
        """
        x_in = self.bcast_right(self.c_in(t), x_t) * x_t
        out = self.network(x_in, self.c_noise(t), *args, **kwargs)
        if kwargs.get("return_hidden_at") is not None:
            return out[0], out[1]
        return out, None

    def precondition(self, x_t: jax.Array, t: jax.Array, f: jax.Array) -> jax.Array:
        """The preconditioned output c_skip(t)·x_t + c_out(t)·F (EDM's D_θ, SiT's velocity)."""
        b = self.bcast_right
        return b(self.c_skip(t), x_t) * x_t + b(self.c_out(t), x_t) * f

    def denoise(self, x_t: jax.Array, t: jax.Array, *args, **kwargs) -> jax.Array:
        """E[x | x_t] from `pred`, for affine paths: x̂ = (σ'·x_t − σ·v) / (α·σ' − α'·σ)."""
        alpha, sigma, d_alpha, d_sigma = self.path_derivatives(t)
        v = self.pred(x_t, t, *args, **kwargs)
        b = self.bcast_right
        return (b(d_sigma, x_t) * x_t - b(sigma, x_t) * v) / b(
            alpha * d_sigma - d_alpha * sigma, x_t
        )

    def path_derivatives(self, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(α, σ, dα/dt, dσ/dt) at `t`, derivatives by forward-mode autodiff."""
        (alpha, sigma), (d_alpha, d_sigma) = jax.jvp(self.alpha_sigma, (t,), (jnp.ones_like(t),))
        return alpha, sigma, d_alpha, d_sigma

    # --- helpers -----------------------------------------------------------------------------
    @staticmethod
    def mean_flat(x: jax.Array) -> jax.Array:
        """Mean over every axis but the first: `[B, ...]` → `[B]`."""
        return jnp.mean(x, axis=tuple(range(1, x.ndim)))

    @staticmethod
    def bcast_right(x: jax.Array, y: jax.Array) -> jax.Array:
        """Append trailing unit axes to `x` (`[B]`) so it broadcasts against `y` (`[B, ...]`)."""
        if x.ndim > y.ndim:
            raise ValueError(f"cannot broadcast shape {x.shape} to the right of {y.shape}")
        return x.reshape(x.shape + (1,) * (y.ndim - x.ndim))

    @staticmethod
    def t_shift(t: jax.Array, shift: float) -> jax.Array:
        """Resolution time shift t ↦ s·t / (1 + (s − 1)·t): fixes 0 and 1, monotone for s > 0."""
        return shift * t / (1 + (shift - 1) * t)
