"""Read the trainer's newest checkpoint back for sampling and evaluation (no data, no train step).

The trainer (`nnx_train.checkpoint.Checkpointer`) stores the train state pytree under the item
"state"; here it is restored onto the host as NumPy arrays from the checkpoint's own metadata, so
any machine (another device count, CPU only) can sample from it.
"""

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from nnx_imagenet.errors import AppError
from nnx_train import fileio
from nnx_train.checkpoint import Checkpointer


def checkpoint_dir(config: ml_collections.ConfigDict) -> str:
    """`checkpoint.dir`, or `{workdir}/checkpoints` as the trainer uses."""
    return config.checkpoint.dir or fileio.join(config.workdir, "checkpoints")


def load_latest_state(config: ml_collections.ConfigDict) -> tuple[int, dict]:
    """(step, state) of the newest checkpoint of the run `config` describes, as host arrays.

    Raises:
      AppError: no checkpoint under the directory (says which directory and how to make one).
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
        step = steps[-1]
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
