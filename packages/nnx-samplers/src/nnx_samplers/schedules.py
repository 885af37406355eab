"""Time schedules: the grid t_0 = noise, …, t_N = data over which a sampler integrates.

Every schedule is a function `(num_steps, time_domain, …) -> [N+1]` array, built on the normalized
distance to the data end τ = (t − data) / (noise − data) ∈ [0, 1] (τ = 1 at the noise end), so the
same schedule serves SiT (noise at t = 1, data at 0), EDM (σ_max → 0) and flow maps (0 → 1).

A profile τ(u), u ∈ [0, 1], with τ(0) = 1 and τ(1) = 0, is laid out on N + 1 points u_i = i/N,
so the grid runs from the noise end to the data end. The model is evaluated at t_0 … t_{N−1}
only, so `time_domain.eps > 0` matters only if t_{N−1} would come closer than eps to the data
end: then the grid is N points from the noise end to `last_eval` (τ_ε = eps / |noise − data|)
plus the data end itself (EDM's convention; the ρ-schedule always uses it: N network steps
σ_max … σ_min, then 0).

`SpacedTimesteps` is ADM's timestep respacing (`space_timesteps`, used by DiT): of a discrete
model's T steps keep the indices given by section counts ("250": 250 evenly strided indices
0 … T−1 with rounding; "10,15,20": 10, 15, 20 from three equal sections; "ddim25": the
constant stride that gives exactly 25), each 0-based index n at t = (n + 1)/T, then the data end.

The small frozen dataclasses (`Uniform`, `EDMRho`, `LogSNRUniform`, `Cosine`, `Explicit`,
`SpacedTimesteps`) hold a
schedule's options, are hashable (so they can be static arguments of a jitted sampler) and are
called as `schedule(num_steps, time_domain, alpha_sigma) -> np.ndarray [N+1]`.
"""

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from nnx_interfaces.base import TimeDomain
from nnx_samplers.errors import SamplerConfigError

AlphaSigma = Callable[..., tuple]


def _check_steps(num_steps: int) -> int:
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise SamplerConfigError(f"num_steps must be a positive int; got {num_steps!r}.")
    return int(num_steps)


def _span(td: TimeDomain) -> float:
    span = abs(td.noise - td.data)
    if span == 0:
        raise SamplerConfigError(f"time_domain has noise == data ({td.noise}); nothing to sample.")
    return span


def _layout(
    profile: Callable[[np.ndarray], np.ndarray],
    num_steps: int,
    td: TimeDomain,
    *,
    always_eps: bool = False,
):
    """τ profile → times: N+1 points to the data end, unless the last evaluation would be within
    eps of it (or `always_eps`): then N points to `last_eval` plus the data end."""
    n = _check_steps(num_steps)
    span = _span(td)
    tau_eps = td.eps / span
    tau = profile(np.linspace(0.0, 1.0, n + 1))
    if td.eps > 0 and (always_eps or tau[-2] < tau_eps):
        u = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
        tau = np.concatenate([tau_eps + (1.0 - tau_eps) * profile(u), [0.0]])
    tau[0], tau[-1] = 1.0, 0.0  # endpoints exactly
    return td.data + (td.noise - td.data) * tau


def t_shift(tau: np.ndarray, shift: float) -> np.ndarray:
    """Resolution shift τ ↦ s·τ / (1 + (s − 1)·τ) (SD3 / SiT): fixes 0 and 1; s > 1 puts more
    steps at high noise."""
    return shift * tau / (1.0 + (shift - 1.0) * tau)


def uniform(num_steps: int, time_domain: TimeDomain, *, shift: float = 1.0) -> np.ndarray:
    """Uniform steps in t, optionally resolution-shifted (`shift` = s > 0). Returns `[N+1]`."""
    if not shift > 0:
        raise SamplerConfigError(f"shift must be > 0; got {shift}.")
    return _layout(lambda u: t_shift(1.0 - u, shift), num_steps, time_domain)


