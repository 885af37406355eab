"""DiT: diffusion transformer with adaLN-Zero conditioning (Peebles & Xie 2023), channels-last.

    tokens = PatchEmbed(x) + sincos_pos_embed_2d                    x: [B, H, W, C]
    c      = SiLU(TimestepEmbedder(t) [+ TimestepEmbedder_r(r)] [+ LabelEmbedder(y)])
    tokens ← AdaLNBlock(tokens, c)  × depth
    out    = unpatchify(FinalLayer(tokens, c))                      [B, H, W, C_out]

Presets (`dit_config`, `DiT.from_preset`): S/B/L/XL (hidden 384/768/1024/1152, depth 12/12/24/28,
heads 6/12/16/16) × patch 1/2/4/8, e.g. `DiT.from_preset("DiT-XL/2", input_size=32,
in_channels=4, num_classes=1000, learn_sigma=True, rngs=nnx.Rngs(0))` is the public
DiT-XL/2-256 checkpoint's architecture (import it with `nnx_backbones.convert.dit.load_dit`).

With `learn_sigma=True` the final layer predicts 2·C channels (the second half a variance
interpolation, as in the release); the call returns the first C unless `full_output=True`.
Time `t` (and `r`) enter through `sinusoidal_embedding` with `time_scale = 1000`: pass t in
[0, 1] (the release's integer steps n ∈ [0, 999] correspond to t = n / 1000).
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_backbones.contract import check_time
from nnx_backbones.embeddings import LabelEmbedder, TimestepEmbedder
from nnx_backbones.errors import ShapeError
from nnx_backbones.layers.adaln import AdaLNBlock, FinalLayer
from nnx_backbones.layers.patch import PatchEmbed, unpatchify
from nnx_backbones.layers.position import rope_2d_grid, sincos_pos_embed_2d

# name: (hidden_size, depth, num_heads)  — DiT paper, Table 1.
DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}


def dit_config(name: str) -> dict[str, int]:
    """`"XL/2"` or `"DiT-XL/2"` → `{hidden_size, depth, num_heads, patch_size}`."""
    m = re.fullmatch(r"(?:\w*DiT-)?(S|B|L|XL)/(1|2|4|8)", name)
    if m is None:
        raise ValueError(
            f"Unknown DiT preset {name!r}: expected '<size>/<patch>' with size in "
            f"{sorted(DIT_SIZES)} and patch in 1, 2, 4, 8 (e.g. 'B/2' or 'DiT-XL/2')."
        )
    hidden, depth, heads = DIT_SIZES[m.group(1)]
    return dict(hidden_size=hidden, depth=depth, num_heads=heads, patch_size=int(m.group(2)))


@functools.lru_cache(maxsize=32)
def _pos_table(dim: int, grid: tuple[int, int]) -> np.ndarray:
    return sincos_pos_embed_2d(dim, grid)


class PatchTransformer(nnx.Module):
    """The shared body of DiT and LightningDiT (see `DiT` and `LightningDiT` for the arguments)."""

    def __init__(
        self,
        *,
        input_size: int | tuple[int, int],
        patch_size: int,
        in_channels: int,
        hidden_size: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        num_classes: int | None,
        class_dropout_prob: float,
        learn_sigma: bool,
        use_r: bool,
        remat: bool,
        attn_implementation: str | None,
        dtype: jnp.dtype,
        param_dtype: jnp.dtype,
        rngs: nnx.Rngs,
        use_rmsnorm: bool = False,
        use_swiglu: bool = False,
        use_rope: bool = False,
        qk_norm: str | None = None,
        wo_shift: bool = False,
        use_pos_embed: bool = True,
    ):
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"input_size {size} is not divisible by patch_size {patch_size}.")
        self.input_size = size
        self.patch_size = patch_size
        self.grid = (size[0] // patch_size, size[1] // patch_size)
        self.in_channels = in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.use_r = use_r
        self.remat = remat
        self.use_rope = use_rope
        self.use_pos_embed = use_pos_embed
        self.dtype = dtype
        self.rngs = rngs
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size, **kw)
        self.t_embedder = TimestepEmbedder(hidden_size, **kw)
        self.r_embedder = TimestepEmbedder(hidden_size, **kw) if use_r else None
        self.y_embedder = (
            LabelEmbedder(num_classes, hidden_size, class_dropout_prob, **kw)
            if num_classes is not None
            else None
        )
        block_kw = dict(
            mlp_ratio=mlp_ratio,
            use_rmsnorm=use_rmsnorm,
            use_swiglu=use_swiglu,
            qk_norm=qk_norm,
            wo_shift=wo_shift,
            attn_implementation=attn_implementation,
        )
        self.blocks = nnx.List(
            [AdaLNBlock(hidden_size, num_heads, **block_kw, **kw) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(
            hidden_size, patch_size**2 * self.out_channels, use_rmsnorm=use_rmsnorm, **kw
        )

    def pos_embed(self) -> np.ndarray:
        """The fixed 2-D sin-cos table `[T, D]` added to the patch tokens."""
        return _pos_table(self.hidden_size, self.grid)

    def _check(self, x: jax.Array, t: jax.Array, r: jax.Array | None) -> None:
        check_patch_inputs(self, x, t, r)

    def condition(
        self, t: jax.Array, r: jax.Array | None, y: jax.Array | None, train: bool
    ) -> jax.Array:
        """`c = t_embedding [+ r_embedding] [+ label_embedding]`, `[B, D]` (before SiLU).

        A class-conditional network given `y=None` uses the null label (unconditional).
        """
        return add_label_condition(self, time_condition(self, t, r), t, y, train)

    def rope(self) -> tuple[jax.Array, jax.Array] | None:
        return (
            rope_2d_grid(self.hidden_size // self.num_heads, self.grid) if self.use_rope else None
        )

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        r: jax.Array | None = None,
        y: jax.Array | None = None,
        train: bool = False,
        return_hidden_at: int | None = None,
        full_output: bool = False,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """The backbone contract (`nnx_backbones.contract`).

        Args:
          x: `[B, H, W, C]` latents/images; t, r: `[B]` float times in [0, 1]; y: `[B]` int labels
            (`num_classes` = null label); train: label dropout on; return_hidden_at: k in
            1..depth, also return the tokens `[B, T, D]` after block k; full_output: with
            learn_sigma, return all 2·C channels.
        Returns:
          `[B, H, W, C]` (or `[B, H, W, 2C]`), and the hidden tokens if asked.
        """
        self._check(x, t, r)
        if return_hidden_at is not None and not 1 <= return_hidden_at <= self.depth:
            raise ValueError(f"return_hidden_at={return_hidden_at} not in 1..{self.depth}.")
        h = self.x_embedder(x)
        if self.use_pos_embed:
            h = h + jnp.asarray(self.pos_embed(), h.dtype)
        c = nnx.silu(self.condition(t, r, y, train)).astype(h.dtype)
        rope = self.rope()
        hidden = None
        for k, block in enumerate(self.blocks, start=1):
            h = _run_block(block, h, c, rope, self.remat)
            if k == return_hidden_at:
                hidden = h
        out = unpatchify(self.final_layer(h, c), self.grid, self.patch_size).astype(x.dtype)
        if self.learn_sigma and not full_output:
            out = out[..., : self.in_channels]
        return out if hidden is None else (out, hidden)


def check_patch_inputs(net: nnx.Module, x: jax.Array, t: jax.Array, r: jax.Array | None) -> None:
    """Validate a patch transformer's contract inputs (`input_size`, `in_channels`, `use_r`)."""
    want = (*net.input_size, net.in_channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise ShapeError(
            f"{type(net).__name__} expects x of shape [B, {want[0]}, {want[1]}, {want[2]}] "
            f"(channels-last); got {tuple(x.shape)}. Build the network with matching "
            f"input_size / in_channels."
        )
    check_time(x, t)
    check_time(x, r, "r")
    if r is not None and not net.use_r:
        raise ValueError(f"This {type(net).__name__} was built with use_r=False but got r.")


def time_condition(net: nnx.Module, t: jax.Array, r: jax.Array | None) -> jax.Array:
    """t-embedding [+ r-embedding] of a patch transformer, `[B, D]`."""
    c = net.t_embedder(t)
    if net.r_embedder is not None:
        c = c + net.r_embedder(t if r is None else r)
    return c


def add_label_condition(
    net: nnx.Module, c: jax.Array, t: jax.Array, y: jax.Array | None, train: bool
) -> jax.Array:
    """c [+ label embedding]; a class-conditional network given `y=None` uses the null label."""
    if net.y_embedder is not None:
        if y is None:
            y = jnp.full(t.shape, net.num_classes, jnp.int32)
        return c + net.y_embedder(_check_labels(y, t, net.num_classes), train=train)
    if y is not None:
        raise ValueError(
            f"This {type(net).__name__} is unconditional (num_classes=None) but got y; "
            f"build it with num_classes=K to use labels."
        )
    return c


def _check_labels(y: jax.Array, t: jax.Array, num_classes: int) -> jax.Array:
    """Raise `ShapeError` unless y is `[B]` integer labels (values in [0, num_classes])."""
    if y.ndim != 1 or y.shape != t.shape or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ShapeError(
            f"y must be [B] = [{t.shape[0]}] integer class labels in [0, {num_classes}] "
            f"({num_classes} = null label); got shape {tuple(y.shape)}, dtype {y.dtype}."
        )
    return y


def _block_call(block: AdaLNBlock, h: jax.Array, c: jax.Array, rope) -> jax.Array:
    return block(h, c, rope)


_block_call_remat = nnx.remat(_block_call)


def _run_block(block: AdaLNBlock, h: jax.Array, c: jax.Array, rope, remat: bool) -> jax.Array:
    """One block, recomputed in the backward pass (`nnx.remat`) when `remat` is set."""
    return (_block_call_remat if remat else _block_call)(block, h, c, rope)


class DiT(PatchTransformer):
    """DiT with adaLN-Zero blocks (LayerNorm, GELU-tanh MLP, fixed sin-cos positions).

    Args:
      input_size: latent/image side `H = W`, or `(H, W)`.
      patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio: architecture.
      num_classes: number of classes (label `num_classes` is the null label), or None for an
        unconditional network.
      class_dropout_prob: probability of the null label when `train=True`.
      learn_sigma: predict 2·C channels (needed for the public checkpoints).
      use_r: embed a second time `r` with its own TimestepEmbedder.
      remat: recompute each block in the backward pass (`nnx.remat`).
      attn_implementation: None (best for the backend), "folded", "xla" or "cudnn"
        (`nnx_backbones.layers.attention`).
      dtype: compute dtype (e.g. bf16); param_dtype: parameter dtype (f32).
    """

    def __init__(
        self,
        *,
        input_size: int | tuple[int, int] = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int | None = 1000,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = False,
        use_r: bool = False,
        remat: bool = False,
        attn_implementation: str | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            input_size=input_size,
            patch_size=patch_size,
            in_channels=in_channels,
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            num_classes=num_classes,
            class_dropout_prob=class_dropout_prob,
            learn_sigma=learn_sigma,
            use_r=use_r,
            remat=remat,
            attn_implementation=attn_implementation,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "DiT":
        """`DiT.from_preset("B/2", input_size=32, in_channels=4, rngs=...)` (see `dit_config`)."""
        return cls(**dit_config(name), **kwargs)
