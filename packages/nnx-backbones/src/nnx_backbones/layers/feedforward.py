"""Feed-forward layers: DiT's GELU(tanh) MLP and LightningDiT's SwiGLU.

Under tensor parallelism the first matmul is column-parallel (hidden units split over "tensor")
and the second row-parallel; the activations are pinned so that XLA emits one all-reduce after
it (`nnx_backbones.layers.parallel`).
"""

import jax
from flax import nnx

from nnx_backbones.layers.parallel import replicated, split


def _linear(d_in: int, d_out, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Module:
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    init = nnx.initializers.xavier_uniform()
    if isinstance(d_out, tuple):  # same initial values as Linear(d_in, prod(d_out)) reshaped
        return nnx.LinearGeneral(d_in, d_out, kernel_init=init, **kw)
    return nnx.Linear(d_in, d_out, kernel_init=init, **kw)


class GeluMLP(nnx.Module):
    """fc2(GELU_tanh(fc1(x))) (timm `Mlp` with `approximate="tanh"`, as in DiT)."""

    def __init__(self, dim: int, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.fc1 = _linear(dim, hidden, dtype, param_dtype, rngs)
        self.fc2 = _linear(hidden, dim, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return replicated(self.fc2(jax.nn.gelu(split(self.fc1(x)), approximate=True)))


class SwiGLU(nnx.Module):
    """w3(SiLU(x W₁) ⊙ x W₂) with W₁, W₂ merged in `w12` (xformers / LightningDiT layout).

    `w12`'s kernel is `[D, 2, H]` (W₁, W₂ on the middle axis), so a tensor split of the hidden
    units keeps each unit's W₁ and W₂ columns together. The hidden width is
    `int(2/3 · mlp_ratio · dim)` so the parameter count matches a GELU MLP.
    """

    def __init__(self, dim: int, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.hidden = hidden
        self.w12 = _linear(dim, (2, hidden), dtype, param_dtype, rngs)
        self.w3 = _linear(hidden, dim, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x12 = split(self.w12(x))
        x1, x2 = x12[..., 0, :], x12[..., 1, :]
        return replicated(self.w3(nnx.silu(x1) * x2))


def swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    """SwiGLU hidden width for a GELU-MLP-equivalent parameter budget."""
    return int(2 / 3 * int(dim * mlp_ratio))
