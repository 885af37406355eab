"""A run is never lost, looped or silently corrupted: each failure case of issue 15 with real
files (and real processes where one dies).

  1 damaged newest steps        moved aside, older step restored, run finishes bit-identical
  2 garbage data-iterator state moved aside (by its SHA-256, and by the restore itself)
  3 flipped bytes in state      caught by the SHA-256 record
  4 unwritable / full directory WorkdirError before anything compiles
  5 lr = 1e39                   updates skipped, nothing non-finite written, truthful error
  6 second trainer on a workdir RunLockError naming the holder; a dead holder's lock taken over
  7 async save fails            CheckpointError at the next step boundary, earlier steps intact
The tiny MLP run of `good` (6 steps, a checkpoint every 2) is the uninterrupted reference.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import nnx_train_testlib as T
import numpy as np
import pytest

from nnx_train import checkpoint, integrity, trainer, workdir
from nnx_train.errors import CheckpointError, NonFiniteError, RunLockError, WorkdirError


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    cfg = T.tiny_config(str(tmp_path_factory.mktemp("good")), **{"ema.decays": (0.9,)})
    result = trainer.train(cfg, T.make_data)
    return cfg, result, T.params_np(result.state)


def _copy(good, tmp_path) -> tuple:
    """The good run's workdir copied to tmp_path/run: (config, checkpoint dir)."""
    cfg, _, _ = good
    shutil.copytree(cfg.workdir, tmp_path / "run")
    cfg = T.tiny_config(str(tmp_path / "run"), **{"ema.decays": (0.9,)})
    return cfg, tmp_path / "run" / "checkpoints"


def _abstract(state):
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state
    )


def _data_file(step_dir: Path) -> Path:
    return max((step_dir / "state").rglob("ocdbt.process_0/d/*"), key=lambda p: p.stat().st_size)


