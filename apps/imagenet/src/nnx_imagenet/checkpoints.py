"""Read a trainer checkpoint back for sampling and evaluation (no data, no train step).

The trainer (`nnx_train.checkpoint.Checkpointer`) stores the train state pytree under the item
"state" and the run's config under "config". The state is restored onto the host as NumPy
arrays with the shapes and dtypes of the checkpoint's own metadata, so any machine (another
device count, CPU only) can sample from it. The newest step goes through the trainer's own
restore path: a corrupt or incomplete newest checkpoint is skipped with a warning (the previous
one is used), and a config that differs from the stored one in a field that shapes the state
(model, interface, data shape, ...) is refused with the differing fields named.
"""

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from nnx_imagenet.config_loading import checkpoint_dir
from nnx_imagenet.errors import AppError
from nnx_train import integrity
from nnx_train.checkpoint import Checkpointer, check_compatible


def load_state(config: ml_collections.ConfigDict, step: int | None = None) -> tuple[int, dict]:
    """(step, state) of the newest readable checkpoint of the run `config` describes, or of
    checkpoint `step`; NumPy arrays on the host.

    Raises:
      AppError: no checkpoint under the directory, or no step `step` (says which exist).
      nnx_train.IncompatibleCheckpointError: `config` differs from the stored config in a
        structural field (named).
      nnx_train.CheckpointError: no checkpoint could be read.
    """
    directory = checkpoint_dir(config)
    ckpt = Checkpointer(directory, async_save=False)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise AppError(
                f"No checkpoint under {directory}; train first (nnx-imagenet train "
                f"--config=... --workdir={config.workdir}) or pass the run's --workdir."
            )
        if step is not None and step not in steps:
            raise AppError(
                f"No checkpoint of step {step} under {directory}; it has steps "
                f"{', '.join(map(str, steps))}."
            )
        abstract = _abstract_state(ckpt, [step] if step is not None else steps[::-1])
        if step is None:
            # A reader never changes the run's directory: damaged steps are skipped, not moved.
            restored = ckpt.restore(abstract, None, config, move_aside=False)
            if restored is None:  # every step vanished meanwhile
                raise AppError(f"No checkpoint under {directory} could be restored.")
            return restored
        if problem := integrity.verify(ckpt.step_dir(step)):
            raise AppError(
                f"Checkpoint step {step} under {directory} fails verification ({problem}); "
                f"leave out --step to use the newest good one."
            )
        stored = ckpt.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        check_compatible(stored["config"], config.to_dict(), step)
        args = ocp.args.PyTreeRestore(
            abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)
        )
        return step, ckpt.manager.restore(step, args=ocp.args.Composite(state=args))["state"]
    finally:
        ckpt.close()


def load_latest_state(config: ml_collections.ConfigDict) -> tuple[int, dict]:
    """(step, state) of the newest readable checkpoint (`load_state(config)`)."""
    return load_state(config)


def _abstract_state(ckpt: Checkpointer, steps: list[int]):
    """Host targets (zero-stride NumPy views: right shape and dtype, no memory) from the first
    step whose metadata reads; orbax then restores NumPy arrays, which also works while a
    teacher is loaded inside `nnx.eval_shape` (sCD)."""
    error = None
    for step in steps:
        try:
            meta = ckpt.manager.item_metadata(step)["state"]
        except Exception as e:  # unreadable metadata: the restore path reports the step
            error = e
            continue
        meta = getattr(meta, "tree", meta)
        return jax.tree.map(lambda m: np.broadcast_to(np.zeros((), m.dtype), tuple(m.shape)), meta)
    raise AppError(
        f"No checkpoint under {ckpt.directory} has readable metadata (steps "
        f"{', '.join(map(str, steps))}; last error: {type(error).__name__}: {error})."
    )
