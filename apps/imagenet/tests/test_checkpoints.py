"""load_latest_state reads the newest checkpoint whose files match their SHA-256 record."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from nnx_imagenet.checkpoints import load_latest_state
from nnx_imagenet.errors import AppError
from nnx_train.checkpoint import Checkpointer


def test_damaged_newest_step_is_skipped_then_none_left_is_an_error(tmp_path, caplog):
    cfg = ml_collections.ConfigDict({"workdir": str(tmp_path), "checkpoint": {"dir": ""}})
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
    for step in (1, 2):
        ckpt.save(step, {"w": jnp.full((3,), float(step))})
    ckpt.close()
    (tmp_path / "checkpoints" / "2" / "state" / "_METADATA").write_text("{}")
    step, state = load_latest_state(cfg)
    assert step == 1 and np.array_equal(state["w"], [1.0, 1.0, 1.0])
    assert "skipping checkpoint step 2" in caplog.text and "SHA-256" in caplog.text
    (tmp_path / "checkpoints" / "1" / "SHA256SUMS").unlink()
    with pytest.raises(AppError, match=r"No usable checkpoint .*step 2: .*step 1: it has no"):
        load_latest_state(cfg)
