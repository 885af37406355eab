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
import nnx_train_testlib as T
import numpy as np
import pytest

from nnx_train import checkpoint, trainer
from nnx_train.errors import IncompatibleCheckpointError, NonFiniteError

LIB = str(Path(T.__file__))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("reference"))
    cfg = T.tiny_config(work, **{"posthoc_ema.snapshot_every": 2})
    result = trainer.train(cfg, T.make_data)
    return cfg, result, T.params_np(result.state)


def run_subprocess(cfg, out, mode, at, cache_dir) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    cmd = [sys.executable, LIB, cfg.to_json(), str(out), mode, str(at)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs"


def test_reference_run_writes_metrics_checkpoints_and_snapshots(reference):
    cfg, result, _ = reference
    assert result.step == 6 and not result.preempted
    with open(os.path.join(cfg.workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4, 6]
    for key in ("loss", "grad_norm", "lr", "steps_per_s", "images_per_s", "aux/mse_t_lt_half"):
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


def test_sigkill_then_resume_is_bit_identical(reference, tmp_path, cache_dir):
    cfg, _, expected = reference
    cfg = T.tiny_config(str(tmp_path / "run"), **{"posthoc_ema.snapshot_every": 2})
    killed = run_subprocess(cfg, tmp_path / "killed.npz", "kill", 5, cache_dir)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "killed.npz").exists()
    resumed = run_subprocess(cfg, tmp_path / "resumed.npz", "none", -1, cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = dict(np.load(tmp_path / "resumed.npz"))
    assert int(out.pop("step")) == 6 and not bool(out.pop("preempted"))
    assert_bit_identical(out, expected)


def test_sigterm_saves_exits_zero_and_resumes_exactly(reference, tmp_path, cache_dir):
    _, _, expected = reference
    cfg = T.tiny_config(str(tmp_path / "run"), **{"posthoc_ema.snapshot_every": 2})
    term = run_subprocess(cfg, tmp_path / "term.npz", "term", 3, cache_dir)
    assert term.returncode == 0, term.stderr[-3000:]
    out = np.load(tmp_path / "term.npz")
    assert int(out["step"]) == 3 and bool(out["preempted"])
    ckpt = checkpoint.Checkpointer(os.path.join(cfg.workdir, "checkpoints"))
    assert ckpt.all_steps() == [2, 3]
    ckpt.close()
    result = trainer.train(cfg, T.make_data)  # resumes from step 3 in this process
    assert result.step == 6
    assert_bit_identical(T.params_np(result.state), expected)


def test_nonfinite_steps_are_skipped_then_stop_with_last_good_checkpoint(tmp_path):
    cfg = T.tiny_config(
        str(tmp_path),
        **{"train.max_nonfinite": 3, "ema.decays": (0.9,), "posthoc_ema.stds": ()},
    )
    cfg.interface.blowup = float("inf")
    with pytest.raises(NonFiniteError, match=r"3 consecutive steps.*last checkpoint \(step 2"):
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


def test_grad_accumulation_matches_full_batch(tmp_path):
    one = jax.devices()[:1]
    params = []
    for accum in (1, 4):
        cfg = T.tiny_config(
            str(tmp_path / str(accum)),
            **{"train.grad_accum": accum, "total_steps": 2, "checkpoint.resume": False},
        )
        cfg.interface = type(cfg.interface)({"name": "det_regress"})
        params.append(T.params_np(trainer.train(cfg, T.make_data, devices=one).state))
    for k in params[0]:
        np.testing.assert_allclose(params[0][k], params[1][k], rtol=2e-5, atol=1e-6)


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
    other = T.tiny_config(cfg.workdir)
    other.model.width = 32
    other.ema.decays = (0.5,)
    ckpt = checkpoint.Checkpointer(result.checkpoint_dir)
    with pytest.raises(IncompatibleCheckpointError) as info:
        ckpt.restore(_abstract(result.state), None, other)
    ckpt.close()
    msg = str(info.value)
    assert "model.width: checkpoint 16 vs current 32" in msg and "ema.decays" in msg
