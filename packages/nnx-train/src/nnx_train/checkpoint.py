"""Orbax checkpoints: train state + data-iterator state + config, with exact resume.

One `orbax.checkpoint.CheckpointManager` per run, with three items per step:
  "state"   the train state pytree (`nnx_train.state`), saved sharded, restored onto the shardings
            of the abstract state given at restore time (so a run can resume on another mesh);
  "data"    the grain iterator state (grain's own orbax handler: one JSON file per process);
  "config"  the config as JSON, compared with the current config on restore.
Saves are asynchronous (device→host copies happen before `save` returns, so the next step may
donate the buffers). Preservation: the `keep_last` newest plus every step that is a multiple of
`keep_every`. Paths may be local or gs:// (orbax / etils epath handle both).

Never lost, looped or silently corrupted:
  * a state with a non-finite value is never written (`NonFiniteError` instead);
  * every step gets a SHA-256 record of its files (`nnx_train.integrity`), written after all
    items and before orbax commits the step, so a committed step without it is incomplete;
  * a failed asynchronous save is raised by `poll()` at the next step boundary (no host sync:
    it only looks at orbax's in-progress flag) as a `CheckpointError` naming the step;
  * restore tries the newest step first. A step whose record does not match, or whose config,
    state or data-iterator state fails to load, or whose state is not finite, is moved aside to
    `{step}.corrupt-{time}` (kept) with a warning naming step, reason and new place, and the
    next older step is tried. None usable → `CheckpointError` (never a silent fresh start).
A checkpoint whose structural config fields (`STRUCTURAL`) differ from the current config raises
`IncompatibleCheckpointError` naming them (the checkpoint is fine; the config is not).
"""

import fnmatch
import json
import logging
from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from nnx_train import fileio, integrity
from nnx_train.config import diff_configs
from nnx_train.errors import CheckpointError, IncompatibleCheckpointError, NonFiniteError
from nnx_train.state import all_finite

log = logging.getLogger(__name__)

# Config fields that must match between a checkpoint and the run restoring it.
STRUCTURAL = (
    "model",
    "interface",
    "data.shape",
    "data.num_classes",
    "data.global_batch_size",
    "optimizer.name",
    "ema.decays",
    "posthoc_ema.stds",
    "trees.*.optimizer.name",  # per-tree overrides (fnmatch patterns)
    "trees.*.ema.decays",
    "trees.*.posthoc_ema.stds",
)


def _has_state(it: Any) -> bool:
    return hasattr(it, "get_state") and hasattr(it, "set_state")


