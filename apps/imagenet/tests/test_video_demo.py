"""`nnx-imagenet train --config=video_demo:smoke` end to end through the command line: moving
digits written once, a causal video DiT trained with Diffusion Forcing for 4 steps, videos
generated autoregressively past the clip length, GIFs and a well-formed report (FAILED after 4
steps: exit 3); `sample` then reads the video checkpoint back."""

import json
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from nnx_imagenet.config_loading import load_config


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    workdir = root / "run"
    overrides = [f"data.kwargs.root={root / 'md'}", "data.kwargs.videos_per_digit=1"]
    cmd = [
        sys.executable, "-c", "from nnx_imagenet.cli import main; main()",
        "train", "--config=video_demo:smoke", f"--workdir={workdir}",
        *[f"--config.{o}" for o in overrides],
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return workdir, overrides, proc


@pytest.mark.slow
def test_video_demo_smoke_writes_gifs_and_the_report(smoke_run):
    workdir, _, proc = smoke_run
    assert proc.returncode == 3, proc.stderr[-3000:]  # 4 steps: the report says FAILED
    assert "video demo: report" in proc.stdout and "video_report.txt" in proc.stdout
    report = json.loads((workdir / "video_report.json").read_text())
    gen, real = report["generated"], report["training"]
    assert gen["num_videos"] == 4 and gen["num_frames"] == 32  # 8 clips of 4 frames
    assert real["motion_score"] == 1.0 and real["class_consistency"] > 0.9  # the ceiling
    for r in (gen, real):
        assert 0.0 <= r["class_consistency"] <= 1.0 and 0.0 <= r["motion_score"] <= 1.0
    assert report["passed"] is False and report["train_steps"] == 4
    gif = Image.open(workdir / "videos_per_class.gif")
    assert gif.n_frames == 32 and gif.size == (4 * (4 * 32 + 3 * 2), 4 * 32)
    assert sorted(p.name for p in (workdir / "videos").iterdir()) == [
        f"class_{c}.gif" for c in range(4)
    ]
    assert Image.open(workdir / "videos_per_class.png").size == (32 * 32, 4 * (32 + 12))
    assert (
        "PASSED" in (workdir / "video_report.txt").read_text()
        or "FAILED" in (workdir / "video_report.txt").read_text()
    )


@pytest.mark.slow
def test_sample_command_writes_video_arrays_and_gifs(smoke_run, tmp_path):
    from nnx_imagenet import commands

    workdir, overrides, proc = smoke_run
    assert proc.returncode == 3, proc.stderr[-3000:]
    config = load_config("video_demo:smoke", [f"workdir={workdir}", *overrides])
    flags = types.SimpleNamespace(
        ema=None, num_samples=8, batch_size=8, seed=0, out=str(tmp_path / "s.npz"), grid=True
    )
    commands.sample(config, flags)
    data = np.load(tmp_path / "s.npz")
    assert data["arr_0"].shape == (8, 4, 32, 32, 1) and data["arr_0"].dtype == np.uint8
    assert (tmp_path / "s.png").is_file()
    flags.out, flags.grid = str(tmp_path / "gifs"), False
    commands.sample(config, flags)
    gifs = sorted((tmp_path / "gifs").iterdir())
    assert len(gifs) == 8 and Image.open(gifs[0]).n_frames == 4
