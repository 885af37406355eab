"""Feed-forward layers: DiT's GELU(tanh) MLP and LightningDiT's SwiGLU."""

import jax
from flax import nnx


def _linear(d_in: int, d_out: int, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nnx.initializers.xavier_uniform(),
        rngs=rngs,
    )


class GeluMLP(nnx.Module):
    """fc2(GELU_tanh(fc1(x))) (timm `Mlp` with `approximate="tanh"`, as in DiT)."""

    def __init__(self, dim: int, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.fc1 = _linear(dim, hidden, dtype, param_dtype, rngs)
        self.fc2 = _linear(hidden, dim, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=True))


class SwiGLU(nnx.Module):
    """w3(SiLU(x W₁) ⊙ x W₂) with W₁, W₂ merged in `w12` (xformers / LightningDiT layout).

    The hidden width is `int(2/3 · mlp_ratio · dim)` so the parameter count matches a GELU MLP.
    """

    def __init__(self, dim: int, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.hidden = hidden
        self.w12 = _linear(dim, 2 * hidden, dtype, param_dtype, rngs)
        self.w3 = _linear(hidden, dim, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x12 = self.w12(x)
        x1, x2 = x12[..., : self.hidden], x12[..., self.hidden :]
        return self.w3(nnx.silu(x1) * x2)


def swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    """SwiGLU hidden width for a GELU-MLP-equivalent parameter budget."""
    return int(2 / 3 * int(dim * mlp_ratio))
