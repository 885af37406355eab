"""Training-time distributions shared by every interface: uniform, lognormal, logitnormal.

Each family has parameters (mu, sigma) and is mapped onto an interface's time interval
[low, high] (SiT/MeanFlow/DDPM: [0, 1]; EDM: [σ_min, σ_max]) by one rule for everyone:

    uniform      t ~ U(low, high)                                   (mu, sigma unused)
    logitnormal  t = low + (high − low) · sigmoid(mu + sigma·z),  z ~ N(0, 1)
    lognormal    t = exp(mu + sigma·z) conditioned on low ≤ t ≤ high  (a truncated lognormal,
                 drawn exactly by inverse-CDF sampling of z from the truncated normal)

So SiT's logit-normal (SD3: mu = 0, sigma = 1) and EDM's log-normal (P_mean = −1.2, P_std = 1.2)
are the usual ones, and the other combinations stay inside the interface's domain (no clipping
atoms at the ends). With low = 0 the lognormal is only truncated above.
"""

import math

import jax
import jax.numpy as jnp

from nnx_interfaces.base import TrainingTimeDistType
from nnx_interfaces.errors import InterfaceConfigError


def check_time_dist(
    dist_type: str | TrainingTimeDistType, mu: float, sigma: float, low: float, high: float
) -> TrainingTimeDistType:
    """Validate a time distribution once, at construction; returns the parsed enum.

    Raises:
      InterfaceConfigError: unknown family, empty interval, sigma ≤ 0, or a lognormal whose
        interval has no positive part.
    """
    dist = TrainingTimeDistType.parse(dist_type)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise InterfaceConfigError(
            f"Time interval must satisfy low < high (finite); got [{low}, {high}]. "
            "Check the interface's time domain (e.g. sigma_min < sigma_max)."
        )
    if dist != TrainingTimeDistType.UNIFORM and not sigma > 0:
        raise InterfaceConfigError(
            f"{dist.value} time distribution needs sigma > 0; got sigma={sigma}. "
            "Pass a positive t_sigma."
        )
    if dist == TrainingTimeDistType.LOGNORMAL and low < 0:
        raise InterfaceConfigError(
            f"lognormal times are positive but the interval [{low}, {high}] starts below 0; "
            "use uniform or logitnormal for this domain."
        )
    return dist


def sample_time(
    key: jax.Array,
    shape: tuple[int, ...],
    dist_type: str | TrainingTimeDistType,
    *,
    mu: float = 0.0,
    sigma: float = 1.0,
    low: float = 0.0,
    high: float = 1.0,
) -> jax.Array:
    """Draw training times of `shape` (usually `(B,)`) in [low, high] (see the module docstring).

    Args:
      key: a PRNG key (interfaces pass `rngs.time()`).
      shape: output shape, `(B,)` for one time per example.
      dist_type: "uniform", "lognormal" or "logitnormal" (or the enum).
      mu, sigma: location and scale of the underlying normal (ignored for uniform).
      low, high: the interval the times live in.
    Returns:
      float32 array of `shape` with values in [low, high].
    """
    dist = check_time_dist(dist_type, mu, sigma, low, high)
    if dist == TrainingTimeDistType.UNIFORM:
        return jax.random.uniform(key, shape, jnp.float32, low, high)
    if dist == TrainingTimeDistType.LOGITNORMAL:
        z = jax.random.normal(key, shape, jnp.float32)
        return low + (high - low) * jax.nn.sigmoid(mu + sigma * z)
    # Truncated lognormal: z ~ N(0, 1) restricted to [(log low − mu)/sigma, (log high − mu)/sigma].
    z_lo = -jnp.inf if low <= 0 else (math.log(low) - mu) / sigma
    z_hi = (math.log(high) - mu) / sigma
    z = jax.random.truncated_normal(key, z_lo, z_hi, shape, jnp.float32)
    return jnp.clip(jnp.exp(mu + sigma * z), low, high)