def cosine(num_steps: int, time_domain: TimeDomain) -> np.ndarray:
    """τ = (1 + cos πu) / 2: small steps at both ends. Returns `[N+1]`."""
    return _layout(lambda u: 0.5 * (1.0 + np.cos(np.pi * u)), num_steps, time_domain)


def edm_rho(
    num_steps: int,
    time_domain: TimeDomain,
    *,
    rho: float = 7.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> np.ndarray:
    """EDM's ρ-schedule (Karras et al. 2022, Eq. 5) on the distance d = |t − data|:

        d_i = (d_max^{1/ρ} + i/(N−1)·(d_min^{1/ρ} − d_max^{1/ρ}))^ρ,  i < N,   then d_N = 0.

    d_max = `sigma_max` or |noise − data|, d_min = `sigma_min` or `time_domain.eps`. With
    d_min = 0 the N+1 points run to 0 directly. Returns `[N+1]`, decreasing in d.
    """
    n = _check_steps(num_steps)
    span = _span(time_domain)
    d_max = span if sigma_max is None else float(sigma_max)
    d_min = time_domain.eps if sigma_min is None else float(sigma_min)
    if not 0 <= d_min < d_max or rho <= 0:
        raise SamplerConfigError(
            f"edm_rho needs 0 <= sigma_min < sigma_max and rho > 0; got sigma_min={d_min}, "
            f"sigma_max={d_max}, rho={rho}."
        )
    a, b = d_max ** (1 / rho), d_min ** (1 / rho)
    if d_min > 0:
        u = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
        d = np.concatenate([(a + u * (b - a)) ** rho, [0.0]])
    else:
        d = (a + np.linspace(0.0, 1.0, n + 1) * (b - a)) ** rho
        d[-1] = 0.0
    return time_domain.data + np.sign(time_domain.noise - time_domain.data) * d


def _logsnr(alpha_sigma: AlphaSigma, t: np.ndarray) -> np.ndarray:
    a, s = alpha_sigma(jnp.asarray(t, jnp.float32))
    with np.errstate(divide="ignore"):
        return np.log(np.abs(np.asarray(a, np.float64))) - np.log(np.asarray(s, np.float64))


def logsnr_uniform(
    num_steps: int,
    time_domain: TimeDomain,
    alpha_sigma: AlphaSigma,
    *,
    lambda_min: float = -10.0,
    lambda_max: float = 10.0,
) -> np.ndarray:
    """Uniform steps in λ = log(α/σ) (DPM-Solver's grid), λ clipped to [lambda_min, lambda_max]
    where it is infinite (α = 0 at a noise end, σ = 0 at a data end); the grid keeps the exact
    endpoints. λ(t) is inverted by bisection on τ. Returns `[N+1]`.
    """
    if alpha_sigma is None:
        raise SamplerConfigError(
            "logsnr_uniform needs the path's alpha_sigma; the model declares none. Use an "
            "interface with an affine path, or pass alpha_sigma= to FunctionModel."
        )
    td = time_domain
    to_t = lambda tau: td.data + (td.noise - td.data) * tau  # noqa: E731
    lam_lo, lam_hi = np.clip(
        _logsnr(alpha_sigma, np.array([td.noise, td.last_eval])), *(lambda_min, lambda_max)
    )

    def profile(u: np.ndarray) -> np.ndarray:
        target = lam_lo + u * (lam_hi - lam_lo)
        lo, hi = np.zeros_like(u), np.ones_like(u)  # λ decreases with τ
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = _logsnr(alpha_sigma, to_t(mid)) > target
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        tau = 0.5 * (lo + hi)
        if td.eps > 0:  # undo the τ_ε rescaling `_layout(always_eps=True)` applies
            tau_eps = td.eps / _span(td)
            tau = (tau - tau_eps) / (1.0 - tau_eps)
        return tau

    return _layout(profile, num_steps, td, always_eps=True)


def check_grid(times: Sequence[float], time_domain: TimeDomain) -> np.ndarray:
    """Validate an explicit grid: ≥ 2 points, strictly monotone from the noise side to the data
    side, inside the domain. Returns it as float64 `[N+1]`."""
    t = np.asarray(times, np.float64)
    td = time_domain
    if t.ndim != 1 or t.size < 2:
        raise SamplerConfigError(
            f"An explicit schedule must be 1-D with >= 2 times; got shape {t.shape}."
        )
    steps = np.diff(t) * td.direction
    if not np.all(steps > 0):
        raise SamplerConfigError(
            f"An explicit schedule must move strictly from the noise end ({td.noise}) towards the "
            f"data end ({td.data}); got {t.tolist()}."
        )
    if t.min() < td.low - 1e-6 or t.max() > td.high + 1e-6:
        raise SamplerConfigError(
            f"Schedule times {t.min()}..{t.max()} leave the time domain [{td.low}, {td.high}]."
        )
    return t


RESPACING = re.compile(r"ddim\d+|\d+(,\d+)*")


def space_timesteps(num_train_steps: int, section_counts: str | Sequence[int]) -> np.ndarray:
    """ADM's `space_timesteps`: the kept 0-based indices of T = `num_train_steps`, sorted `[K]`.

    `section_counts` is "ddimN" (stride s with len(range(0, T, s)) = N), or counts per equal
    section as a list or a comma-separated string ("250", "10,15,20"): section j of size
    T//k (+1 for the first T % k) keeps `count` indices start + round(m·(size − 1)/(count − 1)).
    """
    t = int(num_train_steps)
    if isinstance(section_counts, str):
        if not RESPACING.fullmatch(section_counts):
            raise SamplerConfigError(
                f"Cannot read respacing {section_counts!r}: expected 'N', 'N1,N2,...' or 'ddimN'."
            )
        if section_counts.startswith("ddim"):
            want = int(section_counts[4:])
            for stride in range(1, t):
                if len(range(0, t, stride)) == want:
                    return np.arange(0, t, stride)
            raise SamplerConfigError(
                f"Respacing {section_counts!r}: no integer stride gives exactly {want} of "
                f"{t} steps."
            )
        section_counts = [int(c) for c in section_counts.split(",")]
    counts = [int(c) for c in section_counts]
    size_per, extra = divmod(t, len(counts))
    start, kept = 0, []
    for j, count in enumerate(counts):
        size = size_per + (1 if j < extra else 0)
        if size < count or count < 1:
            raise SamplerConfigError(
                f"Respacing: cannot take {count} steps from a section of {size} (T = {t}, "
                f"sections {counts})."
            )
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(m * stride) for m in range(count)]  # Python round, as ADM
        start += size
    return np.asarray(sorted(set(kept)))


