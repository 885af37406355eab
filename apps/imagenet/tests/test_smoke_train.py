"""An ImageNet method config trains end to end at its smoke size: `sit:smoke` (DiT + SiT on
synthetic 8×8×4 latents through the latent-shaped grain path) runs 4 steps through the trainer,
checkpoints at the last step, and the checkpoint reads back (finite EMA and parameters)."""

import jax
import numpy as np

from nnx_imagenet.checkpoints import load_latest_state
from nnx_imagenet.config_loading import load_config
from nnx_imagenet.run import run_train


def test_sit_smoke_trains_checkpoints_and_reads_back(tmp_path):
    config = load_config("sit:smoke", [f"workdir={tmp_path}", "log.progress_bar=False"])
    out = run_train(config)
    assert out["step"] == 4 and not out["preempted"]
    assert np.isfinite(out["metrics"]["loss"]) and out["metrics"]["finite"]
    step, state = load_latest_state(config)
    assert step == 4
    leaves = jax.tree.leaves(state["ema"])
    assert leaves and all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
    n_params = sum(np.asarray(x).size for x in jax.tree.leaves(state["params"]))
    assert n_params > 10_000  # a real DiT, not an empty tree
