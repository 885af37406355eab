"""nnx-eval benchmark: Inception feature throughput on CPU, and flat host memory of streaming FID.

    uv run --frozen --no-sync python bench/eval.py [--quick]

1. Throughput: `inception_feature_fn` (uint8 → preprocessing → FID Inception-v3, random
   weights in the released layout) on a batch of 64 images at 299×299, images/s on CPU
   (best of `repeats` after a compile call). Run with JAX's default CPU device.
2. Memory: in a fresh subprocess per N, `generate` N samples (a cheap jitted sample_fn,
   64×64 images, batch 100) into `inception_accumulator`-shaped statistics (pool 2048,
   spatial 2023, IS logits 1008; the features come from a fixed random projection so that
   10k samples run in seconds; `keep=0`, i.e. no stored points) and compute FID + sFID + IS
   against a reference. Reports `ru_maxrss` (whole process, JAX runtime included) and the
   tracemalloc peak (Python + NumPy allocations) for each N. Streaming means both stay flat:
   `ratio_maxrss = maxrss(N_max) / maxrss(N_min)` should be ≈ 1, whereas keeping the features
   would add N · (2048 + 2023) · 8 bytes (311 MiB at N = 10k). Children run with one BLAS
   thread.

The machine's 1-minute load average is recorded: on a shared machine the throughput is a
lower bound.

Writes bench/results/eval.json with the device, jax version and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
import tracemalloc

RESULTS = pathlib.Path(__file__).parent / "results" / "eval.json"


def _random_inception(seed: int = 0):
    """An `InceptionV3FID` with random weights in the released layout (no checkpoint needed)."""
    import jax
    import numpy as np
    from flax import nnx

    from nnx_eval.inception_weights import _abstract_inception

    graphdef, abstract = _abstract_inception()
    rng = np.random.default_rng(seed)

    def fill(path, x):
        name = str(path[-1])
        if len(x.shape) >= 2:  # conv [kh, kw, in, out] / fc [in, out]: He init, O(1) activations
            fan_in = int(np.prod(x.shape[:-1]))
            return (rng.standard_normal(x.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        if "scale" in name or "var" in name:
            return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
        return (0.1 * rng.standard_normal(x.shape)).astype(np.float32)  # bias, mean

    return nnx.merge(graphdef, jax.tree.map_with_path(fill, abstract))


def throughput(batch: int = 64, repeats: int = 3) -> dict:
    import jax
    import numpy as np

    from nnx_eval.features import inception_feature_fn

    fn = inception_feature_fn(_random_inception())
    images = np.random.default_rng(0).integers(0, 256, (batch, 299, 299, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(images))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(images)  # returns host NumPy arrays: includes the device → host copy
        times.append(time.perf_counter() - t0)
    return {
        "batch": batch,
        "image_size": 299,
        "first_call_s": round(compile_s, 2),
        "best_batch_s": round(min(times), 3),
        "images_per_s": round(batch / min(times), 2),
        "repeats": repeats,
    }


def memory_child(n: int) -> dict:
    """Run in a subprocess: streaming FID/sFID/IS over n generated samples; report peaks.

    tracemalloc starts after the imports (it would slow them tenfold), so its peak counts the
    allocations of generation, accumulation and the metric computation.
    """
    import warnings

    import jax
    import jax.numpy as jnp
    import numpy as np

    from nnx_eval.accumulate import inception_accumulator, inception_metrics
    from nnx_eval.generate import generate
    from nnx_eval.stats import GaussianStats

    proj = np.random.default_rng(0).standard_normal((192, 2048 + 2023 + 1008)) / 14.0

    def features(images):  # 8×8 average pool → fixed random projection → three feature kinds
        x = np.asarray(images, np.float64).reshape(-1, 8, 8, 8, 8, 3).mean((2, 4)) / 255.0
        f = x.reshape(x.shape[0], -1) @ proj
        return {"pool": f[:, :2048], "spatial": f[:, 2048:4071], "logits_unbiased": f[:, 4071:]}

    def sample_fn(key, labels):
        return jnp.tanh(jax.random.normal(key, (labels.shape[0], 64, 64, 3)))

    tracemalloc.start()
    acc = inception_accumulator(features, num_samples=n, keep=0)
    acc.keep_key = None  # FID/sFID/IS only: nothing per-sample is stored
    generate(
        sample_fn,
        n,
        batch_size=100,
        seed=0,
        num_classes=1000,
        consumers=[acc],
        devices=jax.devices()[:1],
        progress=False,
    )
    ref = {
        "pool": GaussianStats(np.zeros(2048), np.eye(2048)),
        "spatial": GaussianStats(np.zeros(2023), np.eye(2023)),
    }
    with warnings.catch_warnings():  # N < D warning for the smallest N
        warnings.simplefilter("ignore")
        metrics = inception_metrics(acc, ref)
    _, peak = tracemalloc.get_traced_memory()
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "n": n,
        "maxrss_mb": round(maxrss_kb / 1024, 1),
        "tracemalloc_peak_mb": round(peak / 2**20, 1),
        "fid": round(metrics["fid"], 3),
        "inception_score": round(metrics["inception_score"], 4),
    }


def memory(ns: list[int]) -> dict:
    rows = []
    for n in ns:
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    return {
        "rows": rows,
        "ratio_maxrss": round(rows[-1]["maxrss_mb"] / rows[0]["maxrss_mb"], 3),
        "ratio_tracemalloc_peak": round(
            rows[-1]["tracemalloc_peak_mb"] / rows[0]["tracemalloc_peak_mb"], 3
        ),
        "features_if_kept_mb_at_max_n": round(ns[-1] * (2048 + 2023) * 8 / 2**20, 1),
    }


def main(quick: bool = False) -> dict:
    import jax

    t0 = time.perf_counter()
    ns = [1000, 10_000] if quick else [1000, 2000, 5000, 10_000]
    result = {
        "benchmark": "eval",
        "quick": quick,
        "memory": memory(ns),
        "inception_throughput_cpu": throughput(repeats=2 if quick else 5),
    }
    dev = jax.devices()[0]
    result |= {
        "device": f"{dev.platform}: {dev.device_kind} (x{jax.device_count()})",
        "host": platform.node(),
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N ∈ {1k, 10k}, 2 repeats")
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
    else:
        print(json.dumps(main(args.quick), indent=2))
