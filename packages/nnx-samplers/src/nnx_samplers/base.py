"""The one sampler API: `sampler.sample(rngs_or_key, model, x_init, *, y, guidance, …)`.

A sampler is a small frozen dataclass (hashable, so it is a static argument of the jitted
program). `sample` reads the model's time domain, builds the `[N+1]` grid eagerly (NumPy), splits
an nnx model into (graphdef, state), and runs ONE jitted program whose loop over steps is a
`jax.lax.scan` (no Python loop over steps, no host sync). Programs are cached by (sampler, model
graph, guidance, grid), so repeated calls do not recompile; `bind` does the per-model work once.
Randomness: an `nnx.Rngs` gives one key from its `sample` stream (or its default stream); a key
or an int seed is used as is, so the result is a deterministic function of the seed, on any
device count.
"""

import abc
import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_samplers.errors import SamplerConfigError
from nnx_samplers.guidance import (
    Autoguidance,
    ClassifierFreeGuidance,
    Evaluator,
    GuidanceSpec,
    cfg_batching,
)
from nnx_samplers.model import ModelInfo, merge_model, model_info, split_model
from nnx_samplers.schedules import Schedule, as_schedule


@dataclasses.dataclass
class SampleResult:
    """What `Sampler.sample` returns.

    Attributes:
      x: final samples, shaped like `x_init` `[B, ...]`.
      nfe: number of model evaluations per sample (each one network call; CFG runs both branches
        in that one call on a 2B batch, autoguidance counts as one evaluation of each model).
      trajectory: `[N+1, B, ...]` states at `times` when `return_trajectory=True`, else None.
      times: the `[N+1]` time grid (NumPy float64).
    """

    x: jax.Array
    nfe: int
    trajectory: jax.Array | None
    times: np.ndarray


def resolve_key(rngs_or_key: Any) -> jax.Array:
    """nnx.Rngs → a key from its `sample` stream (else its default stream); int → PRNG key."""
    if isinstance(rngs_or_key, nnx.Rngs):
        stream = "sample" if "sample" in rngs_or_key else "default"
        if stream not in rngs_or_key:
            raise SamplerConfigError(
                "The nnx.Rngs given to sample() has neither a 'sample' nor a default stream; "
                "create it as nnx.Rngs(sample=seed) or nnx.Rngs(seed)."
            )
        return getattr(rngs_or_key, stream)()
    if isinstance(rngs_or_key, (int, np.integer)):
        return jax.random.key(int(rngs_or_key))
    if isinstance(rngs_or_key, jax.Array):
        return rngs_or_key
    raise SamplerConfigError(
        f"sample() takes an nnx.Rngs, a jax PRNG key or an int seed; got {type(rngs_or_key)}."
    )


def time_array(t: jax.Array | float, x: jax.Array) -> jax.Array:
    """A scalar time as the `[B]` float32 array the contract wants."""
    return jnp.full((x.shape[0],), t, dtype=jnp.float32)


