"""REPA: representation alignment as an auxiliary loss around any interface (Yu et al., 2025).

The backbone's hidden tokens h after block `repa_depth` (one forward pass: the interface's own
loss call, with `return_hidden_at=repa_depth`) go through a projector MLP
(Linear → SiLU → Linear → SiLU → Linear) and are aligned with frozen encoder features f
(e.g. DINOv2 patch tokens) by negative cosine similarity:

    L_repa  = −mean_{B, N} cos(proj(h_n), f_n)
    L_total = L_diffusion + repa_loss_weight · L_repa

h is `[B, N, hidden]` (transformers) or `[B, hidden]` (MLP); f must then be `[B, N, feature_dim]`
or `[B, feature_dim]`. Sampling goes straight to the wrapped interface (`pred`, `score`,
`time_domain`, ...), so samplers run a REPA-trained model unchanged.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.base import Interfaces, TimeDomain
from nnx_interfaces.errors import InterfaceConfigError


def build_mlp(
    hidden_size: int,
    projector_dim: int,
    feature_dim: int,
    rngs: nnx.Rngs,
    dtype: jnp.dtype = jnp.float32,
) -> nnx.Sequential:
    """REPA's projector: Linear(hidden→proj) → SiLU → Linear(proj→proj) → SiLU → Linear(→feat)."""
    return nnx.Sequential(
        nnx.Linear(hidden_size, projector_dim, dtype=dtype, rngs=rngs),
        nnx.silu,
        nnx.Linear(projector_dim, projector_dim, dtype=dtype, rngs=rngs),
        nnx.silu,
        nnx.Linear(projector_dim, feature_dim, dtype=dtype, rngs=rngs),
    )


def negative_cosine(z: jax.Array, f: jax.Array, eps: float = 1e-6) -> jax.Array:
    """−cos(z, f) along the last axis, `[B, ...]` (normalised with a small eps for zero vectors)."""
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), eps)
    f = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), eps)
    return -jnp.sum(z * f, axis=-1)


class REPA(nnx.Module):
    """Wrap an interface with the REPA alignment loss.

    Args:
      interface: any `Interfaces` whose backbone honours `return_hidden_at`.
      feature_dim: channels of the encoder features f.
      repa_loss_weight: λ in L_total = L_diffusion + λ·L_repa (REPA uses 0.5).
      repa_depth: block after which the hidden tokens are taken (1-based, REPA's encoder_depth).
      proj_dim: projector width (REPA uses 2048).
      hidden_size: width of the hidden tokens; defaults to `network.hidden_size`.
      rngs: initialises the projector (default: the interface's `rngs`).
    """

    def __init__(
        self,
        interface: Interfaces,
        *,
        feature_dim: int,
        repa_loss_weight: float = 0.5,
        repa_depth: int = 8,
        proj_dim: int = 2048,
        hidden_size: int | None = None,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        hidden_size = hidden_size or getattr(interface.network, "hidden_size", None)
        if hidden_size is None:
            raise InterfaceConfigError(
                f"REPA needs the width of the hidden tokens: pass hidden_size= (the network "
                f"{type(interface.network).__name__} has no `hidden_size` attribute)."
            )
        if repa_depth < 1:
            raise InterfaceConfigError(f"repa_depth is 1-based; got {repa_depth}.")
        self.interface = interface
        self.feature_dim = feature_dim
        self.repa_loss_weight = float(repa_loss_weight)
        self.repa_depth = repa_depth
        self.projector = build_mlp(
            hidden_size, proj_dim, feature_dim, rngs or interface.rngs, dtype=dtype
        )

    def loss(
        self, x: jax.Array, x_feature: jax.Array, *args, return_aux: bool = False, **kwargs
    ) -> Any:
        """L_total for clean data `x: [B, ...]` and encoder features `x_feature: [B, (N,) F]`.

        Returns:
          the scalar total loss, or `(loss, aux)` with the wrapped interface's aux plus
          `loss` (total), `diffusion_loss`, `repa_loss` (scalars) and `hidden`.
        """
        diffusion, aux = self.interface.loss(
            x, *args, return_aux=True, return_hidden_at=self.repa_depth, **kwargs
        )
        z = self.projector(aux["hidden"])
        if z.shape != x_feature.shape:
            raise InterfaceConfigError(
                f"REPA features must match the projected hidden tokens {tuple(z.shape)} "
                f"([B, N, feature_dim] or [B, feature_dim]); got x_feature of shape "
                f"{tuple(x_feature.shape)}. Check repa_depth, the patch grid and feature_dim."
            )
        repa = jnp.mean(negative_cosine(z, x_feature))
        total = diffusion + self.repa_loss_weight * repa
        if not return_aux:
            return total
        aux = {**aux, "loss": total, "diffusion_loss": diffusion, "repa_loss": repa}
        return total, aux

    def __call__(self, x: jax.Array, x_feature: jax.Array, *args, **kwargs) -> Any:
        return self.loss(x, x_feature, *args, **kwargs)

    # --- sampling goes to the wrapped interface ----------------------------------------------
    @property
    def network(self) -> nnx.Module:
        return self.interface.network

    @property
    def rngs(self) -> nnx.Rngs:
        return self.interface.rngs

    @property
    def two_time(self) -> bool:
        return self.interface.two_time

    @property
    def has_velocity(self) -> bool:
        return self.interface.has_velocity

    @property
    def time_domain(self) -> TimeDomain:
        return self.interface.time_domain

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.interface.alpha_sigma(t)

    def pred(self, *args, **kwargs) -> jax.Array:
        return self.interface.pred(*args, **kwargs)

    def score(self, *args, **kwargs) -> jax.Array:
        return self.interface.score(*args, **kwargs)

    def denoise(self, *args, **kwargs) -> jax.Array:
        return self.interface.denoise(*args, **kwargs)