def _flip_16_bytes(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(16):
        raw[len(raw) // 2 + i] ^= 0xFF
    path.write_bytes(bytes(raw))


# --- 1 + 3: damaged newest steps -------------------------------------------------------------
@pytest.mark.slow
def test_damaged_steps_are_moved_aside_and_the_run_finishes_bit_identical(good, tmp_path, caplog):
    """Step 6 has 16 flipped bytes in a state data file (silent before: rc 0, other EMA), step 4
    lost state/_METADATA (before: fallback, then StepAlreadyExistsError at step 4, forever)."""
    _, _, expected = good
    cfg, ckpt_dir = _copy(good, tmp_path)
    _flip_16_bytes(_data_file(ckpt_dir / "6"))
    (ckpt_dir / "4" / "state" / "_METADATA").unlink()
    with caplog.at_level(logging.WARNING):
        result = trainer.train(cfg, T.make_data)
    assert result.step == 6
    assert T.params_np(result.state).keys() == expected.keys()
    for k, v in T.params_np(result.state).items():
        assert np.array_equal(v, expected[k]), k
    for step, reason in ((6, "does not match its SHA-256"), (4, "missing, e.g. state/_METADATA")):
        (moved,) = ckpt_dir.glob(f"{step}.corrupt-*")
        assert f"checkpoint step {step} under" in caplog.text and reason in caplog.text
        assert f"Moved it to {moved} (kept, not deleted)" in caplog.text
        assert (moved / "state").is_dir()  # kept whole
    ckpt = checkpoint.Checkpointer(str(ckpt_dir))
    assert ckpt.all_steps() == [2, 4, 6]  # written again, no StepAlreadyExistsError
    assert all(integrity.verify(str(ckpt_dir / str(s))) is None for s in (2, 4, 6))
    ckpt.close()


def _truncate(d: Path):
    f = _data_file(d)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return "does not match"


def _overwrite(d: Path):
    (d / "state" / "manifest.ocdbt").write_bytes(b"garbage")
    return "state/manifest.ocdbt does not match"


def _delete_metadata(d: Path):
    (d / "state" / "_METADATA").unlink()
    return "missing, e.g. state/_METADATA"


def _garbage_data_json(d: Path):
    (d / "data" / "process_0-of-1.json").write_bytes(b"\xff\xfe not json \x80")
    return "data/process_0-of-1.json does not match"


def _extra_file(d: Path):
    (d / "state" / "stray").write_text("x")
    return "appeared after it was written, e.g. state/stray"


def _no_record(d: Path):
    (d / integrity.RECORD).unlink()
    return "no SHA256SUMS record (its save did not finish"


@pytest.mark.parametrize(
    "damage", [_truncate, _overwrite, _delete_metadata, _garbage_data_json, _extra_file, _no_record]
)
def test_every_kind_of_damage_fails_verification(good, tmp_path, damage):
    cfg, _, _ = good
    step_dir = tmp_path / "6"
    shutil.copytree(Path(cfg.workdir) / "checkpoints" / "6", step_dir)
    assert integrity.verify(str(step_dir)) is None
    reason = damage(step_dir)
    assert reason in integrity.verify(str(step_dir))


# --- 2: data-iterator state --------------------------------------------------------------------
def test_garbage_data_iterator_state_is_moved_aside_even_with_a_matching_record(
    good, tmp_path, caplog
):
    """The record is rewritten after the damage, so the restore itself must catch it (before:
    a UnicodeDecodeError traceback from outside the fallback)."""
    _, result, _ = good
    _, ckpt_dir = _copy(good, tmp_path)
    (ckpt_dir / "6" / "data" / "process_0-of-1.json").write_bytes(b"\xff\xfe not json \x80")
    (ckpt_dir / "6" / integrity.RECORD).unlink()
    integrity.write_record(str(ckpt_dir / "6"))
    ckpt = checkpoint.Checkpointer(str(ckpt_dir))
    with caplog.at_level(logging.WARNING):
        step, state = ckpt.restore(_abstract(result.state), T.make_data(0, 1, 8))
    ckpt.close()
    assert step == 4 and int(state["step"]) == 4
    assert "checkpoint step 6 under" in caplog.text and "Decode" in caplog.text
    assert len(list(ckpt_dir.glob("6.corrupt-*"))) == 1


def test_readers_skip_damaged_steps_without_moving_them(good, tmp_path, caplog):
    """move_aside=False (sampling / evaluation): a damaged step is skipped and left in place;
    a host-NumPy target is checked finite with NumPy."""
    _, result, _ = good
    _, ckpt_dir = _copy(good, tmp_path)
    _flip_16_bytes(_data_file(ckpt_dir / "6"))
    host = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), result.state)
    ckpt = checkpoint.Checkpointer(str(ckpt_dir))
    with caplog.at_level(logging.WARNING):
        step, state = ckpt.restore(host, move_aside=False)
    ckpt.close()
    assert step == 4 and all(isinstance(x, np.ndarray) for x in jax.tree.leaves(state))
    assert "checkpoint step 6 under" in caplog.text and "(left in place)" in caplog.text
    assert (ckpt_dir / "6").is_dir() and not list(ckpt_dir.glob("6.corrupt-*"))


def test_no_usable_checkpoint_is_an_error_every_time_not_a_fresh_start(good, tmp_path):
    _, result, _ = good
    _, ckpt_dir = _copy(good, tmp_path)
    for s in (2, 4, 6):
        (ckpt_dir / str(s) / integrity.RECORD).unlink()
    ckpt = checkpoint.Checkpointer(str(ckpt_dir))
    with pytest.raises(CheckpointError, match=r"No usable checkpoint") as info:
        ckpt.restore(_abstract(result.state))
    for s in (6, 4, 2):
        assert f"step {s}: it has no SHA256SUMS record" in str(info.value)
    # A second attempt does not start from scratch over the moved-aside steps either.
    with pytest.raises(CheckpointError, match=r"moved aside \(now or by an earlier run\)"):
        ckpt.restore(_abstract(result.state))
    ckpt.require_empty()  # checkpoint.resume=False may start a new run here
    ckpt.close()
    with pytest.raises(CheckpointError, match=r"resume is False but .* holds checkpoints"):
        checkpoint.Checkpointer(str(Path(good[0].workdir) / "checkpoints")).require_empty()


