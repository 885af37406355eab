"""Stochastic interpolants I_t = α(t)·x0 + β(t)·x1 (source x0 at t = 0, data x1 at t = 1).

The flow-map objectives take one of these as a parameter. Notation of the flow-map spec: x0 is the
source (Gaussian noise z), x1 the data, α(0) = β(1) = 1 and α(1) = β(0) = 0 (VP only
approximately at t = 0, see `VP`). The conditional velocity is İ_t = α'(t)·x0 + β'(t)·x1.

Mapping onto the `Interfaces` notation x_t = a(t)·x + σ(t)·n (x data, n noise): a = β, σ = α, so
`alpha_sigma(t)` returns (β(t), α(t)). Mind the swap: the spec's α multiplies the noise.

    Linear         α = 1 − t           β = t
    Trigonometric  α = cos(πt/2)       β = sin(πt/2)
    VP             β = exp(−¼(1−t)²(b_max − b_min) − ½(1−t)·b_min),  α = sqrt(1 − β²)
                   (the VP-SDE of Song et al. with the diffusion time τ = 1 − t)
"""

import abc
import math

import jax
import jax.numpy as jnp

from nnx_interfaces.errors import InterfaceConfigError


class Interpolant(abc.ABC):
    """A pair of schedules (α, β) on t ∈ [0, 1] with their derivatives.

    Attributes:
      name: short name ("linear", "trig", "vp").
      data_eps: the objectives keep t ≤ 1 − data_eps (0 unless a derivative diverges at t = 1).
    """

    name: str = ""
    data_eps: float = 0.0

    @abc.abstractmethod
    def alpha(self, t: jax.Array) -> jax.Array:
        """Coefficient α(t) of the source x0 (noise), any shape."""

    @abc.abstractmethod
    def beta(self, t: jax.Array) -> jax.Array:
        """Coefficient β(t) of the data x1, any shape."""

    @abc.abstractmethod
    def d_alpha(self, t: jax.Array) -> jax.Array:
        """dα/dt."""

    @abc.abstractmethod
    def d_beta(self, t: jax.Array) -> jax.Array:
        """dβ/dt."""

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(data coefficient, noise coefficient) = (β(t), α(t)) in the `Interfaces` notation."""
        return self.beta(t), self.alpha(t)

    def interpolate(self, x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
        """I_t = α(t)·x0 + β(t)·x1 with `t: [B]`, `x0, x1: [B, ...]`."""
        return _right(self.alpha(t), x0) * x0 + _right(self.beta(t), x1) * x1

    def velocity(self, x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
        """İ_t = α'(t)·x0 + β'(t)·x1, the conditional velocity (flow-matching target)."""
        return _right(self.d_alpha(t), x0) * x0 + _right(self.d_beta(t), x1) * x1

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _right(a: jax.Array, x: jax.Array) -> jax.Array:
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


class Linear(Interpolant):
    """I_t = (1 − t)·x0 + t·x1 (rectified flow; the flow-map spec's default)."""

    name = "linear"

    def alpha(self, t):
        return 1.0 - t

    def beta(self, t):
        return t

    def d_alpha(self, t):
        return -jnp.ones_like(t)

    def d_beta(self, t):
        return jnp.ones_like(t)


class Trigonometric(Interpolant):
    """I_t = cos(πt/2)·x0 + sin(πt/2)·x1 (variance preserving for unit-variance data)."""

    name = "trig"

    def alpha(self, t):
        return jnp.cos(0.5 * math.pi * t)

    def beta(self, t):
        return jnp.sin(0.5 * math.pi * t)

    def d_alpha(self, t):
        return -0.5 * math.pi * jnp.sin(0.5 * math.pi * t)

    def d_beta(self, t):
        return 0.5 * math.pi * jnp.cos(0.5 * math.pi * t)


class VP(Interpolant):
    """Variance-preserving schedule of the VP-SDE (linear β(τ) from b_min to b_max), τ = 1 − t.

    β(t) = exp(−½∫_0^{1−t} b(u) du) = exp(−¼(1−t)²(b_max − b_min) − ½(1−t)·b_min), α = √(1 − β²).
    At t = 0, β = exp(−(b_max + b_min)/4) ≈ 0.0067 for the defaults (not exactly 0), and α' diverges
    like (1 − t)^(−1/2) at t = 1, so `data_eps` = 1e-3 keeps the objectives away from t = 1.

    Args:
      b_min, b_max: the VP-SDE noise rates (0.1 and 20 in Song et al. 2021).
      data_eps: smallest allowed 1 − t.
    """

    name = "vp"

    def __init__(self, b_min: float = 0.1, b_max: float = 20.0, data_eps: float = 1e-3):
        if not (0 <= b_min < b_max):
            raise InterfaceConfigError(
                f"VP interpolant needs 0 ≤ b_min < b_max; got b_min={b_min}, b_max={b_max}."
            )
        if not (0 < data_eps < 0.5):
            raise InterfaceConfigError(
                f"VP interpolant needs 0 < data_eps < 0.5 (α' diverges at t = 1); got {data_eps}."
            )
        self.b_min, self.b_max, self.data_eps = float(b_min), float(b_max), float(data_eps)

    def _log_beta(self, t):
        tau = 1.0 - t
        return -0.25 * tau**2 * (self.b_max - self.b_min) - 0.5 * tau * self.b_min

    def beta(self, t):
        return jnp.exp(self._log_beta(t))

    def alpha(self, t):
        # √(1 − β²) = √(−expm1(2 log β)), accurate when β → 1.
        return jnp.sqrt(-jnp.expm1(2.0 * self._log_beta(t)))

    def d_beta(self, t):
        # d log β / dt = ½(1 − t)(b_max − b_min) + ½ b_min = ½ b(τ).
        tau = 1.0 - t
        return self.beta(t) * (0.5 * tau * (self.b_max - self.b_min) + 0.5 * self.b_min)

    def d_alpha(self, t):
        # α' = −β β' / α.
        return -self.beta(t) * self.d_beta(t) / self.alpha(t)

    def __repr__(self) -> str:
        return f"VP(b_min={self.b_min}, b_max={self.b_max}, data_eps={self.data_eps})"


INTERPOLANTS = {"linear": Linear, "trig": Trigonometric, "vp": VP}


def get_interpolant(name: "str | Interpolant") -> Interpolant:
    """An `Interpolant` by name ("linear", "trig", "vp"), or the object itself."""
    if isinstance(name, Interpolant):
        return name
    try:
        return INTERPOLANTS[str(name).lower()]()
    except KeyError:
        raise InterfaceConfigError(
            f"Unknown interpolant {name!r}; expected one of {sorted(INTERPOLANTS)} or an "
            "nnx_interfaces.interpolants.Interpolant instance."
        ) from None
