"""Orbax checkpoints: train state + data-iterator state + config, with exact resume.

One `orbax.checkpoint.CheckpointManager` per run, with three items per step:
  "state"   the train state pytree (`nnx_train.state`), saved sharded, restored onto the shardings
            of the abstract state given at restore time (so a run can resume on another mesh);
  "data"    the grain iterator state (grain's own orbax handler: one JSON file per process);
  "config"  the config as JSON, compared with the current config on restore.
Saves are asynchronous (device→host copies happen before `save` returns, so the next step may
donate the buffers). Preservation: the `keep_last` newest plus every step that is a multiple of
`keep_every`. Paths may be local or gs:// (orbax / etils epath handle both).

Restore tries the newest step first; a step that fails to load (incomplete or corrupt files) is
reported with a warning and the previous one is tried. A checkpoint whose structural config fields
(`STRUCTURAL`) differ from the current config raises `IncompatibleCheckpointError` naming them.
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

from nnx_train.config import diff_configs
from nnx_train.errors import CheckpointError, IncompatibleCheckpointError

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
        options = ocp.CheckpointManagerOptions(
            create=True,
            enable_async_checkpointing=async_save,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        )
        self.directory = str(directory)
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
        """Start saving `state` (and the iterator's state and `config`) as step `step`."""
        items: dict[str, Any] = {"state": ocp.args.PyTreeSave(state)}
        if data_iter is not None and _has_state(data_iter):
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        if config is not None:
            items["config"] = ocp.args.JsonSave(_jsonable(config))
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def all_steps(self) -> list[int]:
        self.manager.reload()
        return sorted(self.manager.all_steps())

    # --- restore ---------------------------------------------------------------------------
    def restore(
        self, abstract_state: Any, data_iter: Any = None, config: Mapping | None = None
    ) -> tuple[int, Any] | None:
        """Restore the newest usable checkpoint: `(step, state)`, or None if there is none.

        `abstract_state` gives structure, dtypes and target shardings (ShapeDtypeStructs). The
        iterator's state is set in place. Raises `IncompatibleCheckpointError` if the stored
        config differs in a `STRUCTURAL` field, `CheckpointError` if every step fails to load.
        """
        steps = sorted(self.all_steps(), reverse=True)
        failures = []
        for step in steps:
            try:
                stored = self._stored_config(step)
            except Exception as err:  # unreadable metadata: treat the step as corrupt
                failures.append((step, err))
                log.warning(
                    "checkpoint step %d has no readable config (%s); trying older", step, err
                )
                continue
            if config is not None and stored is not None:
                check_compatible(stored, _jsonable(config), step)
            try:
                args = ocp.args.PyTreeRestore(
                    abstract_state,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
                )
                restored = self.manager.restore(step, args=ocp.args.Composite(state=args))
                state = restored["state"]
                jax.block_until_ready(state)
            except Exception as err:
                failures.append((step, err))
                log.warning(
                    "checkpoint step %d under %s is incomplete or corrupt (%s: %s); falling back "
                    "to the previous checkpoint",
                    step,
                    self.directory,
                    type(err).__name__,
                    str(err)[:300],
                )
                continue
            if data_iter is not None and _has_state(data_iter):
                self._restore_data(step, data_iter)
            return step, state
        if failures:
            detail = "; ".join(f"step {s}: {type(e).__name__}: {str(e)[:200]}" for s, e in failures)
            raise CheckpointError(
                f"No checkpoint under {self.directory} could be restored ({detail}). Move the "
                f"directory away to start from scratch, or point checkpoint.dir elsewhere."
            )
        return None

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
