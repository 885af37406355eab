"""Reference statistics files (ADM, EDM) and computing statistics from image sources."""

import numpy as np
import pytest
from PIL import Image

from nnx_eval.accumulate import MetricAccumulator
from nnx_eval.errors import InputError, StatsFormatError
from nnx_eval.reference import (
    compute_reference_stats,
    folder_image_batches,
    load_reference_stats,
    npz_image_batches,
    save_adm_stats,
    save_edm_stats,
)
from nnx_eval.stats import GaussianStats


def _colour_features(images):
    """A cheap feature map: per-image mean and std of each channel (6 dims)."""
    x = np.asarray(images, np.float64) / 255.0
    return {"pool": np.concatenate([x.mean((1, 2)), x.std((1, 2))], axis=1)}


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (23, 16, 12, 3), dtype=np.uint8)


def test_adm_and_edm_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    pool = GaussianStats(rng.standard_normal(4), np.eye(4) * 2)
    spatial = GaussianStats(rng.standard_normal(3), np.eye(3))
    save_adm_stats(tmp_path / "adm.npz", pool, spatial)
    with np.load(tmp_path / "adm.npz") as data:
        assert set(data.files) == {"mu", "sigma", "mu_s", "sigma_s"}
    adm = load_reference_stats(tmp_path / "adm.npz")
    np.testing.assert_array_equal(adm["pool"].sigma, pool.sigma)
    np.testing.assert_array_equal(adm["spatial"].mu, spatial.mu)
    save_edm_stats(tmp_path / "edm.npz", pool)
    edm = load_reference_stats(tmp_path / "edm.npz")
    assert set(edm) == {"pool"}
    np.testing.assert_array_equal(edm["pool"].mu, pool.mu)


def test_bad_stats_files(tmp_path, images):
    np.savez(tmp_path / "imgs.npz", arr_0=images)
    with pytest.raises(StatsFormatError, match="compute_reference_stats"):
        load_reference_stats(tmp_path / "imgs.npz")
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3), sigma=np.zeros((2, 2)))
    with pytest.raises(StatsFormatError, match="mu/sigma"):
        load_reference_stats(tmp_path / "bad.npz")


def test_npz_streaming_reader_equals_full_load(tmp_path, images):
    np.savez(tmp_path / "batch.npz", arr_0=images, arr_1=np.arange(23))
    parts = list(npz_image_batches(tmp_path / "batch.npz", batch_size=5))
    assert [p.shape[0] for p in parts] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate(parts), images)


def test_stats_from_folder_npz_and_iterator_agree(tmp_path, images):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    np.savez(tmp_path / "batch.npz", arr_0=images)
    ref = _colour_features(images)["pool"]
    sources = [
        folder,
        tmp_path / "batch.npz",
        ({"image": images[i : i + 4], "label": 0} for i in range(0, 23, 4)),
    ]
    for source in sources:
        acc = MetricAccumulator(_colour_features, keep_key="pool", keep=10)
        stats = compute_reference_stats(source, acc, batch_size=7, progress=False)
        np.testing.assert_allclose(stats["pool"].mu, ref.mean(0), atol=1e-12)
        np.testing.assert_allclose(stats["pool"].sigma, np.cov(ref, rowvar=False), atol=1e-12)
        np.testing.assert_allclose(acc.kept_features(), ref[:10], rtol=1e-6)


def test_folder_with_mixed_sizes_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(InputError, match="share one size"):
        list(folder_image_batches(tmp_path, 4))
