"""Preprocessing: bilinear resize equals PyTorch's F.interpolate(align_corners=False), range."""

import jax.numpy as jnp
import numpy as np
import pytest

from nnx_eval.errors import InputError
from nnx_eval.preprocess import preprocess_for_inception


def _torch_bilinear_1d_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] interpolation matrix of PyTorch's bilinear, align_corners=False, no AA."""
    w = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        w[i, i0] += 1.0 - lam
        w[i, i1] += lam
    return w


def _reference(images: np.ndarray, size: int) -> np.ndarray:
    x = images.astype(np.float64) / 255.0
    wh = _torch_bilinear_1d_weights(x.shape[1], size)
    ww = _torch_bilinear_1d_weights(x.shape[2], size)
    y = np.einsum("oh,bhwc->bowc", wh, x)
    y = np.einsum("pw,bowc->bopc", ww, y)
    return 2.0 * y - 1.0


@pytest.mark.parametrize("shape", [(2, 64, 48, 3), (1, 512, 384, 3), (1, 299, 299, 3)])
def test_matches_pytorch_formula(shape):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ours = np.asarray(preprocess_for_inception(jnp.asarray(images)))
    assert ours.shape == (shape[0], 299, 299, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(
        ours, _reference(images, 299), atol=1e-4
    )  # float32 sample positions; 1 uint8 level = 7.8e-3


def test_range_and_identity_at_299():
    images = np.zeros((1, 299, 299, 3), np.uint8)
    images[0, 0, 0] = 255
    out = np.asarray(preprocess_for_inception(jnp.asarray(images)))
    assert out[0, 0, 0, 0] == 1.0 and out[0, 1, 1, 0] == -1.0


def test_rejects_float_or_gray_input():
    with pytest.raises(InputError, match="uint8"):
        preprocess_for_inception(jnp.zeros((1, 32, 32, 3), jnp.float32))
    with pytest.raises(InputError, match="grayscale"):
        preprocess_for_inception(jnp.zeros((1, 32, 32, 1), jnp.uint8))
