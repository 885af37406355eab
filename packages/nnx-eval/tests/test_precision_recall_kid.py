"""Precision/recall (k-NN manifolds) and KID against brute-force references."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from nnx_eval.errors import InputError
from nnx_eval.kid import kernel_inception_distance, mmd2_unbiased
from nnx_eval.precision_recall import manifold_radii, precision_recall


def _brute_force_pr(ref, smp, k=3):
    d_rr, d_ss, d_sr = (
        cdist(ref, ref, "sqeuclidean"),
        cdist(smp, smp, "sqeuclidean"),
        cdist(smp, ref, "sqeuclidean"),
    )
    r_ref = np.sort(d_rr, axis=1)[:, k]
    r_smp = np.sort(d_ss, axis=1)[:, k]
    precision = np.mean(np.any(d_sr <= r_ref[None, :], axis=1))
    recall = np.mean(np.any(r_smp[None, :] >= d_sr.T, axis=1))
    return precision, recall


def test_set_against_itself_is_one():
    x = np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32)
    assert precision_recall(x, x, row_batch=64) == (1.0, 1.0)


def test_far_apart_sets_are_zero():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((64, 16)), rng.standard_normal((64, 16)) + 100.0
    assert precision_recall(a, b, row_batch=64) == (0.0, 0.0)


def test_radii_and_pr_match_brute_force():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((192, 16))
    smp = 0.5 + 1.3 * rng.standard_normal((128, 16))
    np.testing.assert_allclose(
        manifold_radii(ref, 3, row_batch=64),
        np.sort(cdist(ref, ref, "sqeuclidean"), 1)[:, 3],
        rtol=1e-4,
    )
    p, r = precision_recall(ref, smp, row_batch=64)
    bp, br = _brute_force_pr(ref, smp)
    # float32 vs float64 distances may flip a point exactly at a radius: allow one point.
    assert abs(p - bp) <= 1 / 128 and abs(r - br) <= 1 / 192
    assert 0 < p < 1 and 0 < r < 1


def test_mmd_matches_explicit_sums():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((5, 3))

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    assert mmd2_unbiased(x, y) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-12)


def test_kid_same_distribution_near_zero_shifted_positive():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    same, same_std = kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std / np.sqrt(20) + 1e-3  # zero within its standard error
    assert shifted > 50 * abs(same)
    # A set against itself (one subset = the whole set): MMD²_u = 2 (S/N − tr K) / (N (N − 1))
    # with S = ΣK, a closed form of order 1/N, not exactly 0 (the cross term keeps the diagonal).
    self_kid, _ = kernel_inception_distance(a, a, num_subsets=1, subset_size=400)
    kern = (a @ a.T / 8 + 1) ** 3
    closed = 2 * (kern.sum() / 400 - np.trace(kern)) / (400 * 399)
    assert self_kid == pytest.approx(closed, rel=1e-9) and abs(self_kid) < 0.1


def test_errors():
    with pytest.raises(InputError, match="N > k"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
    with pytest.raises(InputError, match="feature dimension"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(InputError, match="same D"):
        kernel_inception_distance(np.zeros((10, 2)), np.zeros((10, 3)))
