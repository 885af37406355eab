"""LightningDiT (Yao et al. 2025, "Reconstruction vs. generation"): DiT with modern blocks.

Same body as `DiT` (patch embed, sin-cos positions, t/r/label conditioning, adaLN blocks, final
layer) with these options, all on by default except qk-norm and `wo_shift`:
- `use_rmsnorm`: RMSNorm (learned scale) instead of LayerNorm without affine, in blocks and head;
- `use_swiglu`: SwiGLU feed-forward, hidden int(2/3 · mlp_ratio · D) (parameter-matched);
- `use_rope`: 2-D rotary embedding on q and k (first half of each head: row, second: column);
- `qk_norm`: None, "rms" or "layer" — separate norms for q and k over each head's channels;
- `wo_shift`: adaLN without the shift terms (4 modulation chunks instead of 6);
- `use_pos_embed`: also add the fixed sin-cos table (LightningDiT does, with RoPE).
"""

import jax.numpy as jnp
from flax import nnx

from nnx_backbones.dit import PatchTransformer, dit_config


class LightningDiT(PatchTransformer):
    """LightningDiT under the backbone contract; arguments as `DiT` plus the options above."""

    def __init__(
        self,
        *,
        input_size: int | tuple[int, int] = 16,
        patch_size: int = 1,
        in_channels: int = 32,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
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
            use_rmsnorm=use_rmsnorm,
            use_swiglu=use_swiglu,
            use_rope=use_rope,
            qk_norm=qk_norm,
            wo_shift=wo_shift,
            use_pos_embed=use_pos_embed,
        )

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "LightningDiT":
        """Sizes as DiT's presets: `LightningDiT.from_preset("XL/1", in_channels=32, ...)`."""
        return cls(**dit_config(name), **kwargs)