# --- 4: unwritable or full directory ------------------------------------------------------------
def test_unwritable_or_full_checkpoint_dir_is_an_error_before_compiling(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg = T.tiny_config(str(tmp_path / "run"), **{"checkpoint.dir": str(blocker / "ckpt")})
    with pytest.raises(WorkdirError, match=r"is not writable: .*Nothing was trained"):
        trainer.train(cfg, T.make_data)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # the logger comes after compiling
    with pytest.raises(WorkdirError, match=r"checkpoint directory .* is not writable: .*Not a"):
        workdir.check_writable(str(blocker / "ckpt"))
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(WorkdirError, match=r"free, but one checkpoint .* needs about"):
        workdir.check_writable(str(tmp_path / "ok"), needed_bytes=free + 2**40)
    workdir.check_writable(str(tmp_path / "ok"), needed_bytes=1)
    assert os.listdir(tmp_path / "ok") == []  # the probe is removed


# --- 5: non-finite state ------------------------------------------------------------------------
@pytest.mark.slow
def test_huge_learning_rate_skips_updates_and_the_error_is_true(tmp_path):
    """lr = 1e39: the loss and gradient of step 1 are finite, the updated parameters are not.
    Every such update is skipped; every checkpoint is finite; the error names the newest."""
    cfg = T.tiny_config(
        str(tmp_path),
        **{"optimizer.lr": 1e39, "optimizer.warmup_steps": 0, "train.max_nonfinite": 3},
    )
    with pytest.raises(NonFiniteError) as info:
        trainer.train(cfg, T.make_data)
    msg = str(info.value)
    assert "3 consecutive steps had a non-finite loss, gradient or updated state" in msg
    assert "newest checkpoint, step 2 under" in msg and "verified finite" in msg
    assert "holds good parameters" not in msg
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    import orbax.checkpoint as ocp

    saved = ocp.PyTreeCheckpointer().restore(tmp_path / "checkpoints" / "2" / "state")
    leaves = jax.tree.leaves(saved)
    assert all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.inexact))
    assert int(saved["guard"]["skipped"]) == 2  # both updates before step 2 were skipped


def test_within_half_range_is_the_in_step_bound():
    from nnx_train.step import within_half_range

    big = float(np.finfo(np.float32).max) / 2
    assert bool(within_half_range({"a": jnp.array([1.0, -big]), "i": jnp.array([7])}))
    for bad in (2 * big * 0.75, float("inf"), float("nan")):
        assert not bool(within_half_range({"a": jnp.array([1.0, bad])})), bad


def test_nonfinite_state_is_never_written_and_never_restored(tmp_path, caplog):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    good_state = {"w": jnp.arange(4.0), "n": jnp.zeros((), jnp.int32)}
    bad_state = {"w": jnp.array([0.0, jnp.nan, 1.0, jnp.inf]), "n": jnp.zeros((), jnp.int32)}
    ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(2, good_state)
    with pytest.raises(NonFiniteError, match=r"step 4 holds non-finite values; it was not saved"):
        ckpt.save(4, bad_state)
    assert ckpt.all_steps() == [2]
    # A non-finite checkpoint from elsewhere (written around the guard) is moved aside.
    import orbax.checkpoint as ocp

    ckpt.manager.save(6, args=ocp.args.Composite(state=ocp.args.PyTreeSave(bad_state)))
    integrity.write_record(str(tmp_path / "6"))
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                            good_state)  # fmt: skip
    with caplog.at_level(logging.WARNING):
        step, state = ckpt.restore(abstract)
    ckpt.close()
    assert step == 2 and np.array_equal(state["w"], good_state["w"])
    assert "step 6" in caplog.text and "non-finite values" in caplog.text


