"""Checkpoint integrity: a SHA-256 record of every file of a step, written last, verified first.

    record   {step}/SHA256SUMS   "<sha256 hex>  <path relative to the step>" per file, sorted
             (the `sha256sum` format: `cd {step} && sha256sum -c SHA256SUMS` checks it by hand)
    written  by the checkpoint writer after every item of the step is on disk and before orbax
             commits the step (renames `{step}.orbax-checkpoint-tmp` to `{step}`), so a step
             without a record never finished saving
    checked  before a step is restored: every recorded file must exist with the recorded hash,
             and no other file may have appeared (orbax's own `_CHECKPOINT_METADATA` and
             `commit_success.txt` at the top of the step, rewritten at commit, are not recorded)

A step that fails is `move_aside`d to `{step}.corrupt-{UTC time}` (kept, never deleted; orbax
does not list it as a step). The hash is of the bytes on disk after the write, so it catches
anything that happens to them later (truncation, overwrites, bit flips, partial copies), not a
write that went wrong before the bytes reached the file.
"""

import concurrent.futures
import datetime
import hashlib
import os
import pathlib
from typing import Any

from nnx_train import fileio

RECORD = "SHA256SUMS"
UNRECORDED = frozenset({RECORD, "_CHECKPOINT_METADATA", "commit_success.txt"})  # top level only
_CHUNK = 8 << 20


def _files(step_dir: Any) -> dict[str, Any]:
    """{relative path: path} of every file under `step_dir` except the top-level UNRECORDED
    (os.walk locally; etils' walk on gs://, where a recursive glob is not supported)."""
    if isinstance(step_dir, pathlib.PurePath):
        walk = ((pathlib.Path(d), _, names) for d, _, names in os.walk(step_dir))
    else:
        walk = step_dir.walk()
    out = {}
    for directory, _, names in walk:
        for name in names:
            p = directory / name
            rel = p.relative_to(step_dir).as_posix()
            if rel not in UNRECORDED:
                out[rel] = p
    return out


def sha256(path: Any) -> tuple[str, int]:
    """(hex digest, bytes read) of one file."""
    h, n = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _hash_all(files: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, bytes)}, files hashed in parallel threads (hashlib and file
    reads release the GIL; remote stores gain the most)."""
    workers = min(32, (os.cpu_count() or 1) + 4, max(len(files), 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return dict(zip(files, pool.map(sha256, files.values()), strict=True))


def write_record(step_dir: str) -> int:
    """Hash every file of the step and write the record (via a temporary name, then a rename);
    returns the number of bytes hashed."""
    root = fileio.path(step_dir)
    hashed = _hash_all(_files(root))
    lines = [f"{hashed[rel][0]}  {rel}\n" for rel in sorted(hashed)]
    total = sum(n for _, n in hashed.values())
    tmp = root / (RECORD + ".tmp")
    tmp.write_text("".join(lines))
    tmp.rename(root / RECORD)
    return total


def verify(step_dir: str) -> str | None:
    """None if the step matches its record, else the reason it does not."""
    root = fileio.path(step_dir)
    record = root / RECORD
    if not record.exists():
        return (
            f"it has no {RECORD} record (its save did not finish, or it was written before "
            f"nnx-train recorded one)"
        )
    expected = {}
    for line in record.read_text().splitlines():
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            return f"its {RECORD} record is malformed (line {line[:80]!r})"
        expected[rel] = digest
    found = _files(root)
    missing = sorted(set(expected) - set(found))
    if missing:
        return f"{len(missing)} recorded file(s) are missing, e.g. {missing[0]}"
    extra = sorted(set(found) - set(expected))
    if extra:
        return f"{len(extra)} file(s) appeared after it was written, e.g. {extra[0]}"
    hashed = _hash_all(found)
    for rel in sorted(expected):
        digest = hashed[rel][0]
        if digest != expected[rel]:
            return (
                f"{rel} does not match its SHA-256 (recorded {expected[rel][:12]}…, found "
                f"{digest[:12]}…): the file was changed or damaged after it was written"
            )
    return None


def move_aside(step_dir: str) -> str:
    """Rename `step_dir` to `{step_dir}.corrupt-{UTC time}` and return the new path."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = f"{str(step_dir).rstrip('/')}.corrupt-{stamp}"
    fileio.path(step_dir).rename(target)
    return target
