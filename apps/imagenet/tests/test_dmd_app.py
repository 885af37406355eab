"""DMD2 in the app: the `demo_dmd:smoke` path end to end (the digits teacher is trained first
because its workdir is empty, then DMD2 trains and the report, grid and loss curves are written),
`dmd2:smoke` from a released-layout DiT checkpoint (DiT hidden tokens for the GAN head, the
teacher frozen and bit-exact), and the error without a teacher."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from nnx_imagenet.checkpoints import load_latest_state
from nnx_imagenet.config_loading import load_config
from nnx_imagenet.configs.common import validate
from nnx_imagenet.run import run_train
from nnx_train import trainer


def _params(module) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(module, nnx.Param))]


@pytest.mark.slow
def test_demo_dmd_smoke_trains_the_teacher_first_and_writes_the_report(tmp_path):
    cfg = load_config(
        "demo_dmd:smoke",
        [f"workdir={tmp_path / 'student'}", f"interface.teacher_workdir={tmp_path / 'teacher'}",
         "log.progress_bar=False"],
    )  # fmt: skip
    out = run_train(cfg)
    assert (tmp_path / "teacher" / "quality_report.json").is_file()  # the teacher ran first
    assert out["step"] == 4 and out["metrics"]["finite"]
    report = json.loads((tmp_path / "student" / "quality_report.json").read_text())
    assert report["num_samples"] == 20 and report["generator_steps"] == 1
    for key in ("sample_accuracy", "fd_samples_vs_train"):
        assert np.isfinite(report[key]) and np.isfinite(report["teacher"][key])
    assert "teacher (heun" in (tmp_path / "student" / "quality_report.txt").read_text()
    assert (tmp_path / "student" / "samples_per_class.png").is_file()
    assert (tmp_path / "student" / "loss_curve_critic.png").is_file()


@pytest.mark.slow
def test_dmd2_smoke_from_a_released_dit_checkpoint_trains_with_a_frozen_teacher(tmp_path):
    """The teacher from a DiT-layout file (`interface.teacher_path`, a DDPM DiT): generator and
    fake score start as it; 3 steps with the GAN head on the DiT's last-block tokens; the
    teacher is frozen, bit-exact and without optimizer state."""
    from nnx_backbones.convert.dit import save_dit

    t_cfg = load_config("dit:smoke")
    teacher = trainer.build_interface(t_cfg)
    shifted = jax.tree.map(lambda v: v + 0.01, nnx.state(teacher.network, nnx.Param))
    nnx.update(teacher.network, shifted)  # differ from a fresh init with the same seed
    save_dit(teacher.network, tmp_path / "dit.npz")
    cfg = load_config(
        "dmd2:smoke",
        ["interface.teacher_config=dit:smoke", f"interface.teacher_path={tmp_path / 'dit.npz'}",
         f"workdir={tmp_path / 'dmd'}", "total_steps=3", "checkpoint.every_steps=3"],
    )  # fmt: skip
    cfg.model = t_cfg.model
    validate(cfg)
    built = trainer.build_interface(cfg)
    want = _params(teacher.network)
    for part in (built.teacher.network, built.generator.network, built.critic.fake.network):
        for a, b in zip(_params(part), want, strict=True):
            np.testing.assert_array_equal(a, b)
    assert type(built.teacher).__name__ == "DDPMInterface"
    assert built.critic.head is not None and built.gan_hidden_at == cfg.model.depth

    out = run_train(cfg)
    assert out["step"] == 3 and out["metrics"]["finite"]
    assert np.isfinite(out["metrics"]["critic/loss"])  # every step; the generator's in step 0
    logged = [json.loads(line) for line in (tmp_path / "dmd" / "metrics.jsonl").open()]
    gen = [r["generator/loss"] for r in logged if "generator/loss" in r]
    assert np.isfinite(gen[0]) and np.isnan(gen[1:]).all()  # not due in steps 1, 2
    _, state = load_latest_state(cfg)
    assert {k: int(v) for k, v in state["count"].items()} == {"generator": 1, "critic": 3}
    frozen = [np.asarray(x) for x in jax.tree.leaves(state["frozen"])]
    for a, b in zip(frozen, want, strict=True):
        np.testing.assert_array_equal(a, b)
    paths = jax.tree_util.tree_flatten_with_path((state["opt_state"], state["params"]))[0]
    assert not any("teacher" in jax.tree_util.keystr(p) for p, _ in paths)


def test_dmd2_needs_exactly_one_teacher_source(tmp_path):
    from nnx_imagenet.errors import ConfigError

    cfg = load_config("dmd2:smoke")
    with pytest.raises(ConfigError, match="teacher_workdir=RUN_DIR"):
        trainer.build_interface(cfg)
