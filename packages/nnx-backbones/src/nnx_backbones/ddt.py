"""LightningDDT / DiT^DH: a LightningDiT trunk with a wide, shallow decoder head (RAE, Zheng et
al. 2025; DDT, Wang et al. 2025), by default exactly RAE's `DiTwDDTHead` (stage2/models/DDT.py).

    t_emb = GaussianFourier(t) [+ r_emb]                                 [B, D_enc]
    c  = SiLU(t_emb + y_emb)                                             [B, D_enc]
    s  = PatchEmbed_s(x) + pos_enc;  s ← EncoderBlock(s, σ(c)) × depth_enc  [B, T, D_enc]
    s  = Proj(SiLU(t_emb + s))   (Proj = identity when D_enc = D_dec)     [B, T, D_dec]
    h  = PatchEmbed_x(x) [+ pos_dec];  h ← DecoderBlock(h, σ(s)) × depth_dec  (per-token adaLN)
    out = unpatchify(FinalLayer(h, σ(s)))
σ is the SiLU inside RAE's modulations (`adaLN_modulation = Sequential(SiLU, Linear)` applied to
a condition that is already SiLU'd; `silu_in_modulation=False` drops it), the decoder tokens get
no position table (`decoder_pos_embed=False`), and t is embedded by Gaussian Fourier features
with a fixed random W (`time_embedding="gaussian_fourier"`; "sinusoidal" is DiT's ×1000
embedding). Released RAE DiT^DH weights load with `nnx_backbones.convert.ddt.load_rae_ddt`.
Encoder and decoder blocks are LightningDiT blocks (RMSNorm, SwiGLU, 2-D RoPE by default); the
decoder is modulated token by token by the trunk's output. Blocks are numbered 1..depth_enc for
the trunk and depth_enc+1..depth_enc+depth_dec for the head (`return_hidden_at`).
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.dit import (
    _pos_table,
    _run_block,
    add_label_condition,
    check_patch_inputs,
    time_condition,
)
from nnx_backbones.embeddings import GaussianFourierEmbedding, LabelEmbedder, TimestepEmbedder
from nnx_backbones.layers.adaln import AdaLNBlock, FinalLayer
from nnx_backbones.layers.patch import PatchEmbed, unpatchify
from nnx_backbones.layers.position import rope_2d_grid, rope_2d_interleaved_grid


class LightningDDT(nnx.Module):
    """DiT^DH under the backbone contract.

    Args:
      input_size, patch_size, in_channels: as `DiT` (RAE uses DINOv2 tokens: 16×16×768, patch 1).
      hidden_size: `(D_enc, D_dec)`, any widths (equal widths skip the projection).
      depth: `(depth_enc, depth_dec)`; num_heads: `(heads_enc, heads_dec)`.
      time_embedding: "gaussian_fourier" (RAE) or "sinusoidal" (DiT's), the latter with
        `time_scale` (×t before the features) and `time_max_period` (DDT, MCG-NJU: 1 and 10).
      silu_in_modulation: apply SiLU to the (already SiLU'd) condition inside every modulation
        (RAE's `Sequential(SiLU, Linear)`).
      decoder_pos_embed: add the sin-cos table to the decoder tokens too (RAE: no).
      rope_layout: "eva" (LightningDiT / RAE: rows then columns) or "ddt" (MCG-NJU DDT:
        column/row pairs interleaved, positions spread over [0, 16]).
      final_rmsnorm: the final layer's norm (None: as the blocks; DDT: False, a LayerNorm).

    The remaining arguments are `LightningDiT`'s.
    """

    def __init__(
        self,
        *,
        input_size: int | tuple[int, int] = 16,
        patch_size: int = 1,
        in_channels: int = 768,
        hidden_size: tuple[int, int] = (1152, 2048),
        depth: tuple[int, int] = (28, 2),
        num_heads: tuple[int, int] = (16, 16),
        mlp_ratio: float = 4.0,
        num_classes: int | None = 1000,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = False,
        use_r: bool = False,
        use_rmsnorm: bool = True,
        use_swiglu: bool = True,
        use_rope: bool = True,
        qk_norm: str | None = None,
        wo_shift: bool = False,
        use_pos_embed: bool = True,
        time_embedding: str = "gaussian_fourier",
        time_scale: float = 1000.0,
        time_max_period: float = 10_000.0,
        silu_in_modulation: bool = True,
        decoder_pos_embed: bool = False,
        rope_layout: str = "eva",
        final_rmsnorm: bool | None = None,
        remat: bool = False,
        attn_implementation: str | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"input_size {size} is not divisible by patch_size {patch_size}.")
        d_enc, d_dec = hidden_size
        self.input_size = size
        self.patch_size = patch_size
        self.grid = (size[0] // patch_size, size[1] // patch_size)
        self.in_channels = in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.hidden_size = (d_enc, d_dec)
        self.depth = tuple(depth)
        self.num_heads = tuple(num_heads)
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.use_r = use_r
        self.use_rope = use_rope
        self.use_pos_embed = use_pos_embed
        if time_embedding not in ("gaussian_fourier", "sinusoidal"):
            raise ValueError(
                f"time_embedding must be 'gaussian_fourier' or 'sinusoidal'; got "
                f"{time_embedding!r}."
            )
        if rope_layout not in ("eva", "ddt"):
            raise ValueError(f"rope_layout must be 'eva' or 'ddt'; got {rope_layout!r}.")
        self.time_embedding = time_embedding
        self.time_scale = time_scale
        self.time_max_period = time_max_period
        self.rope_layout = rope_layout
        self.use_rmsnorm = use_rmsnorm
        self.final_rmsnorm = use_rmsnorm if final_rmsnorm is None else final_rmsnorm
        self.use_swiglu = use_swiglu
        self.qk_norm = qk_norm
        self.wo_shift = wo_shift
        self.silu_in_modulation = silu_in_modulation
        self.decoder_pos_embed = decoder_pos_embed
        self.remat = remat
        self.rngs = rngs
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        block_kw = dict(
            mlp_ratio=mlp_ratio,
            use_rmsnorm=use_rmsnorm,
            use_swiglu=use_swiglu,
            qk_norm=qk_norm,
            wo_shift=wo_shift,
            attn_implementation=attn_implementation,
            **kw,
        )
        self.s_embedder = PatchEmbed(patch_size, in_channels, d_enc, **kw)
        self.x_embedder = PatchEmbed(patch_size, in_channels, d_dec, **kw)
        if time_embedding == "gaussian_fourier":
            embedder = functools.partial(GaussianFourierEmbedding, d_enc, **kw)
        else:
            embedder = functools.partial(
                TimestepEmbedder, d_enc, time_scale=time_scale, max_period=time_max_period, **kw
            )
        self.t_embedder = embedder()
        self.r_embedder = embedder() if use_r else None
        self.y_embedder = (
            LabelEmbedder(num_classes, d_enc, class_dropout_prob, **kw)
            if num_classes is not None
            else None
        )
        self.s_projector = (
            nnx.Linear(d_enc, d_dec, kernel_init=nnx.initializers.xavier_uniform(), **kw)
            if d_enc != d_dec
            else None
        )
        self.encoder_blocks = nnx.List(
            [AdaLNBlock(d_enc, num_heads[0], **block_kw) for _ in range(depth[0])]
        )
        self.decoder_blocks = nnx.List(
            [AdaLNBlock(d_dec, num_heads[1], **block_kw) for _ in range(depth[1])]
        )
        self.final_layer = FinalLayer(
            d_dec, patch_size**2 * self.out_channels, use_rmsnorm=self.final_rmsnorm, **kw
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
        """The backbone contract; see `DiT.__call__` (hidden blocks numbered across both stacks)."""
        check_patch_inputs(self, x, t, r)
        total = sum(self.depth)
        if return_hidden_at is not None and not 1 <= return_hidden_at <= total:
            raise ValueError(f"return_hidden_at={return_hidden_at} not in 1..{total}.")
        t_emb = time_condition(self, t, r)
        c = add_label_condition(self, t_emb, t, y, train)
        hidden, k = None, 0
        # Trunk: a LightningDiT on the patch tokens.
        s = self._embed(self.s_embedder, x, self.hidden_size[0], self.use_pos_embed)
        c = self._modulation(nnx.silu(c).astype(s.dtype))
        rope = self._rope(0)
        for block in self.encoder_blocks:
            s = _run_block(block, s, c, rope, self.remat)
            k += 1
            if k == return_hidden_at:
                hidden = s
        # Token-wise condition of the head: Proj(SiLU(t_emb + s)).
        s = nnx.silu(t_emb[:, None, :].astype(s.dtype) + s)
        if self.s_projector is not None:
            s = self.s_projector(s)
        s = self._modulation(s)
        h = self._embed(
            self.x_embedder, x, self.hidden_size[1], self.use_pos_embed and self.decoder_pos_embed
        )
        rope = self._rope(1)
        for block in self.decoder_blocks:
            h = _run_block(block, h, s, rope, self.remat)
            k += 1
            if k == return_hidden_at:
                hidden = h
        out = unpatchify(self.final_layer(h, s), self.grid, self.patch_size).astype(x.dtype)
        if self.learn_sigma and not full_output:
            out = out[..., : self.in_channels]
        return out if hidden is None else (out, hidden)

    def _modulation(self, c: jax.Array) -> jax.Array:
        """The condition the modulation Linears see: SiLU(c) in RAE (`silu_in_modulation`)."""
        return nnx.silu(c) if self.silu_in_modulation else c

    def _embed(self, embedder: PatchEmbed, x: jax.Array, dim: int, pos: bool) -> jax.Array:
        h = embedder(x)
        if pos:
            h = h + jnp.asarray(_pos_table(dim, self.grid), h.dtype)
        return h

    def _rope(self, stack: int) -> tuple[jax.Array, jax.Array] | None:
        if not self.use_rope:
            return None
        head_dim = self.hidden_size[stack] // self.num_heads[stack]
        if self.rope_layout == "ddt":
            return rope_2d_interleaved_grid(head_dim, self.grid)
        return rope_2d_grid(head_dim, self.grid)
