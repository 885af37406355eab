"""A digits classifier trained on the real training split, and the Fréchet distance in its features.

The classifier is scikit-learn's `MLPClassifier` on the 64 pixels in [0, 1] (one ReLU hidden layer
of 128 units, fixed seed); its hidden activations are the feature space of the Fréchet distance
(the digits analogue of FID's Inception pool features):

    FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from nnx_imagenet.errors import DataError


def to_unit_pixels(x: np.ndarray) -> np.ndarray:
    """Images `[N, 8, 8(, 1)]` in [−1, 1] → `[N, 64]` pixels in [0, 1] (clipped)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    if x.shape[1] != 64:
        raise DataError(f"Digits images must have 64 pixels (8×8×1); got {x.shape[1]} per image.")
    return np.clip((x + 1.0) / 2.0, 0.0, 1.0)


class DigitsClassifier:
    """`fit` on real images in [−1, 1]; `predict`, `features` (hidden ReLU layer), `accuracy`."""

    def __init__(self, hidden: int = 128, seed: int = 0):
        self.model = MLPClassifier(
            hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=400, random_state=seed
        )

    def fit(self, x: np.ndarray, y: np.ndarray) -> "DigitsClassifier":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(to_unit_pixels(x), np.asarray(y))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted classes `[N]`."""
        return self.model.predict(to_unit_pixels(x))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y)))

    def features(self, x: np.ndarray) -> np.ndarray:
        """Hidden-layer activations `[N, hidden]`: ReLU(W₁·p + b₁)."""
        p = to_unit_pixels(x)
        return np.maximum(p @ self.model.coefs_[0] + self.model.intercepts_[0], 0.0)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features `f1: [N, D]` and `f2: [M, D]`."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    r1 = _sqrtm_psd(s1)
    cross = _sqrtm_psd(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))
