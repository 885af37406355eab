"""Building blocks of the FID Inception-v3 (the TF-2015 graph as ported by pytorch-fid).

Each block mirrors one pytorch-fid / torchvision module so that parameter names line up with
the released `pt_inception-2015-12-05` state dict (`Mixed_5b.branch1x1.conv.weight`, ...).
Differences from torchvision's Inception-v3, all taken from pytorch-fid's `FIDInception*`:

- `InceptionA`, `InceptionC`, `InceptionE(pool="avg")`: the pooling branch is a 3×3 average
  pool, stride 1, padding 1 that does *not* count the padded zeros (TF semantics,
  `count_include_pad=False`).
- `InceptionE(pool="max")` (Mixed_7c): the pooling branch is a 3×3 *max* pool.

All tensors are channels-last `[B, H, W, C]`.

Inference form (`nnx_eval.inception_fold.fold_inception`): every conv → BN pair becomes one conv
with bias, W' = W · γ/√(σ² + ε), b' = β − μ · γ/√(σ² + ε) (`FoldedConv2d`), and the 1×1 convs
that read a block's input — including the average-pool branch, since a 3×3 average pool is
linear and commutes with a 1×1 conv: conv(avgpool(x)) = avgpool(conv(x)) — become one matmul
(`Fused1x1`). Blocks with `heads` set call it instead of their separate 1×1 convs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_eval.conv import conv2d

Pad = tuple[tuple[int, int], tuple[int, int]]


def _pad(ph: int, pw: int) -> Pad:
    return ((ph, ph), (pw, pw))


class BasicConv2d(nnx.Module):
    """conv (no bias) → BatchNorm (eps = 0.001, running statistics) → ReLU."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: tuple[int, int],
        *,
        stride: int = 1,
        padding: tuple[int, int] = (0, 0),
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            c_in,
            c_out,
            kernel_size=kernel,
            strides=(stride, stride),
            padding=_pad(*padding),
            use_bias=False,
            rngs=rngs,
        )
        self.bn = nnx.BatchNorm(c_out, epsilon=1e-3, use_running_average=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))

    def folded(self) -> tuple[jax.Array, jax.Array]:
        """(W' [kh, kw, in, out], b' [out]): this conv with its BatchNorm folded in."""
        k = self.conv.kernel[...]
        inv = self.bn.scale[...] * jax.lax.rsqrt(self.bn.var[...] + self.bn.epsilon)
        return k * inv, self.bn.bias[...] - self.bn.mean[...] * inv


class FoldedConv2d(nnx.Module):
    """`BasicConv2d` after folding BatchNorm into the conv: relu(conv(x, W') + b')."""

    def __init__(self, conv: BasicConv2d):
        w, b = conv.folded()
        self.kernel, self.bias = nnx.Param(w), nnx.Param(b)
        self.strides = conv.conv.strides
        self.padding = conv.conv.padding

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv2d(x, self.kernel[...], self.strides, self.padding)
        return jax.nn.relu(y + self.bias[...])


class Fused1x1(nnx.Module):
    """Several folded 1×1 convs of one input as one matmul x @ [W₁ | … | W_n].

    With `pool_last`, the last conv is the average-pool branch: relu(avgpool(x @ W_n) + b_n),
    which equals relu(conv(avgpool(x)) + b_n) because both the pool and the conv are linear.
    """

    def __init__(self, convs: list[BasicConv2d], *, pool_last: bool):
        ws, bs = zip(*(c.folded() for c in convs), strict=True)
        shapes = [(w.shape[:2], c.conv.strides) for w, c in zip(ws, convs, strict=True)]
        if any(s != ((1, 1), (1, 1)) for s in shapes):
            raise ValueError("Fused1x1 takes 1×1, stride-1 convs only")
        self.kernel = nnx.Param(jnp.concatenate([w[0, 0] for w in ws], axis=-1))
        self.bias = nnx.Param(jnp.concatenate(bs))
        self.sizes = tuple(int(w.shape[-1]) for w in ws)
        self.pool_last = pool_last

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        z = x @ self.kernel[...]
        if not self.pool_last:
            return list(jnp.split(jax.nn.relu(z + self.bias[...]), _cuts(self.sizes), axis=-1))
        n = self.sizes[-1]
        head = jax.nn.relu(z[..., :-n] + self.bias[:-n])
        pooled = jax.nn.relu(avg_pool_3x3_same(z[..., -n:]) + self.bias[-n:])
        return [*jnp.split(head, _cuts(self.sizes[:-1]), axis=-1), pooled]


def _cuts(sizes: tuple[int, ...]) -> list[int]:
    return [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)]


def avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    """3×3 average pool, stride 1, padding 1, padded zeros not counted (TF `AvgPool` 'SAME')."""
    return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1), count_include_pad=False)


def max_pool_3x3(x: jax.Array, stride: int, padding: int) -> jax.Array:
    """3×3 max pool (padding, if any, with −∞ so it never wins)."""
    return nnx.max_pool(x, (3, 3), strides=(stride, stride), padding=_pad(padding, padding))


