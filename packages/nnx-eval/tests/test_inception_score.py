"""Inception Score: closed-form extremes, an independent per-split reference, streaming order."""

import numpy as np
import pytest
import scipy.special

from nnx_eval.errors import InputError
from nnx_eval.inception_score import InceptionScoreAccumulator, inception_score


def _reference_is(logits, splits):
    """improved-GAN: per split, exp(mean KL(p(y|x) ‖ mean p)); scipy softmax, plain formula."""
    p = scipy.special.softmax(logits.astype(np.float64), axis=1)
    n = p.shape[0]
    scores = []
    for k in range(splits):
        part = p[k * n // splits : (k + 1) * n // splits]
        py = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), 1))))
    return np.mean(scores), np.std(scores)


def test_uniform_logits_give_one():
    mean, std = inception_score(np.zeros((100, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_confident_diverse_logits_give_number_of_classes():
    c = 20
    labels = np.tile(np.arange(c), 10)  # every split of 20 holds each class once
    logits = np.full((200, c), -1e4)
    logits[np.arange(200), labels] = 1e4
    mean, _ = inception_score(logits, splits=10)
    assert mean == pytest.approx(c, rel=1e-9)


def test_confident_single_class_gives_one():
    logits = np.zeros((50, 10))
    logits[:, 3] = 1e4
    assert inception_score(logits, splits=5)[0] == pytest.approx(1.0, abs=1e-9)


def test_matches_reference_on_random_logits_and_uneven_splits():
    logits = np.random.default_rng(0).standard_normal((1003, 50)) * 3
    for splits in (1, 7, 10):
        mean, std = inception_score(logits, splits)
        ref_mean, ref_std = _reference_is(logits, splits)
        assert mean == pytest.approx(ref_mean, rel=1e-10)
        assert std == pytest.approx(ref_std, rel=1e-8, abs=1e-12)


def test_streaming_out_of_order_with_indices_equals_batch():
    logits = np.random.default_rng(1).standard_normal((120, 30)) * 2
    order = np.random.default_rng(2).permutation(120)
    acc = InceptionScoreAccumulator(120, splits=10)
    for chunk in np.array_split(order, 9):
        acc.update(logits[chunk], chunk)
    assert acc.result() == pytest.approx(inception_score(logits, 10), rel=1e-10)


def test_errors():
    with pytest.raises(InputError, match="splits"):
        InceptionScoreAccumulator(5, splits=10)
    acc = InceptionScoreAccumulator(20, splits=2)
    acc.update(np.zeros((10, 4)))
    with pytest.raises(InputError, match="expected 20"):
        acc.result()
    with pytest.raises(InputError, match="sized for 20"):
        acc.update(np.zeros((11, 4)))
    logits = np.zeros((4, 4))
    logits[1, 2], logits[3, 0] = np.nan, -np.inf
    with pytest.raises(InputError, match="2 of 4 logit rows contain NaN or Inf"):
        acc.update(logits)
