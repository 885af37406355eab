"""The README's commands through the real entry point, on tiny data:

- latent-shard training from flags (`train --config=sit:smoke --config.data.name=latents
  --config.data.kwargs.root=SHARDS`: the smoke-size DiT on shards written by `LatentShardWriter`),
  then `sample` with --step / --ema / --classes / --guidance / --sampler / --steps, the stored-
  config check (differing fields named) and a corrupt newest checkpoint skipped with a warning;
- pixel-space ImageFolder training from flags (`--config.data.name=image_folder
  --config.data.kwargs.root=TREE`, the demo's MLP at 8×8 RGB);
- Ctrl-C: the step finishes, the checkpoint is saved, the run says so and the same command resumes.
"""

import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from nnx_imagenet import cli
from nnx_imagenet.checkpoints import load_state
from nnx_imagenet.config_loading import load_config
from nnx_imagenet.data.latent_shards import LatentShardWriter

pytestmark = pytest.mark.slow


def _main(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(["nnx-imagenet", *map(str, args)])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """sit:smoke trained 4 steps on 32 latent shards (8×8×4, labels 0..9) from flags."""
    root = tmp_path_factory.mktemp("latents")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((32, 8, 8, 4)).astype(np.float32)
    with LatentShardWriter(root / "shards", shard_size=16, num_classes=10) as w:
        w.add(z, z[:, :, ::-1], np.arange(32) % 10)
    shards = root / "shards"
    flags = ["--config=sit:smoke", "--config.data.name=latents",
             f"--config.data.kwargs.root={shards}", f"--workdir={root / 'run'}"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        cli.main(["nnx-imagenet", "train", *flags, "--config.log.progress_bar=false"])
    assert e.value.code == 0
    return root, flags


def test_latent_shard_training_from_flags_checkpoints_and_reads_back(latent_run):
    root, _ = latent_run
    config = load_config("sit:smoke", ["data.name=latents", f"workdir={root / 'run'}"])
    step, state = load_state(config)
    assert step == 4
    leaves = jax.tree.leaves(state["ema"])
    assert leaves and all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
    assert sum(np.asarray(x).size for x in jax.tree.leaves(state["params"])) > 10_000  # a DiT
    records = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]


def test_sample_flags_config_check_and_corrupt_newest_checkpoint(
    latent_run, capsys, caplog, tmp_path, monkeypatch
):
    from nnx_imagenet import commands

    root, flags = latent_run
    # Latent runs decode samples with the SD-VAE, whose weights cannot be downloaded here; these
    # shards hold random numbers anyway, so keep the latents.
    monkeypatch.setattr(commands, "_decode_fn", lambda config: None)
    out = tmp_path / "s.npz"
    sample = ["sample", *flags, "--num_samples=8", "--batch_size=8", "--classes=3,7",
              "--guidance=2", "--sampler=euler", "--steps=2", "--ema=", f"--out={out}"]  # fmt: skip
    code, stdout, err = _main(capsys, *sample, "--step=2")
    assert code == 0, err
    assert "sampling from step 2 (raw weights, euler, guidance 2.0)" in stdout
    data = np.load(out)
    assert data["arr_0"].shape == (8, 8, 8, 4)
    np.testing.assert_array_equal(data["labels"], [3, 7] * 4)

    # A config that does not match the run names the differing fields.
    code, _, err = _main(capsys, *sample, "--config.model.depth=1")
    assert code == 1 and "model.depth: checkpoint 2 vs current 1" in err and "\n" not in err.strip()

    # A corrupt newest checkpoint is skipped with a warning (the trainer's restore path).
    ckpt = root / "run" / "checkpoints"
    for f in (ckpt / "4" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    code, stdout, err = _main(capsys, *sample)
    assert code == 0, err
    assert "sampling from step 2" in stdout and "step 4" in caplog.text


def test_pixel_image_folder_training_from_flags(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "tree" / "train" / label).mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / "tree" / "train" / label / f"{i}.png")
    code, stdout, err = _main(
        capsys, "train", "--config=demo:smoke", "--config.data.name=image_folder",
        f"--config.data.kwargs.root={tmp_path / 'tree'}", "--config.data.kwargs.resolution=8",
        "--config.data.shape=(8,8,3)", "--config.model.data_shape=(8,8,3)",
        "--config.data.num_classes=2", "--config.model.num_classes=2",
        f"--workdir={tmp_path / 'run'}",
    )  # fmt: skip
    # The digits report is written only for data.name = digits; this run just trains.
    assert code == 0, err
    assert "trained to step 4" in stdout
    for word in ("building mlp / sit", "initialising a new run", "compiling the train step"):
        assert word in err, word
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["2", "4"]


def test_ctrl_c_finishes_the_step_saves_and_the_same_command_resumes(tmp_path):
    def cmd(total_steps: int) -> list[str]:  # the MLP of the demo on synthetic 8×8 data
        return [sys.executable, "-c", "from nnx_imagenet.cli import main; main()", "train",
                "--config=demo:smoke", "--config.data.name=synthetic",
                f"--config.total_steps={total_steps}", "--config.checkpoint.every_steps=0",
                f"--workdir={tmp_path / 'run'}"]  # fmt: skip

    proc = subprocess.Popen(cmd(100_000), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 600  # progress-based: wait for logged steps, not a fixed time
    while not (metrics.exists() and metrics.read_text().count('"loss"') >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    said = [line for line in err.splitlines() if "interrupted at step" in line]
    assert said and said[0].endswith("checkpoint saved; rerun the same command to resume"), err
    step = int(said[0].split("interrupted at step ")[1].split(";")[0])
    assert (tmp_path / "run" / "checkpoints" / str(step)).is_dir()

    resumed = subprocess.run(cmd(step + 2), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {step}" in resumed.stderr
    assert f"trained to step {step + 2}" in resumed.stdout
