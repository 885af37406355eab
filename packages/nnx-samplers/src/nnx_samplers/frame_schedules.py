"""Diffusion-Forcing sampling over the `[frames × steps]` noise matrix (Chen et al., 2024).

A scheduling matrix L `[M+1, F]` holds one integer noise level per frame and row, in the
convention of the reference implementation (buoyancy99/diffusion-forcing,
`DiffusionForcingBase._generate_scheduling_matrix`): level N = pure noise, 0 = clean, N the
number of steps. On the sampler's grid t_0 (noise) … t_N (data), level l is the time
t(l) = t_{N−l}. Row by row, the FULL sequence goes through the causal video network with
per-frame times (t `[B, F]`) and each frame moves from its level in row m to its level in m+1:

    full_sequence:   L[m, f] = N − m                                         M = N
    pyramid:         L[m, f] = clip(N + ⌊f·u⌋ − m, 0, N)   (causal uncertainty, u = scale)
                                                                             M = N + ⌊(F−1)·u⌋
    autoregressive:  the pyramid with u = N: frame f is denoised from noise to clean while the
                     frames before it are clean and those after it pure noise   M = F·N

Update of row m → m+1, per frame, with h = t(L[m+1, f]) − t(L[m, f]) and the network output at
(x, t(L[m])) for the whole sequence:

    euler:  x^f ← x^f + h·pred^f
    heun:   x̃ = euler step;  x^f ← x^f + h·(pred^f + pred^f(x̃, t(L[m+1]))) / 2   (Euler where
            a frame lands on the data end of a domain with eps > 0, as `Heun`)
    ddim:   x^f ← α(t')·x̂^f + σ(t')·(x^f − α(t)·x̂^f)/σ(t)                       (deterministic)

and frames whose level does not change stay exactly unchanged (a select, not h = 0). A frame
at the data end is given to the network at `last_eval` when eps > 0 (EDM), as in
`Autoregressive`. With a clean context, the "autoregressive" matrix is what `Autoregressive`
computes with the KV cache (same numbers up to float error).

Differences from the reference: (1) the reference re-applies its DDIM step to frames whose
level does not change (an identity in exact arithmetic, not in floats, and a fresh noise draw
with η > 0); here they are left untouched. (2) The reference evaluates clean frames at a
"stabilization" level (`stabilization_level − 1`, scaled but not noised); here at the data end
(`last_eval`). (3) The reference samples with DDIM/DDPM on a discrete schedule; here any
interface's continuous time grid, with an Euler, Heun or deterministic DDIM update.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from nnx_samplers.autoregressive import network_time
from nnx_samplers.base import Sampler, with_initial
from nnx_samplers.errors import SamplerConfigError
from nnx_samplers.model import bcast_right

MATRICES = ("full_sequence", "pyramid", "autoregressive")
UPDATES = ("euler", "heun", "ddim")


def scheduling_matrix(
    kind: str, num_steps: int, num_frames: int, uncertainty_scale: float = 1.0
) -> np.ndarray:
    """The `[M+1, F]` int64 noise-level matrix (N = `num_steps` = noise, 0 = clean; module
    docstring), as the reference's `_generate_scheduling_matrix`."""
    n, f = int(num_steps), int(num_frames)
    if kind not in MATRICES:
        raise SamplerConfigError(f"Unknown noise matrix {kind!r}; expected one of {MATRICES}.")
    if n < 1 or f < 1:
        raise SamplerConfigError(f"num_steps and num_frames must be ≥ 1; got {n}, {f}.")
    if kind == "full_sequence":
        return np.repeat(np.arange(n, -1, -1, dtype=np.int64)[:, None], f, axis=1)
    u = float(n if kind == "autoregressive" else uncertainty_scale)
    if not u >= 0:
        raise SamplerConfigError(f"uncertainty_scale must be ≥ 0; got {uncertainty_scale}.")
    lag = np.array([int(k * u) for k in range(f)], np.int64)  # ⌊f·u⌋ per frame
    rows = n + int((f - 1) * u) + 1
    return np.clip(n + lag[None, :] - np.arange(rows, dtype=np.int64)[:, None], 0, n)