@dataclasses.dataclass(frozen=True)
class Sampler(abc.ABC):
    """Base of every sampler: `num_steps` steps over `schedule` (a name, a schedule object or an
    explicit array of N+1 times from the noise side to the data side)."""

    num_steps: int = 32
    schedule: Any = "uniform"
    # Network sub-batch inside the jitted loop (`Evaluator`): None = the backend's default
    # (`default_eval_batch`), 0 = the whole batch in one call, k > 0 = chunks of k (lax.map).
    eval_batch: int | None = dataclasses.field(default=None, kw_only=True)
    # Integrates the probability-flow ODE/SDE (pred = dx/dt, score, denoise = E[x | x_t]); a
    # model with has_velocity = False (a consistency model) is refused.
    needs_velocity: ClassVar[bool] = True

    def __post_init__(self):
        if not isinstance(self.num_steps, (int, np.integer)) or self.num_steps < 1:
            raise SamplerConfigError(f"num_steps must be a positive int; got {self.num_steps!r}.")
        object.__setattr__(self, "schedule", as_schedule(self.schedule))
        if self.eval_batch is not None and (
            not isinstance(self.eval_batch, (int, np.integer)) or self.eval_batch < 0
        ):
            raise SamplerConfigError(
                f"eval_batch must be None (backend default), 0 (whole batch) or a positive "
                f"int; got {self.eval_batch!r}."
            )

    # --- what subclasses implement ------------------------------------------------------------
    @abc.abstractmethod
    def integrate(self, f: Evaluator, key, x_init, grid: np.ndarray, info: ModelInfo, trajectory):
        """Traced body: returns (x_final, trajectory `[N+1, B, ...]` or None)."""

    @abc.abstractmethod
    def count_nfe(self, grid: np.ndarray, info: ModelInfo) -> int:
        """Model evaluations for this grid."""

    def check(self, info: ModelInfo) -> None:  # noqa: B027 (optional hook)
        """Raise `SamplerConfigError` if the model lacks what this sampler needs."""

    def prepare(self, model) -> "Sampler":
        """This sampler with its per-model constants resolved (NumPy, at bind time), ready for
        `integrate`; itself by default (`EDMSampler` adds its churn plan)."""
        return self

    def nfe_for_shape(self, nfe: int, shape: tuple[int, ...]) -> int:
        """Evaluations per sample for `x_init` of `shape`, given `count_nfe`'s `nfe` (equal
        unless the work depends on the shape, e.g. a noise matrix over the frames)."""
        return nfe

    # --- public API ---------------------------------------------------------------------------
    def grid(self, model) -> np.ndarray:
        """The `[N+1]` time grid this sampler uses for `model` (noise side first)."""
        info = model_info(model)
        alpha_sigma = _alpha_sigma_of(model) if info.has_alpha_sigma else None
        schedule: Schedule = self.schedule
        return np.asarray(schedule(self.num_steps, info.time_domain, alpha_sigma), np.float64)

    def nfe(self, model) -> int:
        """Model evaluations per sample for `model` (see `SampleResult.nfe`)."""
        return self.count_nfe(self.grid(model), model_info(model))

    def sample(
        self,
        rngs_or_key: Any,
        model: Any,
        x_init: jax.Array,
        *,
        y: jax.Array | None = None,
        guidance: ClassifierFreeGuidance | Autoguidance | None = None,
        return_trajectory: bool = False,
    ) -> SampleResult:
        """Integrate from `x_init` (noise `[B, ...]` at the noise end) to the data end.

        Args:
          rngs_or_key: `nnx.Rngs`, a PRNG key or an int seed (stochastic samplers use it).
          model: an `nnx_interfaces.Interfaces` or a `FunctionModel`.
          x_init: `[B, ...]` initial state at the noise end (may be sharded over a mesh).
          y: optional `[B]` labels / conditioning passed to the model as `y=`.
          guidance: `ClassifierFreeGuidance` (needs int labels `y`) or `Autoguidance`.
          return_trajectory: also return the `[N+1, B, ...]` states at every grid time.
        """
        needs_y = isinstance(guidance, ClassifierFreeGuidance) and y is None
        run = self.bind(model, guidance=guidance, _labels_given=not needs_y)
        return run(rngs_or_key, x_init, y=y, return_trajectory=return_trajectory)

    def bind(
        self,
        model: Any,
        *,
        guidance: ClassifierFreeGuidance | Autoguidance | None = None,
        _labels_given: bool = True,
    ) -> "BoundSampler":
        """Do the per-model work of `sample` once (checks, grid, `nnx.split`) and return a
        callable `(rngs_or_key, x_init, *, y=None, return_trajectory=False) -> SampleResult`.

        The bound sampler holds a snapshot of the model's state: bind again after the weights
        change (e.g. between training steps). Use it in evaluation loops to avoid re-splitting
        the model on every call.
        """
        info = model_info(model)
        check_velocity(self, info)
        self.check(info)
        grid = self.grid(model)
        static, state = split_model(model)
        g_spec, g_static, g_state = _guidance_parts(guidance, model, info, _labels_given)
        auto = g_spec is not None and g_spec.kind == "auto"
        nfe = self.count_nfe(grid, info) * (2 if auto else 1)
        grid_static = tuple(float(v) for v in grid)
        programs = tuple(
            _compiled(self, static, info, g_spec, g_static, grid_static, traj)
            for traj in (False, True)
        )
        return BoundSampler(self, state, g_spec, g_state, grid, nfe, programs)


