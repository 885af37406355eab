"""End-to-end training on CPU: outputs, exact resume after SIGKILL, SIGTERM preemption, the
non-finite guard, gradient accumulation, corrupt-checkpoint fallback and config compatibility.

The uninterrupted 6-step run (`reference`) is shared; the SIGKILL / SIGTERM runs are real
subprocesses of `nnx_train_testlib.py` (sharing a persistent compilation cache)."""

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import nnx_train_testlib as T
import numpy as np
import optax
import pytest

from nnx_train import checkpoint, trainer
from nnx_train import state as state_lib
from nnx_train import step as step_lib
from nnx_train.errors import IncompatibleCheckpointError, NonFiniteError

LIB = str(Path(T.__file__))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Persistent compilation cache shared by the reference run and the subprocesses (which
    compile the same programs). Only compilations over 1 s are written from this process."""
    path = str(tmp_path_factory.mktemp("jax_cache"))
    jax.config.update("jax_compilation_cache_dir", path)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """SiT + tiny DiT, 6 steps uninterrupted, Euler sample grid at step 6, snapshots every 2."""
    work = str(tmp_path_factory.mktemp("reference"))
    cfg = T.dit_config(work)
    result = trainer.train(cfg, T.make_image_data)
    return cfg, result, T.params_np(result.state)


def run_subprocess(cfg, out, mode, at, cache_dir) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    cmd = [sys.executable, LIB, cfg.to_json(), str(out), mode, str(at)]
    proc = T.popen(cmd, env=env)
    (stdout,), (stderr,) = T.wait_for([proc])  # progress-based deadline, no fixed timeout
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs"


def test_reference_run_writes_metrics_checkpoints_and_snapshots(reference):
    cfg, result, _ = reference
    assert result.step == 6 and not result.preempted
    grid = os.path.join(cfg.workdir, "samples", "00000006.png")
    from PIL import Image

    with Image.open(grid) as im:  # 6 labelled 4×4 samples, upscaled, in a 3×2 grid
        assert im.size[0] >= 3 * 16 and im.size[1] >= 2 * 16
    with open(os.path.join(cfg.workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4, 6]
    for key in ("loss", "grad_norm", "lr", "steps_per_s", "images_per_s"):
        assert all(math.isfinite(r[key]) for r in logged), key
    # lr of the step that produced step 6 is the constant peak after the 2 warm-up steps.
    assert logged[-1]["lr"] == pytest.approx(cfg.optimizer.lr)
    assert records[0]["event"] == "start" and records[0]["params"] > 0
    ckpt = checkpoint.Checkpointer(result.checkpoint_dir)
    assert ckpt.all_steps() == [2, 4, 6]  # keep_last = 3
    ckpt.close()
    # Post-hoc EMA: the tracked σ_rel reconstructed at the last snapshot is that snapshot.
    snaps = checkpoint.load_snapshots(os.path.join(cfg.workdir, "posthoc_ema"))
    assert [s[0] for s in snaps] == [2.0, 4.0, 6.0]
    from nnx_train import posthoc_ema

    rec = posthoc_ema.reconstruct(snaps, 0.1)
    final = jax.tree.map(np.asarray, result.state["power_ema"]["0.1"])
    for a, b in zip(jax.tree.leaves(rec), jax.tree.leaves(final), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_sigterm_then_sigkill_then_resume_is_bit_identical(reference, tmp_path, cache_dir):
    """Run A gets SIGTERM after step 3: it saves step 3 and exits 0. Run B resumes from 3 and is
    SIGKILLed after step 5 (its step-4 save may still be in flight). Run C resumes from the
    newest complete checkpoint and finishes: parameters bit-identical to the reference."""
    _, _, expected = reference
    cfg = T.dit_config(str(tmp_path / "run"))
    ckpt_dir = os.path.join(cfg.workdir, "checkpoints")

    term = run_subprocess(cfg, tmp_path / "a.npz", "term", 3, cache_dir)
    assert term.returncode == 0, term.stderr[-3000:]
    out = np.load(tmp_path / "a.npz")
    assert int(out["step"]) == 3 and bool(out["preempted"])
    ckpt = checkpoint.Checkpointer(ckpt_dir)
    assert ckpt.all_steps() == [2, 3]
    ckpt.close()

    killed = run_subprocess(cfg, tmp_path / "b.npz", "kill", 5, cache_dir)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (tmp_path / "b.npz").exists()
    killed_pid = json.loads((Path(cfg.workdir) / "RUN.lock").read_text())["pid"]

    resumed = run_subprocess(cfg, tmp_path / "c.npz", "none", -1, cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The killed run's run lock was freed by the kernel; C took it over and said so.
    assert "taking over the run lock" in resumed.stderr and f"pid {killed_pid}" in resumed.stderr
    out = dict(np.load(tmp_path / "c.npz"))
    assert int(out.pop("step")) == 6 and not bool(out.pop("preempted"))
    out.pop("loss")
    assert_bit_identical(out, expected)


def test_nonfinite_steps_are_skipped_then_stop_with_last_good_checkpoint(tmp_path):
    cfg = T.tiny_config(
        str(tmp_path),
        **{
            "train.max_nonfinite": 3,
            "ema.decays": (0.9,),
            "posthoc_ema.stds": (),
            "log.every_steps": 2,
        },
    )
    cfg.interface.blowup = float("inf")
    match = r"3 consecutive steps.*newest checkpoint, step 2 .*verified finite"
    with pytest.raises(NonFiniteError, match=match):
        trainer.train(cfg, T.make_data, devices=jax.devices()[:1])
    import orbax.checkpoint as ocp

    saved = ocp.PyTreeCheckpointer().restore(tmp_path / "checkpoints" / "2" / "state")
    assert int(saved["guard"]["skipped"]) == 2 and int(saved["step"]) == 2
    # No update ever happened: the EMA (which moves towards every new θ) still equals θ.
    for a, b in zip(
        jax.tree.leaves(saved["params"]), jax.tree.leaves(saved["ema"]["0.9"]), strict=True
    ):
        assert np.array_equal(a, b) and np.all(np.isfinite(a))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


def test_grad_accumulation_matches_full_batch():
    """The jitted step with 4 micro-batches equals the full-batch step (deterministic loss)."""
    cfg = T.tiny_config("/unused")
    cfg.interface = type(cfg.interface)({"name": "det_regress"})
    graphdef, params, rng, other, _ = state_lib.split_module(trainer.build_interface(cfg))
    opt = optax.sgd(0.1)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": opt.init(params),
        "ema": {},
        "power_ema": {},
        "rng": state_lib.keys_to_data(rng),
        "other": other,
        "guard": step_lib.init_guard(),
    }
    batch = {"x": jnp.asarray(T.DATA[:8]), "y": jnp.asarray(T.LABELS[:8])}
    out = []
    for accum in (1, 4):
        fn = step_lib.make_train_step(
            graphdef, state_lib.key_template(rng), opt, lambda s: 0.1, grad_accum=accum
        )
        new, metrics = jax.jit(fn)(state, batch)
        out.append((T.params_np(new), float(metrics["loss"]), float(metrics["grad_norm"])))
    assert out[0][1] == pytest.approx(out[1][1], rel=1e-6)
    assert out[0][2] == pytest.approx(out[1][2], rel=1e-5)
    for k in out[0][0]:
        np.testing.assert_allclose(out[0][0][k], out[1][0][k], rtol=1e-5, atol=1e-7)


def test_microbatches_interleave_rows():
    x = jnp.arange(8)
    np.testing.assert_array_equal(step_lib.microbatches({"x": x}, 4)["x"][1], [1, 5])


def _abstract(state):
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state
    )


def test_corrupt_or_incomplete_latest_checkpoint_falls_back(reference, tmp_path, caplog):
    cfg, result, _ = reference
    directory = tmp_path / "ckpt"
    shutil.copytree(result.checkpoint_dir, directory)
    (directory / "8.orbax-checkpoint-tmp-1").mkdir()  # an interrupted save: ignored
    for f in (directory / "6" / "state").rglob("*"):
        if f.is_file() and f.name != "commit_success.txt":
            f.write_bytes(b"garbage")
    ckpt = checkpoint.Checkpointer(str(directory))
    with caplog.at_level(logging.WARNING):
        step, state = ckpt.restore(_abstract(result.state), None, cfg)
    ckpt.close()
    assert step == 4 and int(state["step"]) == 4
    assert "step 6" in caplog.text and "falling back" in caplog.text


def test_incompatible_config_names_the_fields(reference, tmp_path):
    cfg, result, _ = reference
    other = T.dit_config(cfg.workdir)
    other.model.hidden_size = 32
    other.ema.decays = (0.5,)
    ckpt = checkpoint.Checkpointer(result.checkpoint_dir)
    with pytest.raises(IncompatibleCheckpointError) as info:
        ckpt.restore(_abstract(result.state), None, other)
    ckpt.close()
    msg = str(info.value)
    assert "model.hidden_size: checkpoint 16 vs current 32" in msg and "ema.decays" in msg


def test_relative_workdir_is_taken_from_the_current_directory(tmp_path, monkeypatch):
    # orbax refuses relative checkpoint paths; the trainer resolves them (checkpoints and the
    # post-hoc EMA snapshots alike) against the current directory.
    monkeypatch.chdir(tmp_path)
    cfg = T.tiny_config("runs/rel", **{"total_steps": 2, "posthoc_ema.snapshot_every": 2})
    out = trainer.train(cfg, T.make_data, devices=jax.devices()[:1])
    assert out.step == 2 and out.checkpoint_dir == str(tmp_path / "runs" / "rel" / "checkpoints")
    assert (tmp_path / "runs" / "rel" / "checkpoints" / "2").is_dir()
    assert (tmp_path / "runs" / "rel" / "posthoc_ema").is_dir()
