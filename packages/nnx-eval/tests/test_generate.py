"""The sharded sampling loop: device-count invariance, labels, decoding, feeding metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnx_eval.accumulate import MetricAccumulator, inception_accumulator, inception_metrics
from nnx_eval.errors import InputError
from nnx_eval.generate import generate, to_uint8
from nnx_eval.inception_score import inception_score


class Collect:
    def __init__(self):
        self.images, self.labels, self.indices = [], [], []

    def update(self, images, labels, indices):
        self.images.append(images)
        self.labels.append(labels)
        self.indices.append(indices)

    def all(self):
        labels = None if self.labels[0] is None else np.concatenate(self.labels)
        return np.concatenate(self.images), labels, np.concatenate(self.indices)


def conditional_sample_fn(key, labels):
    noise = jax.random.normal(key, (labels.shape[0], 4, 4, 3))
    return jnp.tanh(0.5 * noise + 0.1 * labels[:, None, None, None].astype(jnp.float32))


def run(devices, **kw):
    c = Collect()
    kw = {"batch_size": 8, "seed": 3, "progress": False, **kw}
    generate(
        kw.pop("sample_fn", conditional_sample_fn),
        kw.pop("n", 21),
        consumers=[c],
        devices=devices,
        **kw,
    )
    return c.all()


def test_same_samples_on_1_and_8_devices():
    devs = jax.devices()
    assert len(devs) == 8  # root conftest: 8 simulated CPU devices
    results = [run(devs[:k], num_classes=10) for k in (1, 8)]
    for images, labels, indices in results[1:]:
        np.testing.assert_array_equal(images, results[0][0])
        np.testing.assert_array_equal(labels, results[0][1])
        np.testing.assert_array_equal(indices, np.arange(21))
    assert results[0][0].dtype == np.uint8 and results[0][0].shape == (21, 4, 4, 3)
    # Different seeds give different samples; labels are drawn, in range.
    other, _, _ = run(devs, num_classes=10, seed=4)
    assert not np.array_equal(other, results[0][0])
    assert results[0][1].min() >= 0 and results[0][1].max() < 10


def test_equal_per_class_and_decode_fn():
    def latent_fn(key, labels):
        return jax.random.uniform(key, (labels.shape[0], 2, 2, 3), minval=-1, maxval=1)

    def decode(z):  # a stand-in "VAE": nearest-neighbour ×2 upsampling
        return jnp.repeat(jnp.repeat(z, 2, axis=1), 2, axis=2)

    images, labels, _ = run(
        jax.devices()[:4],
        sample_fn=latent_fn,
        n=23,
        num_classes=5,
        equal_per_class=True,
        decode_fn=decode,
    )
    counts = np.bincount(labels, minlength=5)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 23
    assert images.shape == (23, 4, 4, 3)
    np.testing.assert_array_equal(images[:, 0::2, 0::2], images[:, 1::2, 1::2])


def test_unconditional_sample_fn_gets_no_labels():
    def uncond(key, labels):
        assert labels is None
        return jax.random.uniform(key, (8, 2, 2, 3), minval=-1, maxval=1)

    images, labels, _ = run(jax.devices()[:2], sample_fn=uncond, n=10)
    assert labels is None and images.shape == (10, 2, 2, 3)


def test_to_uint8_rounding():
    x = jnp.array([-1.5, -1.0, 0.0, 1.0 / 127.5 - 1e-6, 1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(to_uint8(x)), [0, 0, 128, 128, 255, 255])


def test_feeds_metric_accumulators():
    def features(images):
        x = np.asarray(images, np.float64)
        flat = x.reshape(x.shape[0], -1)
        return {"pool": flat[:, :5], "logits": flat[:, 5:15] / 40.0}

    acc = MetricAccumulator(
        features,
        stats_keys=("pool",),
        logits_key="logits",
        num_samples=21,
        is_splits=3,
        keep_key="pool",
        keep=6,
    )
    collect = Collect()
    generate(
        conditional_sample_fn,
        21,
        batch_size=8,
        seed=3,
        num_classes=10,
        consumers=[acc, collect],
        devices=jax.devices()[:4],
        progress=False,
    )
    images = collect.all()[0]
    feats = features(images)
    stats = acc.stats()["pool"]
    np.testing.assert_allclose(stats.mu, feats["pool"].mean(0), atol=1e-10)
    np.testing.assert_allclose(stats.sigma, np.cov(feats["pool"], rowvar=False), atol=1e-9)
    assert acc.inception_score.result() == pytest.approx(inception_score(feats["logits"], 3))
    np.testing.assert_allclose(acc.kept_features(), feats["pool"][:6])


def test_inception_metrics_of_a_set_against_itself():
    """`inception_metrics` plumbing with cheap stand-in features (the real network is tested in
    test_inception): FID = sFID = 0, precision = recall = 1, IS and KID finite."""

    def features(images):
        x = np.asarray(images, np.float64).reshape(images.shape[0], -1) / 255.0
        return {"pool": x[:, :6], "spatial": x[:, 6:10], "logits_unbiased": 4 * x[:, 10:20]}

    acc = inception_accumulator(features, num_samples=40, keep=40, is_splits=4)
    generate(
        conditional_sample_fn,
        40,
        batch_size=8,
        seed=0,
        num_classes=3,
        consumers=[acc],
        devices=jax.devices()[:8],
        progress=False,
    )
    ref = acc.stats()
    out = inception_metrics(acc, ref, acc.kept_features(), kid_subsets=3, kid_subset_size=20)
    assert abs(out["fid"]) < 1e-9 and abs(out["sfid"]) < 1e-9
    assert out["precision"] == out["recall"] == 1.0
    assert out["inception_score"] >= 1.0 and np.isfinite(out["kid"])
    no_spatial = inception_metrics(acc, {"pool": ref["pool"]})
    assert set(no_spatial) == {"fid", "inception_score", "inception_score_std"}


def test_bad_batch_size():
    with pytest.raises(InputError, match="multiple of the 8"):
        generate(conditional_sample_fn, 10, batch_size=12, seed=0, num_classes=3)
    with pytest.raises(InputError, match="num_classes"):
        generate(conditional_sample_fn, 10, batch_size=8, seed=0, equal_per_class=True)


def test_nonfinite_samples_raise_with_their_count():
    def nan_for_even_labels(key, labels):
        x = conditional_sample_fn(key, labels)
        bad = (labels % 2 == 0)[:, None, None, None]
        return jnp.where(bad & (jnp.arange(3) == 1), jnp.nan, x)  # one NaN channel

    seen = Collect()
    with pytest.raises(InputError, match=r"4 of the 8 samples of batch 0 .* NaN or Inf"):
        generate(nan_for_even_labels, 16, batch_size=8, seed=0, num_classes=4,
                 equal_per_class=True, consumers=[seen], progress=False)  # fmt: skip
    assert not seen.images  # nothing reached the metrics
    inf_in_decode = lambda z: jnp.where(z > 0.9, jnp.inf, z)  # noqa: E731
    with pytest.raises(InputError, match="NaN or Inf"):
        generate(conditional_sample_fn, 8, batch_size=8, seed=0, num_classes=4,
                 decode_fn=lambda z: inf_in_decode(z * 10), progress=False)  # fmt: skip