def spaced_timesteps(
    num_steps: int,
    time_domain: TimeDomain,
    section_counts: str | Sequence[int],
    *,
    train_steps: int | None = None,
) -> np.ndarray:
    """The respaced grid: kept indices n (descending) at τ = (n + 1)/T, then the data end.

    T = `train_steps`, or |noise − data| / eps of the time domain (DDPMInterface: eps = 1/T).
    `num_steps` must equal the number of kept indices. Returns `[K+1]`.
    """
    span = _span(time_domain)
    if train_steps is None:
        if time_domain.eps <= 0:
            raise SamplerConfigError(
                "Timestep respacing needs the number of discrete training steps T: the model's "
                "time domain has eps = 0, so pass SpacedTimesteps(..., train_steps=T)."
            )
        train_steps = round(span / time_domain.eps)
    kept = space_timesteps(train_steps, section_counts)
    if _check_steps(num_steps) != kept.size:
        raise SamplerConfigError(
            f"The respacing {section_counts!r} of T = {train_steps} keeps {kept.size} steps but "
            f"num_steps={num_steps}; pass num_steps={kept.size}."
        )
    tau = np.concatenate([(kept[::-1] + 1.0) / train_steps, [0.0]])
    return time_domain.data + (time_domain.noise - time_domain.data) * tau


# --- hashable schedule specifications -------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Uniform:
    """Uniform in t, with an optional resolution shift."""

    shift: float = 1.0

    def __call__(self, num_steps, time_domain, alpha_sigma=None) -> np.ndarray:
        return uniform(num_steps, time_domain, shift=self.shift)