# --- 6: run lock ------------------------------------------------------------------------------
HOLD = (
    "import sys; from nnx_train.workdir import RunLock; lock = RunLock(sys.argv[1]); "
    "print('locked', flush=True); sys.stdin.read()"
)


def _holder(path: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stdout.readline() == "locked\n"  # blocks until the lock is taken (or it died)
    return p


@pytest.mark.slow
def test_second_trainer_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    holder = _holder(run)
    with pytest.raises(RunLockError) as info:
        trainer.train(T.tiny_config(str(run)), T.make_data)
    msg = str(info.value)
    assert f"pid {holder.pid}, started " in msg and f"host {os.uname().nodename}" in msg
    assert "Wait for it to finish, stop it, or use another workdir" in msg
    assert not (run / "checkpoints").exists()
    holder.communicate("")  # a clean exit empties the lock: no warning for the next one
    # A checkpoint directory outside the workdir is locked too.
    shared = tmp_path / "shared_checkpoints"
    holder = _holder(shared)
    cfg = T.tiny_config(str(tmp_path / "other"), **{"checkpoint.dir": str(shared)})
    with pytest.raises(RunLockError, match=f"Another trainer is using {shared}: host"):
        trainer.train(cfg, T.make_data)
    holder.communicate("")
    with caplog.at_level(logging.WARNING):
        workdir.RunLock(str(run)).release()
    assert "taking over" not in caplog.text
    holder = _holder(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with caplog.at_level(logging.WARNING):
        lock = workdir.RunLock(str(run))
    assert "left by a trainer that is no longer running (host" in caplog.text
    assert f"pid {holder.pid}," in caplog.text
    lock.release()


# --- 7: failed asynchronous save ---------------------------------------------------------------
@pytest.mark.slow
def test_failed_async_save_stops_the_run_at_the_next_step(tmp_path):
    """From step 3 on no file may grow (EFBIG, a full disk): the async save of step 4 fails and
    the run stops after step 5, not at the next save or after a 300 s hang."""
    cfg = T.tiny_config(str(tmp_path), **{"total_steps": 12, "log.every_steps": 100})
    proc = T.popen([sys.executable, str(Path(T.__file__)), cfg.to_json(), str(tmp_path / "o.npz"),
                    "fsize", "3"])  # fmt: skip
    _, (err,) = T.wait_for([proc])
    assert proc.returncode == 1, err[-3000:]
    assert "CheckpointError: Saving checkpoint step 4 under" in err, err[-3000:]
    assert "failed (noticed after step 5)" in err and "File too large" in err
    assert "earlier checkpoints (steps [2]) are intact" in err
    assert "step 6" not in err and "TimeoutError" not in err
    ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
    assert ckpt.all_steps() == [2] and integrity.verify(str(tmp_path / "checkpoints" / "2")) is None
    ckpt.close()


def test_save_failing_in_its_synchronous_part_is_an_immediate_clear_error(tmp_path):
    """The step directory cannot be created (the checkpoint directory became a file): the save
    raises at once (orbax creating directories in a background thread made this a 300 s
    TimeoutError); the checkpointer closes without a second error."""
    directory = tmp_path / "ckpt"
    ckpt = checkpoint.Checkpointer(str(directory))
    ckpt.save(1, {"w": jnp.ones(3)})
    ckpt.wait()
    shutil.move(directory, tmp_path / "moved")
    directory.write_text("now a file")
    with pytest.raises(CheckpointError, match=r"Saving checkpoint step 2 under .* failed: Not"):
        ckpt.save(2, {"w": jnp.ones(3)})
    ckpt.close()
    assert integrity.verify(str(tmp_path / "moved" / "1")) is None
