"""Demo pieces: the digits classifier's held-out accuracy, the Fréchet distance against its closed
form, the quality report's pass/fail logic, and the PIL figures' pixels."""

import json

import numpy as np
import pytest
from PIL import Image

from nnx_imagenet.data.digits import load_digits_split
from nnx_imagenet.demo.classifier import DigitsClassifier, frechet_distance
from nnx_imagenet.demo.plots import save_class_grid, save_loss_curve
from nnx_imagenet.demo.report import quality_report, write_report


@pytest.fixture(scope="module")
def digits():
    split = load_digits_split()
    to_x = lambda a: a.astype(np.float32)[..., None] / 127.5 - 1.0  # noqa: E731
    (xtr, ytr), (xva, yva) = split["train"], split["val"]
    return to_x(xtr), ytr, to_x(xva), yva


@pytest.fixture(scope="module")
def classifier(digits):
    xtr, ytr, _, _ = digits
    return DigitsClassifier().fit(xtr, ytr)


def test_classifier_held_out_accuracy_at_least_95_percent(digits, classifier):
    _, _, xva, yva = digits
    assert classifier.accuracy(xva, yva) >= 0.95


def test_frechet_distance_matches_gaussian_closed_form():
    # N(0, I) vs N(m, 4I) in D dims: FD = |m|² + D·(1 + 4 − 2·2) = |m|² + D.
    rng = np.random.default_rng(0)
    d, n = 3, 200_000
    m = np.array([1.0, -2.0, 0.5])
    f1 = rng.normal(size=(n, d))
    f2 = m + 2.0 * rng.normal(size=(n, d))
    assert frechet_distance(f1, f2) == pytest.approx(m @ m + d, rel=0.01)
    # Non-commuting covariances: compare with the diagonalised formula in 2-D.
    a = np.array([[2.0, 0.3], [0.3, 0.5]])
    b = np.array([[1.0, -0.4], [-0.4, 1.5]])
    f1 = rng.multivariate_normal([0, 0], a, size=n)
    f2 = rng.multivariate_normal([0, 0], b, size=n)
    wa, va = np.linalg.eigh(a)
    ra = (va * np.sqrt(wa)) @ va.T
    wm = np.linalg.eigvalsh(ra @ b @ ra)
    want = np.trace(a) + np.trace(b) - 2 * np.sum(np.sqrt(wm))
    assert frechet_distance(f1, f2) == pytest.approx(want, abs=0.01)


def test_quality_report_passes_real_digits_and_fails_noise(tmp_path, digits, classifier):
    xtr, _, xva, yva = digits
    good = quality_report(classifier, xtr, (xva, yva), xva, yva)
    assert good["passed"] and good["sample_accuracy"] >= 0.95
    assert good["fd_samples_vs_train"] == pytest.approx(good["fd_val_vs_train"])
    noise = np.random.default_rng(0).uniform(-1, 1, size=(200, 8, 8, 1))
    bad = quality_report(classifier, xtr, (xva, yva), noise, np.arange(200) % 10)
    assert not bad["passed"] and bad["fd_samples_vs_train"] > 5 * good["fd_val_vs_train"]
    js, txt = write_report(bad, tmp_path)
    assert json.loads(js.read_text())["passed"] is False
    assert "FAILED" in txt.read_text()


def test_class_grid_pixels_and_loss_curve_png(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(-1, 1, size=(3, 2, 8, 8, 1))
    save_class_grid(imgs, tmp_path / "grid.png", scale=2, pad=2)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    ch, cw = 8 * 2 + 2, 8 * 2 + 2
    want = np.round((imgs[2, 1, 3, 5, 0] + 1) * 127.5)
    # row 2, col 1, pixel (3, 5) upscaled 2×: top-left at label_w + pad + cw, pad + 2·ch.
    y, x = 2 + 2 * ch + 3 * 2, 24 + 2 + cw + 5 * 2
    np.testing.assert_array_equal(grid[y, x], [want] * 3)
    steps = np.arange(100)
    losses = np.exp(-steps / 30) + 0.1
    losses[40] = np.nan
    save_loss_curve(steps, losses, tmp_path / "loss.png", resumed_at=[50])
    assert Image.open(tmp_path / "loss.png").size == (640, 400)
    with pytest.raises(ValueError, match="two finite"):
        save_loss_curve([0], [1.0], tmp_path / "x.png")
