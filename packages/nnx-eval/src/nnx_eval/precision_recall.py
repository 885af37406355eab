"""Improved precision and recall (Kynkäänniemi et al. 2019), as in ADM's evaluator.

Each set's manifold is the union of balls around its points, the radius of point i being its
squared distance to its k-th nearest neighbour in the same set (k = 3; the point itself is the
0-th). Then

    precision = fraction of samples inside the reference manifold,
    recall    = fraction of reference points inside the sample manifold.

Squared Euclidean distances ‖u‖² − 2 u·v + ‖v‖², clamped at 0, in float32 on the default JAX
device, `row_batch` rows at a time, so memory is O(row_batch · N) (ADM: float16 with a float32
fallback; the difference only matters for ties at the radius).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nnx_eval.errors import InputError


def _sq_dists(u: jax.Array, v: jax.Array) -> jax.Array:
    """[R, D], [N, D] → [R, N] squared distances (clamped ≥ 0)."""
    nu = jnp.sum(u * u, axis=1)[:, None]
    nv = jnp.sum(v * v, axis=1)[None, :]
    return jnp.maximum(nu - 2.0 * (u @ v.T) + nv, 0.0)


@functools.partial(jax.jit, static_argnums=2)
def _kth_neighbour(rows: jax.Array, points: jax.Array, k: int) -> jax.Array:
    """[R] squared distance of each row to its k-th nearest point (the row itself is the 0-th)."""
    return -jax.lax.top_k(-_sq_dists(rows, points), k + 1)[0][:, k]


@jax.jit
def _count_inside(rows: jax.Array, centres: jax.Array, radii: jax.Array) -> jax.Array:
    """How many rows lie in at least one ball (centre j, squared radius radii[j])."""
    return jnp.sum(jnp.any(_sq_dists(rows, centres) <= radii[None, :], axis=1))


def _check(features: np.ndarray, name: str, k: int) -> np.ndarray:
    f = np.asarray(features, np.float32)
    if f.ndim != 2 or f.shape[0] <= k:
        raise InputError(f"{name} must be features [N, D] with N > k = {k}; got shape {f.shape}.")
    return f


def manifold_radii(features: np.ndarray, k: int = 3, row_batch: int = 1024) -> np.ndarray:
    """Squared distance of each point to its k-th nearest neighbour (self excluded): `[N]`."""
    f = _check(features, "features", k)
    fj = jnp.asarray(f)
    out = [_kth_neighbour(fj[i : i + row_batch], fj, k) for i in range(0, f.shape[0], row_batch)]
    return np.asarray(jnp.concatenate(out))


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, row_batch: int) -> float:
    """Fraction of `points` inside at least one ball (centre j, squared radius radii[j])."""
    c, r = jnp.asarray(centres), jnp.asarray(radii)
    inside = sum(
        int(_count_inside(jnp.asarray(points[i : i + row_batch]), c, r))
        for i in range(0, points.shape[0], row_batch)
    )
    return inside / points.shape[0]


def precision_recall(
    reference: np.ndarray, samples: np.ndarray, k: int = 3, row_batch: int = 1024
) -> tuple[float, float]:
    """(precision, recall) of `samples: [N, D]` against `reference: [M, D]` (module docstring)."""
    ref, smp = _check(reference, "reference", k), _check(samples, "samples", k)
    if ref.shape[1] != smp.shape[1]:
        raise InputError(
            f"reference and samples must have the same feature dimension; got {ref.shape[1]} "
            f"and {smp.shape[1]}."
        )
    r_ref = manifold_radii(ref, k, row_batch)
    r_smp = manifold_radii(smp, k, row_batch)
    return _coverage(smp, ref, r_ref, row_batch), _coverage(ref, smp, r_smp, row_batch)
