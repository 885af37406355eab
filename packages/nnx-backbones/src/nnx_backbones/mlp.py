"""MLP backbone for low-dimensional data (2-D toys, action chunks) under the backbone contract.

x: `[B, D]` or `[B, T, D]` (flattened to `[B, T·D]` inside); t and optional r enter as sin/cos
features (`sinusoidal_embedding`, t of order one) through a small MLP; y is either int class
labels (`num_classes` set, null label = `num_classes`) or a conditioning array `[B, ...]`
(`cond_dim` set, e.g. an observation embedding). Residual pre-norm blocks:
`h ← h + W₂ SiLU(W₁ LN(h) + emb)`, `emb = SiLU(TimeEmb(t) [+ TimeEmb_r(r)] [+ LabelEmb(y)])`.
A class-conditional MLP given `y=None` uses the null label; an unconditional one rejects y.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.contract import check_time
from nnx_backbones.embeddings import LabelEmbedder, TimestepEmbedder
from nnx_backbones.errors import ShapeError


class ResidualBlock(nnx.Module):
    """Pre-norm residual MLP block conditioned additively on an embedding."""

    def __init__(
        self,
        width: int,
        *,
        dtype: jnp.dtype,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = nnx.LayerNorm(width, **kw)
        self.fc_in = nnx.Linear(width, width, **kw)
        self.fc_out = nnx.Linear(width, width, **kw)

    def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
        return h + self.fc_out(nnx.silu(self.fc_in(self.norm(h)) + emb))


class MLP(nnx.Module):
    """Residual MLP honouring the backbone contract.

    Args:
      data_shape: shape of one example, `(D,)` or `(T, D)`.
      width, depth: hidden width and number of residual blocks.
      num_classes: if set, `y` is int labels with a learned null label `num_classes`.
      cond_dim: if set, `y` is a float array with `cond_dim` features per example (flattened).
      label_dropout: probability of replacing a label by the null label when `train=True`.
      use_r: whether a second time `r` is embedded (two-time models).
      dtype, param_dtype: compute and parameter dtypes.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        *,
        width: int = 128,
        depth: int = 3,
        num_classes: int | None = None,
        cond_dim: int | None = None,
        label_dropout: float = 0.0,
        use_r: bool = False,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_classes is not None and cond_dim is not None:
            raise ValueError("MLP takes either num_classes (int labels) or cond_dim, not both.")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.cond_dim = cond_dim
        self.use_r = use_r
        self.depth = depth
        dim = math.prod(self.data_shape)
        self.rngs = rngs
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.input_proj = nnx.Linear(dim, width, **kw)
        self.t_embed = TimestepEmbedder(width, frequency_dim=64, **kw)
        self.r_embed = TimestepEmbedder(width, frequency_dim=64, **kw) if use_r else None
        if num_classes is not None:
            self.y_embed = LabelEmbedder(num_classes, width, label_dropout, **kw)
        elif cond_dim is not None:
            self.y_embed = nnx.Linear(cond_dim, width, **kw)
        else:
            self.y_embed = None
        self.blocks = nnx.List([ResidualBlock(width, **kw) for _ in range(depth)])
        self.out_norm = nnx.LayerNorm(width, **kw)
        self.output_proj = nnx.Linear(width, dim, **kw)

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        r: jax.Array | None = None,
        y: jax.Array | None = None,
        train: bool = False,
        return_hidden_at: int | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """x: `[B, *data_shape]`, t/r: `[B]`, y: `[B]` labels or `[B, cond_dim]` → like x."""
        if tuple(x.shape[1:]) != self.data_shape:
            raise ShapeError(
                f"MLP expects x of shape [B, {', '.join(map(str, self.data_shape))}]; "
                f"got {tuple(x.shape)}."
            )
        check_time(x, t)
        check_time(x, r, "r")
        batch = x.shape[0]
        emb = self.t_embed(t)
        if self.r_embed is not None:
            emb = emb + self.r_embed(t if r is None else r)
        elif r is not None:
            raise ValueError("This MLP was built with use_r=False but was given r.")
        if self.num_classes is not None:
            if y is None:
                y = jnp.full((batch,), self.num_classes, jnp.int32)
            if y.shape != (batch,) or not jnp.issubdtype(y.dtype, jnp.integer):
                raise ShapeError(
                    f"y must be [B] = [{batch}] integer labels in [0, {self.num_classes}]; "
                    f"got shape {tuple(y.shape)}, dtype {y.dtype}."
                )
            emb = emb + self.y_embed(y, train=train)
        elif self.cond_dim is not None and y is not None:
            if y.shape[0] != batch or math.prod(y.shape[1:]) != self.cond_dim:
                raise ShapeError(
                    f"y must be a [B, ...] conditioning array with {self.cond_dim} features per "
                    f"example (B = {batch}); got shape {tuple(y.shape)}."
                )
            emb = emb + self.y_embed(y.reshape(batch, -1).astype(emb.dtype))
        elif y is not None:
            raise ValueError(
                "This MLP is unconditional (num_classes=None, cond_dim=None) but got y; build "
                "it with num_classes or cond_dim to condition on y."
            )
        h = self.input_proj(x.reshape(batch, -1))
        emb = nnx.silu(emb)
        hidden = None
        for k, block in enumerate(self.blocks, start=1):
            h = block(h, emb)
            if return_hidden_at == k:
                hidden = h
        out = self.output_proj(self.out_norm(h)).reshape(x.shape).astype(x.dtype)
        if return_hidden_at is not None:
            if hidden is None:
                raise ValueError(f"return_hidden_at={return_hidden_at} not in 1..{self.depth}.")
            return out, hidden
        return out
