"""Inception-v3 for FID/IS/sFID: the TF-2015 graph (`inception-2015-12-05`), pytorch-fid's port.

Input is an image batch already preprocessed by `nnx_eval.preprocess.preprocess_for_inception`
(`[B, 299, 299, 3]` float32 in [−1, 1]). Outputs (one forward, three metrics):

| key               | shape             | TF graph tensor             | used by |
|-------------------|-------------------|-----------------------------|---------|
| `pool`            | `[B, 2048]`       | `pool_3:0`                  | FID, precision/recall, KID |
| `spatial`         | `[B, 17·17·7]`    | `mixed_6/conv:0[..., :7]`   | sFID (ADM evaluator) |
| `logits`          | `[B, 1008]`       | `softmax/logits` (with bias) | — |
| `logits_unbiased` | `[B, 1008]`       | `softmax/logits/MatMul`     | IS (ADM, improved-GAN) |

`mixed_6/conv` is the 1×1 branch (after BN + ReLU) of the 7th mixed block, i.e. torchvision's
`Mixed_6d.branch1x1`; ADM keeps its first 7 channels and flattens `[17, 17, 7]` in (h, w, c)
order, giving 2023 features at 299×299. The network works for any input of at least 75×75
(spatial size then 3×3, `spatial` has 3·3·7 = 63 features); only 299 matches the references.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_eval.errors import InputError
from nnx_eval.inception_blocks import (
    BasicConv2d,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    max_pool_3x3,
)

MIN_SIZE = 75  # smallest input whose Mixed_7c output is still ≥ 1×1
NUM_CLASSES = 1008  # 1000 ImageNet classes + 8 unused outputs of the 2015 graph
POOL_DIM = 2048
SPATIAL_CHANNELS = 7  # ADM keeps mixed_6/conv[..., :7]
SPATIAL_DIM = 17 * 17 * SPATIAL_CHANNELS  # 2023 at 299×299


class InceptionV3FID(nnx.Module):
    """FID Inception-v3; attribute names follow pytorch-fid so weights map one-to-one.

    `__call__(x: [B, H, W, 3] in [−1, 1]) -> dict(pool, spatial, logits, logits_unbiased)`.
    Parameters and compute are float32 (the reference numbers are float32).
    """

    def __init__(self, *, rngs: nnx.Rngs):
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, (3, 3), stride=2, rngs=rngs)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, (3, 3), rngs=rngs)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, (3, 3), padding=(1, 1), rngs=rngs)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, (1, 1), rngs=rngs)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, (3, 3), rngs=rngs)
        self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
        self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
        self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
        self.Mixed_6a = InceptionB(288, rngs=rngs)
        self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
        self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
        self.Mixed_7a = InceptionD(768, rngs=rngs)
        self.Mixed_7b = InceptionE(1280, pool="avg", rngs=rngs)
        self.Mixed_7c = InceptionE(2048, pool="max", rngs=rngs)
        self.fc = nnx.Linear(POOL_DIM, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < MIN_SIZE:
            raise InputError(
                f"InceptionV3FID expects [B, H, W, 3] with H, W ≥ {MIN_SIZE} (299 for reference "
                f"numbers), got shape {tuple(x.shape)}; preprocess with "
                "nnx_eval.preprocess.preprocess_for_inception."
            )
        # Stem: 299 → 149 → 147 → 147 → 73 → 73 → 71 → 35.
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = max_pool_3x3(x, stride=2, padding=0)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = max_pool_3x3(x, stride=2, padding=0)
        # 35×35 → 17×17 → 8×8 mixed blocks.
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(x)
        x, _ = self.Mixed_6b(x)
        x, _ = self.Mixed_6c(x)
        x, mixed_6_conv = self.Mixed_6d(x)
        x, _ = self.Mixed_6e(x)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        # pool_3: global average pool over H, W.
        pool = jnp.mean(x, axis=(1, 2))
        spatial = mixed_6_conv[..., :SPATIAL_CHANNELS].reshape(x.shape[0], -1)
        # softmax/logits/MatMul (no bias) is what ADM and improved-GAN feed to the softmax for IS.
        logits_unbiased = pool @ self.fc.kernel[...]
        return {
            "pool": pool,
            "spatial": spatial,
            "logits": logits_unbiased + self.fc.bias[...],
            "logits_unbiased": logits_unbiased,
        }
