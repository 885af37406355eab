"""A digits classifier trained on the real training split, and the Fréchet distance in its features.

The classifier is a one-hidden-layer MLP on the 64 pixels in [0, 1] (ReLU, 256 units), trained
full-batch with Adam in one jitted `lax.scan` (fixed seed, about a second on CPU; scikit-learn's
MLP is avoided because its BLAS threads fight JAX's for the same cores). Its hidden activations
are the feature space of the Fréchet distance (the digits analogue of FID's Inception features):

    FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnx_eval import fid
from nnx_imagenet.errors import DataError


def to_unit_pixels(x: np.ndarray) -> np.ndarray:
    """Images `[N, 8, 8(, 1)]` in [−1, 1] → `[N, 64]` pixels in [0, 1] (clipped)."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    if x.shape[1] != 64:
        raise DataError(f"Digits images must have 64 pixels (8×8×1); got {x.shape[1]} per image.")
    return np.clip((x + 1.0) / 2.0, 0.0, 1.0)


def _hidden(params: dict, p: jax.Array) -> jax.Array:
    return jax.nn.relu(p @ params["w1"] + params["b1"])


def _logits(params: dict, p: jax.Array) -> jax.Array:
    return _hidden(params, p) @ params["w2"] + params["b2"]


class DigitsClassifier:
    """`fit` on real images in [−1, 1]; `predict`, `features` (hidden ReLU layer), `accuracy`.

    Args:
      hidden: hidden units.
      steps: full-batch Adam steps (lr 3e-3, weight decay 1e-4).
      seed: initialisation seed.
    """

    def __init__(self, hidden: int = 256, steps: int = 600, seed: int = 0):
        self.hidden, self.steps, self.seed = hidden, steps, seed
        self.params: dict | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> "DigitsClassifier":
        p = jnp.asarray(to_unit_pixels(x))
        y = jnp.asarray(y, jnp.int32)
        k1, k2 = jax.random.split(jax.random.key(self.seed))
        params = {
            "w1": jax.random.normal(k1, (64, self.hidden)) * np.sqrt(2.0 / 64),
            "b1": jnp.zeros(self.hidden),
            "w2": jax.random.normal(k2, (self.hidden, 10)) * np.sqrt(1.0 / self.hidden),
            "b2": jnp.zeros(10),
        }
        opt = optax.adamw(3e-3, weight_decay=1e-4)

        def loss_fn(params):
            return optax.softmax_cross_entropy_with_integer_labels(_logits(params, p), y).mean()

        def step(carry, _):
            params, state = carry
            grads = jax.grad(loss_fn)(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        @jax.jit
        def train(params):
            (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, self.steps)
            return params

        self.params = jax.device_get(train(params))
        return self

    def _check(self) -> dict:
        if self.params is None:
            raise RuntimeError("DigitsClassifier.fit must be called first.")
        return self.params

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted classes `[N]`."""
        return np.asarray(jnp.argmax(_logits(self._check(), to_unit_pixels(x)), axis=-1))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y)))

    def features(self, x: np.ndarray) -> np.ndarray:
        """Hidden-layer activations `[N, hidden]`: ReLU(W₁·p + b₁), float64."""
        return np.asarray(_hidden(self._check(), to_unit_pixels(x)), np.float64)


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features `f1: [N, D]` and `f2: [M, D]`
    (the FID formula, `nnx_eval.fid.frechet_distance`, on these features)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    return fid.frechet_distance(
        f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
    )
