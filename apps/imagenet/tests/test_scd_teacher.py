"""sCD's teacher-loading builder end to end: `sit:smoke` trains 4 steps (the teacher run), then
`scd:smoke` builds its interface with the teacher read from that run's newest checkpoint
(`interface.teacher_workdir`) and trains 3 steps. The loss must be finite, the teacher must hold
exactly the checkpoint's EMA weights (what `build_scd` loads), and it must be a frozen tree
(`SCD.frozen_trees()`): in the state's "frozen" part, not among the trained parameters (so not in
the optimizer or the EMA), and unchanged bit for bit after training."""

import jax
import numpy as np
from flax import nnx

from nnx_imagenet.checkpoints import load_latest_state
from nnx_imagenet.config_loading import load_config
from nnx_imagenet.run import run_train
from nnx_imagenet.sampling import interface_from_state
from nnx_train import state as state_lib
from nnx_train import trainer


def _weights(module) -> list:
    """Every variable but the RNG state (typed keys), as arrays in graph order."""
    return jax.tree.leaves(nnx.state(module, nnx.Not(nnx.RngState)))


def test_scd_smoke_distils_from_a_frozen_teacher_checkpoint(tmp_path):
    teacher_dir = tmp_path / "teacher"
    cfg_t = load_config("sit:smoke", [f"workdir={teacher_dir}", "log.progress_bar=False"])
    assert run_train(cfg_t)["step"] == 4
    _, t_state = load_latest_state(cfg_t)
    t_iface = interface_from_state(cfg_t, t_state, ema=cfg_t.sample.ema)
    want = _weights(t_iface)

    cfg = load_config(
        "scd:smoke",
        [f"workdir={tmp_path / 'student'}", f"interface.teacher_workdir={teacher_dir}",
         "total_steps=3", "checkpoint.every_steps=3", "log.progress_bar=False"],
    )  # fmt: skip
    built = trainer.build_interface(cfg)
    got = _weights(built.teacher)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):  # the teacher is the checkpoint's EMA, exactly
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    n_teacher = sum(np.size(x) for x in got)
    _, params, _, _, frozen = state_lib.split_module(built)
    assert n_teacher > 10_000 and list(frozen) == ["teacher"] and "teacher" not in params

    out = run_train(cfg)
    assert out["step"] == 3 and np.isfinite(out["metrics"]["loss"]) and out["metrics"]["finite"]
    _, s_state = load_latest_state(cfg)
    size = lambda tree: sum(np.size(x) for x in jax.tree.leaves(tree))  # noqa: E731
    n_params = size(s_state["params"])
    assert size(s_state["frozen"]) == n_teacher  # the teacher is stored once, as frozen
    assert size(s_state["ema"]) == n_params  # one EMA (0.9999) of the student only
    assert size(s_state["opt_state"]) <= 2 * n_params + 16  # Adam's μ, ν of the student only
    after = interface_from_state(cfg, s_state, ema="")
    for a, b in zip(_weights(after.teacher), want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
