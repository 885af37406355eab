"""Read the trainer's newest checkpoint back for sampling and evaluation (no data, no train step).

The trainer (`nnx_train.checkpoint.Checkpointer`) stores the train state pytree under the item
"state"; here it is restored onto the host as NumPy arrays from the checkpoint's own metadata, so
any machine (another device count, CPU only) can sample from it. Only a step whose files match
its SHA-256 record (`nnx_train.integrity`) is used; damaged newer steps are skipped with a warning
(and left in place: the trainer moves them aside when it resumes).
"""

import logging

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from nnx_imagenet.errors import AppError
from nnx_train import fileio, integrity
from nnx_train.checkpoint import Checkpointer

log = logging.getLogger(__name__)


def checkpoint_dir(config: ml_collections.ConfigDict) -> str:
    """`checkpoint.dir`, or `{workdir}/checkpoints` as the trainer uses."""
    return config.checkpoint.dir or fileio.join(config.workdir, "checkpoints")


def load_latest_state(config: ml_collections.ConfigDict) -> tuple[int, dict]:
    """(step, state) of the newest checkpoint of the run `config` describes, as host arrays.

    Raises:
      AppError: no checkpoint under the directory (says which directory and how to make one),
        or none matches its SHA-256 record (says why for each).
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
        reasons = []
        for step in reversed(steps):
            if not (reason := integrity.verify(fileio.join(directory, str(step)))):
                break
            reasons.append(f"step {step}: {reason}")
            log.warning("skipping checkpoint step %d under %s: %s", step, directory, reason)
        else:
            raise AppError(
                f"No usable checkpoint under {directory}: " + "; ".join(reasons) + ". Resume "
                "training (it moves damaged steps aside and falls back) or restore the files."
            )
        meta = ckpt.manager.item_metadata(step)["state"]
        meta = getattr(meta, "tree", meta)
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
        restored = ckpt.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item=None, restore_args=restore_args)
            ),
        )
    finally:
        ckpt.close()
    return step, restored["state"]