@dataclasses.dataclass(frozen=True)
class Cosine:
    """τ = (1 + cos πu) / 2."""

    def __call__(self, num_steps, time_domain, alpha_sigma=None) -> np.ndarray:
        return cosine(num_steps, time_domain)


@dataclasses.dataclass(frozen=True)
class EDMRho:
    """EDM's ρ-schedule."""

    rho: float = 7.0
    sigma_min: float | None = None
    sigma_max: float | None = None

    def __call__(self, num_steps, time_domain, alpha_sigma=None) -> np.ndarray:
        return edm_rho(
            num_steps, time_domain, rho=self.rho, sigma_min=self.sigma_min, sigma_max=self.sigma_max
        )


@dataclasses.dataclass(frozen=True)
class LogSNRUniform:
    """Uniform in log-SNR λ = log(α/σ)."""

    lambda_min: float = -10.0
    lambda_max: float = 10.0

    def __call__(self, num_steps, time_domain, alpha_sigma=None) -> np.ndarray:
        return logsnr_uniform(
            num_steps,
            time_domain,
            alpha_sigma,
            lambda_min=self.lambda_min,
            lambda_max=self.lambda_max,
        )


@dataclasses.dataclass(frozen=True)
class Explicit:
    """A given grid `times` (N+1 values, noise side first); `num_steps` must equal N."""

    times: tuple[float, ...]

    def __call__(self, num_steps, time_domain, alpha_sigma=None) -> np.ndarray:
        t = check_grid(self.times, time_domain)
        if num_steps != t.size - 1:
            raise SamplerConfigError(
                f"The explicit schedule has {t.size} times ({t.size - 1} steps) but num_steps="
                f"{num_steps}; pass num_steps={t.size - 1}."
            )
        return t


@dataclasses.dataclass(frozen=True)
class SpacedTimesteps:
    """ADM/DiT timestep respacing: `SpacedTimesteps("250")`, `("ddim25")`, `("10,15,20")`."""

    section_counts: str | tuple[int, ...]
    train_steps: int | None = None

    def __post_init__(self):
        if not isinstance(self.section_counts, str):
            object.__setattr__(self, "section_counts", tuple(int(c) for c in self.section_counts))

    def __call__(self, num_steps, time_domain, alpha_sigma=None) -> np.ndarray:
        return spaced_timesteps(
            num_steps, time_domain, self.section_counts, train_steps=self.train_steps
        )


Schedule = Uniform | Cosine | EDMRho | LogSNRUniform | Explicit | SpacedTimesteps
_NAMES = {
    "uniform": Uniform,
    "cosine": Cosine,
    "edm": EDMRho,
    "rho": EDMRho,
    "logsnr": LogSNRUniform,
}


def as_schedule(spec: "str | Schedule | Sequence[float] | np.ndarray") -> Schedule:
    """Accept a schedule object, a name ('uniform', 'cosine', 'edm', 'logsnr'), an ADM
    respacing string ('250', 'ddim25', '10,15,20' → `SpacedTimesteps`) or an array."""
    if isinstance(spec, Uniform | Cosine | EDMRho | LogSNRUniform | Explicit | SpacedTimesteps):
        return spec
    if isinstance(spec, str) and RESPACING.fullmatch(spec):
        return SpacedTimesteps(spec)
    if isinstance(spec, str):
        try:
            return _NAMES[spec.lower()]()
        except KeyError:
            raise SamplerConfigError(
                f"Unknown schedule {spec!r}; expected one of {sorted(_NAMES)}, a respacing "
                f"('250', 'ddim25'), a schedule object "
                f"(Uniform(shift=...), EDMRho(rho=...), ...) or an explicit array of times."
            ) from None
    try:
        times = tuple(float(v) for v in np.asarray(spec, np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise SamplerConfigError(f"Cannot read {spec!r} as a schedule.") from None
    if math.prod(np.shape(spec)) != len(times) or np.ndim(spec) != 1:
        raise SamplerConfigError(f"An explicit schedule must be 1-D; got shape {np.shape(spec)}.")
    return Explicit(times)
