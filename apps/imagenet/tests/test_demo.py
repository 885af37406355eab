"""The shortened digits demo through the real command line: `nnx-imagenet train --config=demo:short`
writes a checkpoint, the per-class sample grid, the loss curve and a well-formed quality report;
`sample` then reads the checkpoint back. `demo:short` (400 steps) passes the same thresholds as
the full demo (`--config=demo`, whose numbers are in the app README); a FAILED report would make
the command exit 3."""

import json
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from nnx_imagenet.config_loading import load_config


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    workdir = root / "run"
    cmd = [
        sys.executable, "-c", "from nnx_imagenet.cli import main; main()",
        "train", "--config=demo:short", f"--workdir={workdir}",
        f"--config.data.kwargs.root={root / 'digits'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, root, proc.stdout


def test_demo_writes_checkpoint_grid_curve_and_report(demo_run):
    workdir, _, stdout = demo_run
    assert "quality report" in stdout and "result :" in stdout
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[-1] == 400
    grid = Image.open(workdir / "samples_per_class.png")
    # 10 rows of 8·4-pixel digits with 2-pixel padding, 10 columns plus a 24-pixel label strip.
    assert grid.size == (24 + 10 * 34 + 2, 10 * 34 + 2)
    assert Image.open(workdir / "loss_curve.png").size == (640, 400)
    report = json.loads((workdir / "quality_report.json").read_text())
    for key in ("classifier_val_accuracy", "sample_accuracy", "fd_samples_vs_train"):
        assert isinstance(report[key], float) and np.isfinite(report[key])
    assert 0.0 <= report["sample_accuracy"] <= 1.0 and report["fd_samples_vs_train"] >= 0.0
    assert report["classifier_val_accuracy"] >= 0.95  # the judge itself is trained properly
    assert report["num_samples"] == 100 and len(report["per_class_sample_accuracy"]) == 10
    assert report["passed"] is True  # else the command exits 3 (checked by the fixture's 0)
    text = (workdir / "quality_report.txt").read_text()
    assert "Frechet distance" in text and ("PASSED" in text or "FAILED" in text)
    losses = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in losses if "loss" in r]
    assert len(losses) >= 5 and losses[-1] < losses[0]  # training made progress


def test_sample_command_reads_the_checkpoint_back(demo_run, tmp_path):
    from nnx_imagenet import commands

    workdir, root, _ = demo_run
    config = load_config(
        "demo:short", [f"workdir={workdir}", f"data.kwargs.root={root / 'digits'}"]
    )
    out = tmp_path / "samples.npz"
    flags = types.SimpleNamespace(
        ema=None, num_samples=16, batch_size=8, seed=0, out=str(out), grid=True
    )
    commands.sample(config, flags)
    data = np.load(out)
    assert data["arr_0"].shape == (16, 8, 8, 1) and data["arr_0"].dtype == np.uint8
    np.testing.assert_array_equal(data["labels"], np.arange(16) % 10)
    assert out.with_suffix(".png").is_file()
