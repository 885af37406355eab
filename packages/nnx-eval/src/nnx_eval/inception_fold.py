"""The inference form of the FID Inception-v3: BatchNorm folded, sibling 1×1 convs fused.

`fold_inception(model)` returns a new `InceptionV3FID` computing the same function (to float32
rounding; pinned by the pytorch-fid golden fixture in tests/test_inception.py) with fewer,
larger ops:

- conv → BN(γ, β, μ, σ², ε) → ReLU becomes relu(conv(x, W') + b') with
  W' = W · γ/√(σ² + ε) and b' = β − μ · γ/√(σ² + ε)  (`FoldedConv2d`), folded once here;
- the 1×1 convs that read a mixed block's input become one matmul x @ [W₁ | … | W_n]
  (`Fused1x1`); the average-pool branch joins them because avgpool(x) @ W = avgpool(x @ W)
  (a 3×3 mean of a linear map is the linear map of the mean), which also pools C_out instead
  of C_in channels. Mixed_7c's pool branch is a max pool, which does not commute, and stays.

The released-weights layout (`inception_mapping`, `save_inception_weights`) belongs to the
unfolded model; fold after loading.
"""

from __future__ import annotations

from flax import nnx

from nnx_eval.inception import InceptionV3FID
from nnx_eval.inception_blocks import (
    BasicConv2d,
    FoldedConv2d,
    Fused1x1,
    InceptionA,
    InceptionC,
    InceptionD,
    InceptionE,
)

# Per block type: the 1×1 convs on the block input, in the order `heads(x)` returns them.
_HEADS: dict[type, tuple[str, ...]] = {
    InceptionA: ("branch1x1", "branch5x5_1", "branch3x3dbl_1", "branch_pool"),
    InceptionC: ("branch1x1", "branch7x7_1", "branch7x7dbl_1", "branch_pool"),
    InceptionD: ("branch3x3_1", "branch7x7x3_1"),
    InceptionE: ("branch1x1", "branch3x3_1", "branch3x3dbl_1", "branch_pool"),
}


def _fold_block(block: nnx.Module) -> None:
    names = _HEADS.get(type(block), ())
    if isinstance(block, InceptionE) and block.pool == "max":
        names = names[:-1]
    if names:
        pool_last = names[-1] == "branch_pool"
        heads = Fused1x1([getattr(block, n) for n in names], pool_last=pool_last)
        block.heads = nnx.data(heads)
        for n in names:
            delattr(block, n)
    for name, value in list(vars(block).items()):
        if isinstance(value, BasicConv2d):
            setattr(block, name, FoldedConv2d(value))


def is_folded(model: InceptionV3FID) -> bool:
    """Whether `model` is already in the folded inference form."""
    return isinstance(model.Conv2d_1a_3x3, FoldedConv2d)


def fold_inception(model: InceptionV3FID) -> InceptionV3FID:
    """A folded copy of `model` (the argument is left unchanged); see the module docstring."""
    if not isinstance(model, InceptionV3FID):
        raise TypeError(f"fold_inception expects an InceptionV3FID, got {type(model).__name__}")
    if is_folded(model):
        raise ValueError("fold_inception: this model is already folded")
    folded = nnx.clone(model)
    for name, value in list(vars(folded).items()):
        if isinstance(value, BasicConv2d):
            setattr(folded, name, FoldedConv2d(value))
        elif isinstance(value, nnx.Module) and not isinstance(value, nnx.Linear):
            _fold_block(value)
    return folded