class Checkpointer:
    """Save / restore train state, data iterator and config under `directory`.

    Args:
      directory: local path or gs:// URL (created if missing).
      keep_last: keep the N newest checkpoints.
      keep_every: also keep every checkpoint whose step is a multiple of this (0 = none).
      async_save: write in a background thread after the device→host copy.
      replica_parallel: let replicas of a replicated array each write a slice (orbax's default;
        None = on for accelerators, off on CPU where the slicing only costs compilations).
    """

    def __init__(
        self,
        directory: str,
        *,
        keep_last: int = 3,
        keep_every: int = 0,
        async_save: bool = True,
        replica_parallel: bool | None = None,
    ):
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=max(keep_last, 1))]
        if keep_every > 0:
            policies.append(ocp.checkpoint_managers.EveryNSteps(interval_steps=keep_every))
        # The SHA-256 record is written by the background thread once every item is on disk,
        # before the commit; step directories are created synchronously in `save`, so that an
        # unwritable directory raises there instead of timing out in a background thread.
        async_options = ocp.AsyncOptions(
            post_finalization_callback=self._write_record, create_directories_asynchronously=False
        )
        options = ocp.CheckpointManagerOptions(
            create=True,
            enable_async_checkpointing=async_save,
            async_options=async_options if async_save else None,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        )
        self.directory = str(directory)
        self.async_save = async_save
        self.newest_finite: int | None = None  # newest step verified finite (restored / saved)
        self._writing: int | None = None  # step whose record the background thread will write
        self._unchecked: int | None = None  # step whose save has not been checked for errors
        self._failed = False  # a save error was raised
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": _state_handler(replica_parallel),
                "data": grain.checkpoint.CheckpointHandler(),
                "config": ocp.JsonCheckpointHandler(),
            },
        )

    # --- save ------------------------------------------------------------------------------
    def save(self, step: int, state: Any, data_iter: Any = None, config: Mapping | None = None):
        """Start saving `state` (and the iterator's state and `config`) as step `step`.

        Raises `NonFiniteError` (nothing written) if the state holds inf/NaN, and
        `CheckpointError` if this or the previous save failed."""
        self.wait()  # the previous save: done, its errors raised, its record written
        if not _finite(state):
            raise NonFiniteError(
                f"The train state at step {step} holds non-finite values; it was not saved to "
                f"{self.directory}. {self.describe_newest_finite()}"
            )
        items: dict[str, Any] = {"state": ocp.args.PyTreeSave(state)}
        if data_iter is not None and _has_state(data_iter):
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        if config is not None:
            items["config"] = ocp.args.JsonSave(_jsonable(config))
        self._writing = step
        try:
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
            if not self.async_save and jax.process_index() == 0:
                integrity.write_record(self.step_dir(step))
        except Exception as err:
            raise self._save_error(step, err, "") from err
        self._unchecked = step

    def poll(self, at_step: int | None = None) -> None:
        """Raise `CheckpointError` if the last asynchronous save has failed. Cheap (no host
        sync, no wait): call it at every step boundary."""
        if self._unchecked is not None and not self.manager.is_saving_in_progress():
            self._check(f" (noticed after step {at_step})" if at_step is not None else "")

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk; raise `CheckpointError` if one
        failed."""
        if self._unchecked is not None:
            self._check("")
        else:
            self.manager.wait_until_finished()

    def _check(self, when: str) -> None:
        step, self._unchecked = self._unchecked, None
        try:
            self.manager.wait_until_finished()
        except Exception as err:
            raise self._save_error(step, err, when) from err
        self.newest_finite = step  # it was checked finite before it was written

    def _save_error(self, step: int, err: Exception, when: str) -> CheckpointError:
        self._failed = True
        intact = self.all_steps()
        return CheckpointError(
            f"Saving checkpoint step {step} under {self.directory} failed{when}: "
            f"{type(err).__name__}: {_shorten(str(err))}. The run stopped so that no work is done "
            f"that could not be saved; the earlier checkpoints (steps {intact}) are intact. "
            f"Free disk space or fix the directory, then run again to resume"
            + (f" from step {intact[-1]}." if intact else ".")
        )

    def _write_record(self) -> None:
        """post_finalization_callback (background thread, process 0): every item of step
        `_writing` is on disk in orbax's temporary directory; hash it before the commit."""
        step = self._writing
        tmp = fileio.join(self.directory, f"{step}{_TMP_SUFFIX}")
        integrity.write_record(tmp if fileio.path(tmp).exists() else self.step_dir(step))

    def describe_newest_finite(self) -> str:
        """One sentence naming the newest checkpoint known to hold a finite state."""
        if self.newest_finite is None:
            return f"No checkpoint under {self.directory} was written or restored by this run."
        return (
            f"The newest checkpoint, step {self.newest_finite} under {self.directory}, was "
            f"verified finite when it was written or restored."
        )

    def close(self) -> None:
        try:
            self.wait()
        finally:
            try:
                self.manager.close()
            except Exception as err:
                if not self._failed:
                    raise
                # the save error was raised already; orbax repeats it while closing
                log.info("closing the checkpoint manager after a failed save: %s", err)

    def all_steps(self) -> list[int]:
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def require_empty(self) -> None:
        """Raise `CheckpointError` if there are checkpoints here (a run that does not resume
        would overwrite them)."""
        if steps := self.all_steps():
            raise CheckpointError(
                f"checkpoint.resume is False but {self.directory} already holds checkpoints "
                f"(steps {steps}); a new run would overwrite them. Set checkpoint.resume=True "
                f"to continue that run, or use a new checkpoint.dir."
            )

    def step_dir(self, step: int) -> str:
        """The directory of checkpoint `step`."""
        return fileio.join(self.directory, str(step))

    # --- restore ---------------------------------------------------------------------------
    def restore(
        self,
        abstract_state: Any,
        data_iter: Any = None,
        config: Mapping | None = None,
        *,
        move_aside: bool = True,
    ) -> tuple[int, Any] | None:
        """Restore the newest usable checkpoint: `(step, state)`, or None if there is none.

        `abstract_state` gives structure, dtypes and target shardings (ShapeDtypeStructs). The
        iterator's state is set in place. A step that fails (see the module docstring) is moved
        aside with a warning (only skipped, left in place, with `move_aside=False`: for readers
        such as sampling or evaluation that must not change a run's directory) and the next
        older one is tried. Raises
        `IncompatibleCheckpointError` if the stored config differs in a `STRUCTURAL` field,
        `CheckpointError` if no step is usable and some were moved aside (now or earlier).
        """
        failures = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state = self._restore_step(step, abstract_state, data_iter, config)
                reason = None
            except IncompatibleCheckpointError:
                raise
            except _UnusableStepError as err:
                state, reason = None, str(err)
            except Exception as err:
                state, reason = None, f"{type(err).__name__}: {_shorten(str(err), 200)}"
            if _agree(reason is None):
                self.newest_finite = step
                return step, state
            reason = reason or "another process could not restore it"
            if move_aside:
                moved = f"moved to {self._move_aside(step, reason)}"
            else:
                moved = "left in place"
                log.warning(
                    "checkpoint step %d under %s is unusable: %s. Skipping it (left in place); "
                    "falling back to the previous checkpoint.",
                    step, self.directory, reason,
                )  # fmt: skip
            failures.append((step, reason, moved))
        aside = sorted(str(p) for p in fileio.path(self.directory).glob("*.corrupt-*"))
        if failures or aside:
            detail = "".join(f"\n  step {s}: {r} ({m})" for s, r, m in failures)
            raise CheckpointError(
                f"No usable checkpoint under {self.directory}.{detail}"
                + (f"\nSteps moved aside (now or by an earlier run): {aside}." if aside else "")
                + "\nThe run was not started from scratch, so that no work is replaced "
                "silently. Inspect or restore those directories (a step you trust, e.g. one "
                "written before checksums were recorded, can be renamed back to its step number "
                "and adopted with nnx_train.integrity.write_record(<its directory>)), or set "
                "checkpoint.resume=False (or a new checkpoint.dir) to start a new run."
            )
        return None

    def _restore_step(self, step: int, abstract_state: Any, data_iter: Any, config: Any) -> Any:
        if problem := integrity.verify(self.step_dir(step)):
            raise _UnusableStepError(problem)
        stored = self._stored_config(step)
        if config is not None and stored is not None:
            check_compatible(stored, _jsonable(config), step)
        args = ocp.args.PyTreeRestore(
            abstract_state,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
        )
        state = self.manager.restore(step, args=ocp.args.Composite(state=args))["state"]
        if not _finite(state):
            raise _UnusableStepError("its train state holds non-finite values")
        if data_iter is not None and _has_state(data_iter):
            self._restore_data(step, data_iter)
        return state

    def _move_aside(self, step: int, reason: str) -> str:
        """Process 0 renames the step to `{step}.corrupt-{time}` and warns; returns the place."""
        path = self.step_dir(step)
        moved = path + ".corrupt-*"
        if jax.process_index() == 0:
            try:
                moved = integrity.move_aside(path)
            except Exception as err:  # OSError locally; object stores may not rename folders
                raise CheckpointError(
                    f"Checkpoint step {step} under {self.directory} is unusable: {reason}. It "
                    f"could not be moved aside ({err}); move or delete {path} by hand and run "
                    f"again."
                ) from err
            log.warning(
                "checkpoint step %d under %s is unusable: %s. Moved it to %s (kept, not "
                "deleted); falling back to the previous checkpoint.",
                step, self.directory, reason, moved,
            )  # fmt: skip
        _agree(True)  # the others wait for the rename
        self.manager.reload()
        return moved

    def _stored_config(self, step: int) -> dict | None:
        path = self.manager.directory / str(step) / "config"
        if not path.exists():
            return None
        restored = self.manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
        )
        return restored["config"]

    def _restore_data(self, step: int, data_iter: Any) -> None:
        path = self.manager.directory / str(step) / "data"
        if not path.exists():
            log.warning("checkpoint step %d has no data-iterator state; the data restarts", step)
            return
        self.manager.restore(
            step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iter))
        )


