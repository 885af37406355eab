"""Time and label embeddings shared by every backbone.

Scale convention: `sinusoidal_embedding` expects a time of order one (t in [0, 1], EDM's
c_noise = log(σ)/4 in about [-1.6, 1.1], TrigFlow angles in [0, π/2]) and multiplies it by
`time_scale` (1000 by default) before the sin/cos features, whose frequencies span
[1/max_period, 1]. With the defaults, times that differ by 1e-4 still get distinct features and
nothing aliases over [-2, 2].
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.layers.parallel import replicated, split


def sinusoidal_embedding(
    t: jax.Array, dim: int, *, max_period: float = 10_000.0, time_scale: float = 1000.0
) -> jax.Array:
    """Sin/cos features of a time array (the DiT/ADM timestep embedding).

    Args:
      t: `[B]` float times of order one (see the module docstring for the scale).
      dim: number of features (even or odd; an odd dim gets a zero pad).
    Returns:
      `[B, dim]` float32 features `[cos(ω t), sin(ω t)]`.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (time_scale * t.astype(jnp.float32))[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


class TimestepEmbedder(nnx.Module):
    """Sinusoidal features → Linear → SiLU → Linear (DiT's `TimestepEmbedder`)."""

    def __init__(
        self,
        hidden_size: int,
        *,
        frequency_dim: int = 256,
        time_scale: float = 1000.0,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.frequency_dim = frequency_dim
        self.time_scale = time_scale
        init = nnx.initializers.normal(0.02)
        kw = dict(dtype=dtype, param_dtype=param_dtype, kernel_init=init, rngs=rngs)
        self.linear_1 = nnx.Linear(frequency_dim, hidden_size, **kw)
        self.linear_2 = nnx.Linear(hidden_size, hidden_size, **kw)

    def __call__(self, t: jax.Array) -> jax.Array:
        """`t: [B]` → `[B, hidden_size]`."""
        emb = sinusoidal_embedding(t, self.frequency_dim, time_scale=self.time_scale)
        # Under tensor parallelism: linear_1 column-, linear_2 row-parallel (layers.parallel).
        return replicated(self.linear_2(nnx.silu(split(self.linear_1(emb)))))


class LabelEmbedder(nnx.Module):
    """Class-label embedding with a learned null label (index `num_classes`) for CFG.

    During training (`train=True`) labels are replaced by the null label with probability
    `dropout_prob`, drawn from the `label_dropout` stream of `rngs`. `train=False` never drops.
    """

    def __init__(
        self,
        num_classes: int,
        hidden_size: int,
        dropout_prob: float,
        *,
        param_dtype: jnp.dtype = jnp.float32,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nnx.Embed(
            num_classes + 1,
            hidden_size,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        self.rngs = rngs

    def drop_labels(self, y: jax.Array) -> jax.Array:
        """Replace each label by the null label with probability `dropout_prob`."""
        drop = jax.random.bernoulli(self.rngs.label_dropout(), self.dropout_prob, y.shape)
        return jnp.where(drop, self.num_classes, y)

    def __call__(self, y: jax.Array, *, train: bool = False) -> jax.Array:
        """`y: [B]` int labels in [0, num_classes] → `[B, hidden_size]`."""
        if train and self.dropout_prob > 0:
            y = self.drop_labels(y)
        return self.embedding_table(y)
