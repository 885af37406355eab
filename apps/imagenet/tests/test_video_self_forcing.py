"""The video demo's Self-Forcing stage: `nnx-imagenet train --config=video_self_forcing:smoke`
end to end through the command line (the `video_demo:smoke` teacher is trained first because its
workdir is empty, then 4 Self-Forcing steps, few-step AR videos past the clip length, GIFs and
the report with the teacher's numbers; FAILED after 4 steps: exit 3), and the
`imagenet.self_forcing` plug-in: generator and fake score start as the teacher's EMA weights,
the fake score has one noise level per video, the teacher stays frozen, every option reaches
`SelfForcing`, and bad teachers are refused with what to set."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from nnx_imagenet.checkpoints import load_latest_state
from nnx_imagenet.config_loading import load_config
from nnx_imagenet.errors import ConfigError
from nnx_imagenet.sampling import interface_from_state
from nnx_train import trainer


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_sf")
    overrides = [f"interface.teacher_workdir={root / 'teacher'}"]
    cmd = [
        sys.executable, "-c", "from nnx_imagenet.cli import main; main()",
        "train", "--config=video_self_forcing:smoke", f"--workdir={root / 'sf'}",
        *[f"--config.{o}" for o in overrides],
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return root, overrides, proc


def _params(module) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(module, nnx.Param))]


@pytest.mark.slow
def test_video_self_forcing_smoke_trains_the_teacher_first_and_writes_the_report(smoke_run):
    root, _, proc = smoke_run
    assert proc.returncode == 3, proc.stderr[-3000:]  # 4 steps: the report says FAILED
    assert "no teacher under" in proc.stdout and "Self-Forcing stage: report" in proc.stdout
    assert (root / "teacher" / "video_report.json").is_file()  # the teacher ran first
    sf = root / "sf"
    report = json.loads((sf / "video_report.json").read_text())
    gen, real, teacher = report["generated"], report["training"], report["teacher"]
    assert gen["num_videos"] == 4 and gen["num_frames"] == 32  # GENERATED_FRAMES
    assert report["generator_steps"] == 2 and report["train_steps"] == 4
    assert real["motion_score"] == 1.0 and real["class_consistency"] > 0.9  # the ceiling
    assert teacher["generated"]["num_frames"] == 32  # the teacher's own report, next to it
    for r in (gen, teacher["generated"]):
        assert 0.0 <= r["class_consistency"] <= 1.0 and 0.0 <= r["motion_score"] <= 1.0
    assert report["passed"] is False
    txt = (sf / "video_report.txt").read_text()
    assert "2 steps per frame" in txt and "teacher (autoregressive, euler 2 steps" in txt
    gif = Image.open(sf / "videos_per_class.gif")
    assert gif.n_frames == 32 and gif.size == (4 * (4 * 32 + 3 * 2), 4 * 32)
    assert sorted(p.name for p in (sf / "videos").iterdir()) == [f"class_{c}.gif" for c in range(4)]
    assert (sf / "loss_curve_critic.png").is_file()  # 4 critic updates, 2 generator updates
    logged = [json.loads(line) for line in (sf / "metrics.jsonl").open()]
    logged = [r for r in logged if "critic/loss" in r]  # steps 1..4 (not the run's header)
    assert len(logged) == 4 and np.isfinite([r["critic/loss"] for r in logged]).all()
    gen = [r["generator/loss"] for r in logged]  # updated in steps 0 and 2 (fake_updates 2)
    assert np.isfinite(gen[::2]).all() and np.isnan(gen[1::2]).all()


@pytest.mark.slow
def test_plugin_builds_generator_fake_and_frozen_teacher_from_the_teacher_run(smoke_run):
    root, overrides, proc = smoke_run
    assert (root / "teacher" / "checkpoints").is_dir(), proc.stderr[-3000:]
    t_cfg = load_config("video_demo:smoke", [f"workdir={root / 'teacher'}"])
    _, t_state = load_latest_state(t_cfg)
    want = _params(interface_from_state(t_cfg, t_state, ema=t_cfg.sample.ema).network)
    raw = _params(interface_from_state(t_cfg, t_state).network)
    assert any(not np.array_equal(a, b) for a, b in zip(want, raw, strict=True))  # EMA ≠ raw

    opts = ["interface.exit_step=frame", "interface.context_noise=0.25", "interface.window=2",
            "interface.generator_steps=3", "interface.guidance=1.5"]  # fmt: skip
    cfg = load_config("video_self_forcing:smoke", [*overrides, *opts])
    sf = trainer.build_interface(cfg)
    assert type(sf).__name__ == "SelfForcing" and sf.frozen_trees() == ("teacher",)
    assert {t.tree for t in sf.trained_trees()} == {"generator", "critic"}
    for part in (sf.teacher.network, sf.generator.network, sf.critic.fake.network):
        for a, b in zip(_params(part), want, strict=True):
            np.testing.assert_array_equal(a, b)
    assert sf.generator.network is not sf.critic.fake.network
    assert (sf.generator.noise_levels, sf.critic.fake.noise_levels) == ("independent", "shared")
    assert (sf.exit_step, sf.context_noise, sf.window, sf.generator_steps) == ("frame", 0.25, 2, 3)
    assert sf.guidance == 1.5 and sf.null_label == 10  # CFG's null label: the teacher's classes
    x = jnp.zeros((2, *cfg.data.shape))
    loss = nnx.jit(lambda m, x, y: m.generator_loss(x, y=y))(sf, x, jnp.asarray([1, 2]))
    assert np.isfinite(loss[0] if isinstance(loss, tuple) else loss)

    # the trained run: the teacher tree is the teacher's EMA weights, bit-exact, and frozen
    s_cfg = load_config("video_self_forcing:smoke", [*overrides, f"workdir={root / 'sf'}"])
    _, state = load_latest_state(s_cfg)
    assert {k: int(v) for k, v in state["count"].items()} == {"generator": 2, "critic": 4}
    for a, b in zip(jax.tree.leaves(state["frozen"]), want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_plugin_refuses_a_missing_or_non_forcing_teacher(tmp_path):
    cfg = load_config("video_self_forcing:smoke", ["interface.teacher_workdir="])
    with pytest.raises(ConfigError, match="teacher_workdir=RUN_DIR"):
        trainer.build_interface(cfg)
    cfg = load_config(
        "video_self_forcing:smoke",
        ["interface.teacher_config=digits:smoke", f"interface.teacher_workdir={tmp_path}"],
    )
    with pytest.raises(ConfigError, match="diffusion_forcing"):
        trainer.build_interface(cfg)
