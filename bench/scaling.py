"""FSDP scaling on 1 / 2 / 4 / 8 simulated CPU devices: per-device state bytes and step time.

    uv run --frozen --no-sync python bench/scaling.py [--quick]

Each device count runs in its own subprocess with `--xla_force_host_platform_device_count=N`
set before jax is imported. The worker trains an MLP through `nnx_train.train` with the mesh
(data=1, fsdp=N) and sharding.strategy="fsdp" (min_size 1: every array with an axis divisible by N
is sharded), then reports
  bytes_per_device  params + optimizer state held by device 0 (sum of its shards),
  step_s            seconds per step over the last logging window (compiled step, no checkpoints).
Ratios are against N = 1: bytes_ratio should be ≈ 1/N (replicated small arrays and the step
counter add a little); step_ratio on simulated CPU devices measures partitioning overhead only
(all "devices" share the same cores), not speed-up. Writes bench/results/scaling.json with the
device, jax version and date.
"""

import argparse
import json
import tempfile

import _simulated

COUNTS = (1, 2, 4, 8)


def worker(n: int, quick: bool) -> dict:
    import jax
    import numpy as np

    from nnx_train import config as config_lib
    from nnx_train import trainer

    width, depth, steps = (128, 2, 12) if quick else (512, 4, 40)
    c = config_lib.default_config()
    c.workdir = tempfile.mkdtemp(prefix="nnx_train_scaling_")
    c.total_steps = steps
    c.data.global_batch_size = 64
    c.data.shape = (16,)
    c.model.data_shape = (16,)
    c.model.width = width
    c.model.depth = depth
    c.ema.decays = ()
    c.mesh.data, c.mesh.fsdp = 1, n
    c.sharding.min_size = 1
    c.checkpoint.every_steps = 0
    c.log.every_steps = steps // 2
    c.log.progress_bar = False
    data = np.random.default_rng(0).normal(size=(1024, 16)).astype(np.float32)

    def make_data(process_index, process_count, local_batch):
        i = 0
        while True:
            yield {"x": data[(i * local_batch) % 1024 :][:local_batch]}
            i += 1

    result = trainer.train(c, make_data)
    dev0 = jax.devices()[0]
    held = 0
    total = 0
    for leaf in jax.tree.leaves((result.state["params"], result.state["opt_state"])):
        total += leaf.size * leaf.dtype.itemsize
        for shard in leaf.addressable_shards:
            if shard.device == dev0:
                held += shard.data.size * shard.data.dtype.itemsize
    return {
        "devices": n,
        "bytes_per_device": held,
        "bytes_total": total,
        "step_s": 1.0 / result.metrics["steps_per_s"],
        "params": sum(x.size for x in jax.tree.leaves(result.state["params"])),
    }


def main(quick: bool = False) -> dict:
    rows = [
        _simulated.run_worker(__file__, n, [str(n)] + (["--quick"] if quick else []))
        for n in COUNTS
    ]
    base = rows[0]
    for r in rows:
        r["bytes_ratio"] = r["bytes_per_device"] / base["bytes_per_device"]
        r["ideal_bytes_ratio"] = 1.0 / r["devices"]
        r["step_ratio"] = r["step_s"] / base["step_s"]
    return _simulated.save("scaling", {"quick": quick, "rows": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.quick)))
    else:
        res = main(args.quick)
        for r in res["rows"]:
            print(
                f"N={r['devices']}: {r['bytes_per_device'] / 1e6:.3f} MB/device "
                f"(ratio {r['bytes_ratio']:.3f}, ideal {r['ideal_bytes_ratio']:.3f}), "
                f"step {r['step_s'] * 1e3:.1f} ms (ratio {r['step_ratio']:.2f})"
            )