@dataclasses.dataclass(frozen=True)
class BoundSampler:
    """A sampler with its model split and its grid built (see `Sampler.bind`)."""

    sampler: Sampler
    state: Any
    guidance: GuidanceSpec | None
    guide_state: Any
    times: np.ndarray
    nfe: int
    programs: tuple  # jitted programs without / with the trajectory

    def __call__(
        self,
        rngs_or_key: Any,
        x_init: jax.Array,
        *,
        y: jax.Array | None = None,
        return_trajectory: bool = False,
    ) -> SampleResult:
        if self.guidance is not None and self.guidance.kind == "cfg" and y is None:
            raise SamplerConfigError(
                "Classifier-free guidance needs class labels: pass y=[B] int labels."
            )
        program = self.programs[1 if return_trajectory else 0]
        x, traj = program(self.state, self.guide_state, resolve_key(rngs_or_key), x_init, y)
        nfe = self.sampler.nfe_for_shape(self.nfe, tuple(x_init.shape))
        return SampleResult(x=x, nfe=nfe, trajectory=traj, times=self.times)


def check_velocity(sampler: Sampler, info: ModelInfo) -> None:
    """Refuse a consistency model (`has_velocity = False`) for an ODE/SDE sampler."""
    if sampler.needs_velocity and not info.has_velocity:
        raise SamplerConfigError(
            f"{type(sampler).__name__} integrates the probability-flow ODE/SDE through pred "
            f"(dx/dt), score and denoise = E[x | x_t], which {info.name} does not have: it is "
            "a consistency model whose only output is denoise(x_t, t) = f_θ, the end point of "
            "the ODE. Sample it with DenoiseRenoise(num_steps) (multistep consistency sampling, "
            "renoise='fresh')."
        )


def _alpha_sigma_of(model):
    return model.alpha_sigma


def _guidance_parts(guidance, model, info: ModelInfo, labels_given: bool):
    if guidance is None:
        return None, None, None
    if isinstance(guidance, ClassifierFreeGuidance):
        if not labels_given:
            raise SamplerConfigError(
                "Classifier-free guidance needs class labels: pass y=[B] int labels."
            )
        null = guidance.null_label
        if null is None:
            null = getattr(getattr(model, "network", None), "num_classes", None)
            if null is None:
                raise SamplerConfigError(
                    "Classifier-free guidance needs the null label: pass "
                    "ClassifierFreeGuidance(scale, null_label=num_classes)."
                )
        spec = GuidanceSpec(
            "cfg", float(guidance.scale), guidance.interval, int(null),
            channels=guidance.channels, batching=cfg_batching(guidance.batching),
        )  # fmt: skip
        return spec, None, None
    if isinstance(guidance, Autoguidance):
        g_info = model_info(guidance.guide)
        if g_info.time_domain != info.time_domain:
            raise SamplerConfigError(
                f"The autoguidance guide has time domain {g_info.time_domain}, the model "
                f"{info.time_domain}; they must agree."
            )
        g_static, g_state = split_model(guidance.guide)
        interval = None if guidance.interval is None else tuple(map(float, guidance.interval))
        return GuidanceSpec("auto", float(guidance.scale), interval), g_static, g_state
    raise SamplerConfigError(
        f"guidance must be ClassifierFreeGuidance, Autoguidance or None; got {type(guidance)}."
    )


@functools.lru_cache(maxsize=128)
def _compiled(sampler, static, info, guidance, guide_static, grid, trajectory):
    """The whole sampling loop as one jitted XLA program, built once per static configuration
    (hashing a large nnx GraphDef costs ~1 ms, so it is done here, at bind time, not per call)."""

    def program(state, g_state, key, x_init, y):
        model = merge_model(static, state)
        guide = None if guide_static is None else merge_model(guide_static, g_state)
        f = Evaluator(model, y, guidance, guide, eval_batch=sampler.eval_batch)
        return sampler.integrate(f, key, x_init, np.asarray(grid), info, trajectory)

    return jax.jit(program)


def with_initial(x_init: jax.Array, states: jax.Array | None) -> jax.Array | None:
    """Prepend x_init to scanned states `[N, B, ...]` → `[N+1, B, ...]`."""
    if states is None:
        return None
    return jnp.concatenate([x_init[None], states], axis=0)