@dataclasses.dataclass(frozen=True)
class DiffusionForcingSampler(Sampler):
    """Full-sequence Diffusion-Forcing sampling over a noise matrix (module docstring).

    `model` is a video interface (`DiffusionForcing`) whose `pred`/`denoise` take `x: [B, F, ...]`
    and t `[B, F]`; `x_init: [B, F, ...]`. One network call per matrix row (two with Heun), so
    NFE depends on F: `SampleResult.nfe` is counted for the given `x_init`. The trajectory has
    one state per matrix row.

    Attributes:
      num_steps, schedule: the per-frame time grid (levels index it).
      matrix: "full_sequence", "pyramid" or "autoregressive".
      uncertainty_scale: the pyramid's lag u (levels per frame); the reference's default is 1.
      update: "euler", "heun" or "ddim".
    """

    matrix: str = "pyramid"
    uncertainty_scale: float = 1.0
    update: str = "euler"
    full_sequence: ClassVar[bool] = True  # the whole video per evaluation (not per frame)

    def __post_init__(self):
        super().__post_init__()
        if self.matrix not in MATRICES:
            raise SamplerConfigError(
                f"Unknown noise matrix {self.matrix!r}; expected one of {MATRICES}."
            )
        if self.update not in UPDATES:
            raise SamplerConfigError(f"Unknown update {self.update!r}; expected one of {UPDATES}.")
        if not self.uncertainty_scale >= 0:
            raise SamplerConfigError(
                f"uncertainty_scale must be ≥ 0; got {self.uncertainty_scale}."
            )

    def check(self, info):
        if self.update == "ddim" and not info.has_alpha_sigma:
            raise SamplerConfigError("update='ddim' needs the path α(t), σ(t) of the model.")

    def levels(self, num_frames: int) -> np.ndarray:
        """The `[M+1, F]` noise-level matrix for `num_frames` frames."""
        return scheduling_matrix(self.matrix, self.num_steps, num_frames, self.uncertainty_scale)

    def count_nfe(self, grid, info):
        return 2 if self.update == "heun" else 1  # per matrix row; see nfe_for_shape

    def nfe_for_shape(self, nfe, shape):
        if len(shape) < 3:
            return nfe
        return nfe * (self.levels(shape[1]).shape[0] - 1)

    def integrate(self, f, key, x_init, grid, info, trajectory):
        if x_init.ndim < 3:
            raise SamplerConfigError(
                f"DiffusionForcingSampler samples videos x_init: [B, F, ...]; got shape "
                f"{tuple(x_init.shape)}."
            )
        td = info.time_domain
        n = grid.size - 1
        times = grid[n - self.levels(x_init.shape[1])]  # [M+1, F], level l → t_{N−l}
        t_now, t_next = times[:-1], times[1:]
        changed = t_now != t_next
        # Heun's corrector, except on a step landing on the data end when eps > 0
        correct = changed & ~((td.eps > 0) & (t_next == td.data))
        f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        rows = (
            f32(t_now),
            f32(t_next),
            f32(network_time(td, t_now)),
            f32(network_time(td, t_next)),
            jnp.asarray(changed),
            jnp.asarray(correct),
        )
        b = x_init.shape[0]
        per_frame = lambda a, x: bcast_right(jnp.broadcast_to(a, (b, a.shape[0])), x)  # noqa: E731
        batch = lambda a: jnp.broadcast_to(a, (b, a.shape[0]))  # noqa: E731

        def step(x, row):
            t0, t1, e0, e1, on, corr = row
            h = per_frame(t1 - t0, x).astype(x.dtype)
            if self.update == "ddim":
                x_hat = f.denoise(x, batch(e0))
                a0, s0 = f.alpha_sigma(t0)
                a1, s1 = f.alpha_sigma(t1)
                eps = (x - per_frame(a0, x) * x_hat) / per_frame(s0, x)
                x_new = per_frame(a1, x) * x_hat + per_frame(s1, x) * eps
            else:
                d = f.pred(x, batch(e0))
                x_new = x + h * d
                if self.update == "heun":
                    d_new = f.pred(x_new, batch(e1))
                    x_heun = x + h * 0.5 * (d + d_new)
                    x_new = jnp.where(per_frame(corr, x), x_heun, x_new)
            x = jnp.where(per_frame(on, x), x_new, x)
            return x, (x if trajectory else None)

        x, states = jax.lax.scan(step, x_init, rows)
        return x, with_initial(x_init, states)