class InceptionA(nnx.Module):
    """Mixed_5b/5c/5d: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avgpool→1×1 (FIDInceptionA)."""

    def __init__(self, c_in: int, pool_features: int, *, rngs: nnx.Rngs):
        self.branch1x1 = BasicConv2d(c_in, 64, (1, 1), rngs=rngs)
        self.branch5x5_1 = BasicConv2d(c_in, 48, (1, 1), rngs=rngs)
        self.branch5x5_2 = BasicConv2d(48, 64, (5, 5), padding=(2, 2), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, (1, 1), rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, (3, 3), padding=(1, 1), rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, (3, 3), padding=(1, 1), rngs=rngs)
        self.branch_pool = BasicConv2d(c_in, pool_features, (1, 1), rngs=rngs)
        self.heads: Fused1x1 | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.heads is None:
            b1, b5, b3 = self.branch1x1(x), self.branch5x5_1(x), self.branch3x3dbl_1(x)
            bp = self.branch_pool(avg_pool_3x3_same(x))
        else:
            b1, b5, b3, bp = self.heads(x)
        b5 = self.branch5x5_2(b5)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(b3))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
    """Mixed_6a (grid reduction 35→17): 3×3/2 | 1×1→3×3→3×3/2 | maxpool/2 (torchvision)."""

    def __init__(self, c_in: int, *, rngs: nnx.Rngs):
        self.branch3x3 = BasicConv2d(c_in, 384, (3, 3), stride=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, (1, 1), rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, (3, 3), padding=(1, 1), rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, (3, 3), stride=2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = max_pool_3x3(x, stride=2, padding=0)
        return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nnx.Module):
    """Mixed_6b–6e: 1×1 | factorised 7×7 | double factorised 7×7 | avgpool→1×1 (FIDInceptionC).

    `branch1x1(x)` of Mixed_6d is TF's `mixed_6/conv` tensor used for sFID; `__call__` can
    return it alongside the block output.
    """

    def __init__(self, c_in: int, c7: int, *, rngs: nnx.Rngs):
        self.branch1x1 = BasicConv2d(c_in, 192, (1, 1), rngs=rngs)
        self.branch7x7_1 = BasicConv2d(c_in, c7, (1, 1), rngs=rngs)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, (1, 1), rngs=rngs)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = BasicConv2d(c_in, 192, (1, 1), rngs=rngs)
        self.heads: Fused1x1 | None = None

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [B, H, W, 768] → (out [B, H, W, 768], branch1x1 [B, H, W, 192])."""
        if self.heads is None:
            b1, b7, bd = self.branch1x1(x), self.branch7x7_1(x), self.branch7x7dbl_1(x)
            bp = self.branch_pool(avg_pool_3x3_same(x))
        else:
            b1, b7, bd, bp = self.heads(x)
        b7 = self.branch7x7_3(self.branch7x7_2(b7))
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            bd = conv(bd)
        bd = self.branch7x7dbl_5(bd)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1), b1


class InceptionD(nnx.Module):
    """Mixed_7a (grid reduction 17→8): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | maxpool/2 (torchvision)."""

    def __init__(self, c_in: int, *, rngs: nnx.Rngs):
        self.branch3x3_1 = BasicConv2d(c_in, 192, (1, 1), rngs=rngs)
        self.branch3x3_2 = BasicConv2d(192, 320, (3, 3), stride=2, rngs=rngs)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, (1, 1), rngs=rngs)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = BasicConv2d(192, 192, (3, 3), stride=2, rngs=rngs)
        self.heads: Fused1x1 | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.heads is None:
            b3, b7 = self.branch3x3_1(x), self.branch7x7x3_1(x)
        else:
            b3, b7 = self.heads(x)
        b3 = self.branch3x3_2(b3)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        bp = max_pool_3x3(x, stride=2, padding=0)
        return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nnx.Module):
    """Mixed_7b (`pool="avg"`, FIDInceptionE_1) and Mixed_7c (`pool="max"`, FIDInceptionE_2)."""

    def __init__(self, c_in: int, *, pool: str, rngs: nnx.Rngs):
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(c_in, 320, (1, 1), rngs=rngs)
        self.branch3x3_1 = BasicConv2d(c_in, 384, (1, 1), rngs=rngs)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, (1, 1), rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, (3, 3), padding=(1, 1), rngs=rngs)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = BasicConv2d(c_in, 192, (1, 1), rngs=rngs)
        self.heads: Fused1x1 | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.heads is None:
            b1, b3, bd = self.branch1x1(x), self.branch3x3_1(x), self.branch3x3dbl_1(x)
            pooled = avg_pool_3x3_same(x) if self.pool == "avg" else max_pool_3x3(x, 1, 1)
            bp = self.branch_pool(pooled)
        elif self.pool == "avg":
            b1, b3, bd, bp = self.heads(x)
        else:  # a max pool does not commute with the conv: the pool branch stays separate
            b1, b3, bd = self.heads(x)
            bp = self.branch_pool(max_pool_3x3(x, 1, 1))
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        bd = self.branch3x3dbl_2(bd)
        bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)
