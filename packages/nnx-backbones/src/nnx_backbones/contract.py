"""The backbone contract: one call signature for every generative network.

    net(x, t, *, r=None, y=None, train=False, return_hidden_at=None) -> out

- `x`: `[B, H, W, C]` images/latents (channels-last) or `[B, D]` / `[B, T, D]` low-dimensional data.
- `t`: `[B]` float time, already in the network's input scale (an interface passes `c_noise(t)`).
- `r`: optional second time `[B]` for two-time models (MeanFlow (t, r), flow maps (s, t), shortcut
  step size).
- `y`: `[B]` int class labels with `num_classes` the null label (classifier-free guidance), or a
  conditioning array (low-dimensional models).
- `train`: enables label dropout (stream `label_dropout`) and dropout (stream `dropout`).
- `return_hidden_at=k`: also return the hidden tokens after block k (1-based, as in REPA's
  `encoder_depth`) from the same forward pass: the call then returns `(out, hidden)`.
- `out` has the shape of `x` (learned-sigma DiTs return 2× channels only if asked to).

Networks keep their `nnx.Rngs` as `self.rngs`, so interfaces can draw their `time`, `noise` and
`label_dropout` keys from the network they wrap.
"""

from typing import Protocol, runtime_checkable

import jax

from nnx_backbones.errors import ShapeError


@runtime_checkable
class Backbone(Protocol):
    """Structural type of a backbone honouring the contract above."""

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        r: jax.Array | None = None,
        y: jax.Array | None = None,
        train: bool = False,
        return_hidden_at: int | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]: ...


def check_time(x: jax.Array, t: jax.Array, name: str = "t") -> None:
    """Raise `ShapeError` unless `t` is a `[B]` array matching the batch of `x`."""
    if t is None:
        return
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ShapeError(
            f"{name} must have shape [B] = [{x.shape[0]}] (one time per example, "
            f"batch of x = {tuple(x.shape)}); got {name}.shape = {tuple(t.shape)}. "
            f"Broadcast a scalar with jnp.full((B,), value)."
        )