class _UnusableStepError(Exception):
    """A checkpoint step that cannot be used; the message is the reason."""


_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's fixed name of a step being written (local)
_all_finite = jax.jit(all_finite)


def _finite(state: Any) -> bool:
    """No inf / NaN in `state`: NumPy for host arrays (no copy to a device), else one jitted
    reduction."""
    leaves = jax.tree.leaves(state)
    if all(isinstance(x, np.ndarray | np.generic) for x in leaves):
        return all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.inexact))
    return bool(_all_finite(state))


def _shorten(text: str, n: int = 300) -> str:
    """The head and tail of a long message (orbax's put the cause, e.g. ENOSPC, last)."""
    return text if len(text) <= 2 * n else f"{text[:n]} … {text[-n:]}"


def _agree(ok: bool) -> bool:
    """True iff `ok` on every process (one tiny all-gather; no-op with one process)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _state_handler(replica_parallel: bool | None) -> ocp.PyTreeCheckpointHandler:
    """PyTree handler whose jax.Array handler has replica-parallel writes on or off."""
    if replica_parallel is None:
        replica_parallel = jax.default_backend() != "cpu"
    th = ocp.type_handlers
    registry = th.create_type_handler_registry(
        (int, th.ScalarHandler()),
        (float, th.ScalarHandler()),
        (bytes, th.ScalarHandler()),
        (np.number, th.ScalarHandler()),
        (np.ndarray, th.NumpyHandler()),
        (jax.Array, th.ArrayHandler(use_replica_parallel=replica_parallel)),
        (str, th.StringHandler()),
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def check_compatible(stored: Mapping, current: Mapping, step: int = -1) -> None:
    """Raise `IncompatibleCheckpointError` naming every differing `STRUCTURAL` field."""
    diffs = []
    for path in diff_configs(stored, current):
        if any(fnmatch.fnmatchcase(path, f) or path.startswith(f + ".") for f in STRUCTURAL):
            diffs.append(
                f"{path}: checkpoint {_get(stored, path)!r} vs current {_get(current, path)!r}"
            )
    if diffs:
        raise IncompatibleCheckpointError(
            f"The checkpoint at step {step} was written with a different config in fields that "
            f"change the train state:\n  " + "\n  ".join(diffs) + "\nUse the original values, "
            "or a new checkpoint.dir to start a new run."
        )


# --- EDM2 post-hoc EMA snapshots ---------------------------------------------------------------
class SnapshotWriter:
    """Keeps every power-EMA snapshot under `directory` (one orbax step per snapshot)."""

    def __init__(self, directory: str, *, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(str(directory), options=options)

    def save(self, step: int, power_emas: Mapping[str, Any]) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(dict(power_emas)), force=True)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def load_snapshots(directory: str) -> list[tuple[float, float, Any]]:
    """(step, σ_rel, params) for every snapshot under `directory`, as host NumPy arrays."""
    manager = ocp.CheckpointManager(
        str(directory), options=ocp.CheckpointManagerOptions(read_only=True)
    )
    out = []
    for step in sorted(manager.all_steps()):
        tree = manager.restore(step, args=ocp.args.StandardRestore())
        for std, params in tree.items():
            out.append((float(step), float(std), jax.tree.map(np.asarray, params)))
    manager.close()
    if not out:
        raise CheckpointError(f"No post-hoc EMA snapshots under {directory}.")
    return out


def _jsonable(config: Any) -> Any:
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def _get(cfg: Mapping, path: str) -> Any:
    cur: Any = cfg
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return "<missing>"
        cur = cur[part]
    return cur
