"""Guards on the workdir before a run starts: one trainer per workdir, and room to write.

Run lock: `{workdir}/RUN.lock` holds `{"host", "pid", "started", "argv"}` of the trainer using the
workdir and is `flock`ed for the whole run. The kernel drops an flock when its process dies, so a
lock left by a crashed or SIGKILLed trainer is free: the next trainer takes it over and logs a
warning naming the dead holder. A live holder makes the second trainer stop before it compiles
anything, with an error naming host, pid and start time. The file is emptied (not deleted, so
that no one can lock a stale inode) when the run ends. A checkpoint directory outside the
workdir gets its own `RUN.lock` (orbax ignores the file: it is not a step).

    local disk / NFS   flock (NFS clients forward it to the server's lock manager)
    gs://              not locked: object stores have no flock. The usual answer is a lease
                       object created with the precondition if-generation-match=0 (only one
                       creator wins), renewed by a heartbeat every ~30 s and considered stale
                       once its heartbeat is older than a few intervals. This module logs a
                       warning instead; run one trainer per gs:// workdir.

Writable check: a probe file is written, synced and removed in the checkpoint directory, and
on local disks the free space must hold at least one checkpoint (the train state's bytes).
"""

import atexit
import datetime
import json
import logging
import os
import shutil
import socket
import sys
from typing import Any

import jax
import numpy as np

from nnx_train import fileio
from nnx_train.errors import RunLockError, WorkdirError

log = logging.getLogger(__name__)

LOCK_NAME = "RUN.lock"
_HELD: dict[str, "RunLock"] = {}  # locks held by this process, by lock-file path


class RunLock:
    """The flock on `{workdir}/RUN.lock` (a no-op for remote paths); `release()` ends it."""

    def __init__(self, workdir: str):
        self.path = fileio.join(workdir, LOCK_NAME)
        self._fd: int | None = None
        if "://" in workdir:
            log.warning(
                "the run lock is not supported on %s (no flock on object stores): make sure no "
                "other trainer uses this workdir (see the nnx-train README, 'run lock')",
                workdir,
            )
            return
        import fcntl

        previous = _HELD.pop(self.path, None)
        if previous is not None:  # an earlier train() in this process that failed in start-up
            log.warning("taking over the run lock %s from an earlier train() call of this "
                        "process that did not release it", self.path)  # fmt: skip
            previous.release()
        try:
            fileio.makedirs(workdir)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise WorkdirError(
                f"The directory {workdir} is not writable: cannot create the run lock "
                f"{self.path} ({err}). Set config.workdir / config.checkpoint.dir to a writable "
                f"directory. Nothing was trained."
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunLockError(
                f"Another trainer is using {workdir}: {_describe(holder)} (lock file "
                f"{self.path}). Two trainers on one workdir overwrite each other's checkpoints. "
                f"Wait for it to finish, stop it, or use another workdir. The lock is released "
                f"when that process exits, even if it crashes or is killed."
            ) from None
        holder = _read(fd)
        if holder:
            log.warning(
                "taking over the run lock %s left by a trainer that is no longer running (%s)",
                self.path, _describe(holder),
            )  # fmt: skip
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        _HELD[self.path] = self
        atexit.register(self.release)

    def release(self) -> None:
        """Empty the lock file and drop the flock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if _HELD.get(self.path) is self:
            del _HELD[self.path]
        atexit.unregister(self.release)
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock


class RunLocks(list):
    """The run locks of one run (workdir, and a checkpoint directory outside it)."""

    def release(self) -> None:
        for lock in reversed(self):
            lock.release()


def acquire_run_lock(workdir: str, checkpoint_dir: str | None = None) -> RunLocks:
    """Process 0 locks `workdir`, and `checkpoint_dir` too if it lies outside the workdir (two
    runs with different workdirs must not share one). With several processes all of them learn
    the outcome (one tiny broadcast), so that every process stops when a lock is held elsewhere."""
    dirs = [workdir]
    if checkpoint_dir and not _inside(checkpoint_dir, workdir):
        dirs.append(checkpoint_dir)
    locks, error = RunLocks(), None
    if jax.process_index() == 0:
        try:
            for d in dirs:
                locks.append(RunLock(d))
        except WorkdirError as err:
            locks.release()
            error = err
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        ok = multihost_utils.broadcast_one_to_all(np.asarray(error is None))
        if not bool(ok) and error is None:
            raise RunLockError(f"Process 0 could not take the run lock of {workdir}; see its log.")
    if error is not None:
        raise error
    return locks


def _inside(path: str, parent: str) -> bool:
    if "://" in path or "://" in parent:
        return path.rstrip("/").startswith(parent.rstrip("/") + "/")
    path, parent = os.path.abspath(path), os.path.abspath(parent)
    return os.path.commonpath([path, parent]) == parent


def check_writable(directory: str, needed_bytes: int = 0) -> None:
    """Raise `WorkdirError` unless `directory` can be created and written, and (local disks) has
    at least `needed_bytes` free (the size of one checkpoint)."""
    probe = fileio.join(directory, f".write-probe-{socket.gethostname()}-{os.getpid()}")
    try:
        fileio.makedirs(directory)
        if "://" in directory:
            fileio.path(probe).write_bytes(b"nnx-train write probe\n")
            fileio.path(probe).unlink()
            return
        with open(probe, "wb") as f:
            f.write(b"nnx-train write probe\n")
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
        free = shutil.disk_usage(directory).free
    except OSError as err:
        raise WorkdirError(
            f"The checkpoint directory {directory} is not writable: {err}. Fix its permissions "
            f"or free space, or set config.checkpoint.dir (or config.workdir) to a writable "
            f"directory. Nothing was trained."
        ) from err
    if free < needed_bytes:
        raise WorkdirError(
            f"The checkpoint directory {directory} has {_size(free)} free, but one checkpoint "
            f"of this train state needs about {_size(needed_bytes)}. Free space or set "
            f"config.checkpoint.dir to a larger disk. Nothing was trained."
        )


def _read(fd: int) -> dict[str, Any] | None:
    raw = os.pread(fd, 1 << 16, 0)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"unreadable": raw[:80].decode(errors="replace")}


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "holder unknown (empty lock file)"
    if "unreadable" in holder:
        return f"unreadable lock file content {holder['unreadable']!r}"
    cmd = " ".join(holder.get("argv", []))[:200]
    return (
        f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')} "
        f"UTC, command {cmd!r}"
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
