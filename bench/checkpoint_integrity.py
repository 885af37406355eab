"""Cost of checkpoint integrity relative to the checkpoint itself, on this machine's disk.

    uv run --frozen --no-sync python bench/checkpoint_integrity.py [--quick]

A train-state-like pytree (float32 arrays of 1–16 MiB) of each size is saved with
`nnx_train.checkpoint.Checkpointer` (asynchronous, as the trainer does) and restored, several
times, in one process. Reported per size, as medians:
  save_s       save() until the step is committed (wait()), SHA-256 record included
  record_s     integrity.write_record alone on the same step (hashing every file + writing it)
  restore_s    restore() of the step, integrity.verify included
  verify_s     integrity.verify alone
  finite_s     the all-finite check save() runs before writing (one jitted reduction + sync)
  record_ratio = record_s / (save_s − record_s), verify_ratio = verify_s / (restore_s − verify_s):
               the extra time integrity adds to a save / restore without it.
The record is written in the background thread, so it delays when the step is committed, not
the training step (the trainer's step time does not include it). Writes
bench/results/checkpoint_integrity.json with the device, jax version and date.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import statistics
import tempfile
import time


def case(mib: int, repeats: int, root: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nnx_train import checkpoint, integrity
    from nnx_train.state import all_finite

    n_leaves = max(1, mib // 4)
    per_leaf = mib * (1 << 20) // 4 // n_leaves
    rng = np.random.default_rng(0)
    state = {f"w{i}": jnp.asarray(rng.normal(size=per_leaf), jnp.float32) for i in range(n_leaves)}
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state
    )
    finite = jax.jit(all_finite)
    bool(finite(state))  # compile
    rows: dict[str, list[float]] = {k: [] for k in ("save", "record", "restore", "verify", "fin")}
    for _ in range(repeats):
        d = tempfile.mkdtemp(dir=root)
        ckpt = checkpoint.Checkpointer(d, keep_last=2)
        t = time.perf_counter()
        ckpt.save(1, state)
        ckpt.wait()
        rows["save"].append(time.perf_counter() - t)
        step_dir = os.path.join(d, "1")
        os.remove(os.path.join(step_dir, integrity.RECORD))
        t = time.perf_counter()
        integrity.write_record(step_dir)
        rows["record"].append(time.perf_counter() - t)
        t = time.perf_counter()
        _, restored = ckpt.restore(abstract)
        jax.block_until_ready(restored)
        rows["restore"].append(time.perf_counter() - t)
        t = time.perf_counter()
        assert integrity.verify(step_dir) is None
        rows["verify"].append(time.perf_counter() - t)
        t = time.perf_counter()
        bool(finite(state))
        rows["fin"].append(time.perf_counter() - t)
        ckpt.close()
        shutil.rmtree(d)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "state_mib": mib,
        "save_s": med["save"],
        "record_s": med["record"],
        "restore_s": med["restore"],
        "verify_s": med["verify"],
        "finite_s": med["fin"],
        "record_ratio": med["record"] / max(med["save"] - med["record"], 1e-9),
        "verify_ratio": med["verify"] / max(med["restore"] - med["verify"], 1e-9),
    }


def main(quick: bool = False) -> dict:
    import jax

    sizes, repeats = ((16, 64), 3) if quick else ((16, 64, 256), 5)
    root = tempfile.mkdtemp(prefix="nnx_ckpt_bench_")
    try:
        rows = [case(mib, repeats, root) for mib in sizes]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "benchmark": "checkpoint_integrity",
        "quick": quick,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "device": f"local disk under {tempfile.gettempdir()}, "
        + (platform.processor() or platform.machine()),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    path = pathlib.Path(__file__).parent / "results" / "checkpoint_integrity.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for r in main(args.quick)["rows"]:
        print(
            f"{r['state_mib']} MiB: save {r['save_s']:.3f} s (record {r['record_s']:.3f} s, "
            f"+{100 * r['record_ratio']:.0f}%), restore {r['restore_s']:.3f} s (verify "
            f"{r['verify_s']:.3f} s, +{100 * r['verify_ratio']:.0f}%), finite check "
            f"{r['finite_s'] * 1e3:.1f} ms"
        )
