"""Constructors for objectives that wrap another objective chosen by name (registry entries).

`diffusion_forcing(network, base="sit", noise_levels="independent", **base_kwargs)` builds the
image interface registered as `base` on `network` with `base_kwargs` (e.g. SiT's
`train_time_dist_type`, `t_shift_base`; EDM's `x_sigma`, `sigma_max`) and wraps it in
`nnx_interfaces.forcing.DiffusionForcing`, so a config reads

    interface.name = "diffusion_forcing"; interface.base = "sit"; interface.t_shift_base = None
"""

import difflib
from typing import Any

from flax import nnx

from nnx_train import registry
from nnx_train.errors import ConfigError


def diffusion_forcing(
    network: nnx.Module,
    *,
    base: str = "sit",
    noise_levels: str = "independent",
    rngs: nnx.Rngs | None = None,
    **base_kwargs: Any,
) -> nnx.Module:
    """`DiffusionForcing(registry interface base(network, **base_kwargs), noise_levels=...)`.

    Raises:
      ConfigError: a key of `base_kwargs` is not a keyword argument of the base interface.
    """
    from nnx_interfaces.forcing import DiffusionForcing

    accepted = registry.accepted_kwargs("interface", base)
    if accepted is not None:
        unknown = [k for k in base_kwargs if k not in accepted]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, [*accepted, "base", "noise_levels"], n=2)
                hints.append(k + (f" (did you mean {', '.join(close)}?)" if close else ""))
            raise ConfigError(
                f"interface.name = 'diffusion_forcing' with base = {base!r}: unknown field(s) "
                f"{', '.join(hints)}. Valid: base, noise_levels and the {base!r} interface's "
                f"{', '.join(sorted(accepted))}."
            )
    if rngs is not None:
        base_kwargs["rngs"] = rngs
    inner = registry.build("interface", base, network, **base_kwargs)
    return DiffusionForcing(inner, noise_levels=noise_levels)
