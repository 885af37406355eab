"""Autoregressive video sampling: the KV-cached rollout vs the full-sequence noise matrix.

    uv run --frozen --no-sync python bench/autoregressive.py [--quick]

A tiny random causal VideoDiT (16×16×4 frames, patch 2: 64 tokens per frame, hidden 64, depth 2,
8 training frames) under `DiffusionForcing(SiTInterface)`; 8 frames with Euler-8 per frame.
Measured in one run (best of `repeats`, interleaved, after a warm-up call each):
  t_step    one jitted `network.step` through the interface (one frame, a full 7-frame cache),
  t_full    one jitted full-sequence forward of the 8 frames (`interface.pred`, t [B, F]),
  t_ar      `Autoregressive(Euler(8))`: 8·8 frame evaluations + 8 pushes, one program,
  t_matrix  `DiffusionForcingSampler(8, matrix="autoregressive")`: the same samples (tested to
            1e-5) from 64 full-sequence forwards, one program,
and the same two with classifier-free guidance (2B cache / 2B full forward). Ratios:
  ar_fused_ratio      t_ar / (NFE_ar · t_step)      (≤ 1: the scan adds nothing per evaluation;
                                                     < 1 as early frames see a shorter cache)
  matrix_fused_ratio  t_matrix / (rows · t_full)
  cache_speedup       t_matrix / t_ar               (what the KV cache buys)
Writes bench/results/autoregressive.json with the device, jax version and date.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import time

# Single-threaded XLA on CPU (as bench/samplers.py): steadier timings on a shared machine.
if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones import VideoDiT
from nnx_interfaces import DiffusionForcing, SiTInterface
from nnx_samplers import Autoregressive, ClassifierFreeGuidance, DiffusionForcingSampler, Euler

RESULTS = pathlib.Path(__file__).parent / "results" / "autoregressive.json"
FRAMES, STEPS, SIZE = 8, 8, 16


def _interleaved_best(fns: dict, repeats: int) -> dict:
    """Best (wall, process-CPU) time of each `fn()` over `repeats` interleaved rounds."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    wall = dict.fromkeys(fns, float("inf"))
    cpu = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn())
            wall[name] = min(wall[name], time.perf_counter() - w0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return {"wall": wall, "cpu": cpu}


def main(quick: bool = False) -> dict:
    repeats, batch = (3, 2) if quick else (6, 4)
    net = VideoDiT(input_size=SIZE, num_frames=FRAMES, patch_size=2, in_channels=4,
                   hidden_size=64, depth=2, num_heads=4, num_classes=10,
                   rngs=nnx.Rngs(0))  # fmt: skip
    model = DiffusionForcing(SiTInterface(net, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    x0 = jax.random.normal(jax.random.key(0), (batch, FRAMES, SIZE, SIZE, 4))
    y = jnp.arange(batch) % 10
    start, rows = time.perf_counter(), {}
    for name, guidance in (("plain", None), ("cfg", ClassifierFreeGuidance(2.0))):
        b = 2 * batch if guidance is not None else batch
        xb, yb = jnp.concatenate([x0] * (b // batch)), jnp.concatenate([y] * (b // batch))

        @jax.jit
        def step(state, x, cache, yb=yb):
            m = nnx.merge(graphdef, state)
            return m.frame_step(cache).pred(x, jnp.full((x.shape[0],), 0.7), y=yb)

        @jax.jit
        def full(state, x, yb=yb):
            m = nnx.merge(graphdef, state)
            return m.pred(x, jnp.full(x.shape[:2], 0.7), y=yb)

        cache = net.init_cache(b)._replace(pos=jnp.int32(FRAMES))  # a full window of context
        ar = Autoregressive(Euler(STEPS))
        matrix = DiffusionForcingSampler(STEPS, matrix="autoregressive")
        nfe_ar = ar.nfe(model, FRAMES)
        n_rows = matrix.levels(FRAMES).shape[0] - 1
        fns = {
            "step": lambda: [step(state, xb[:, 0], cache) for _ in range(nfe_ar)],
            "full": lambda: [full(state, xb) for _ in range(n_rows)],
            "ar": lambda: ar.sample(1, model, x0, y=y, guidance=guidance).x,
            "matrix": lambda: matrix.sample(1, model, x0, y=y, guidance=guidance).x,
        }
        best = _interleaved_best(fns, repeats)
        row = {"nfe_ar": nfe_ar, "matrix_rows": n_rows}
        for clock in ("wall", "cpu"):
            t = best[clock]
            t_step, t_full = t["step"] / nfe_ar, t["full"] / n_rows
            row[clock] = {
                "t_step_ms": 1e3 * t_step,
                "t_full_ms": 1e3 * t_full,
                "t_ar_s": t["ar"],
                "t_matrix_s": t["matrix"],
                "ar_fused_ratio": t["ar"] / (nfe_ar * t_step),
                "matrix_fused_ratio": t["matrix"] / (n_rows * t_full),
                "cache_speedup": t["matrix"] / t["ar"],
            }
            r = row[clock]
            print(
                f"{name:5s} {clock:4s} step {r['t_step_ms']:.2f} ms  full {r['t_full_ms']:.2f} ms"
                f"  AR {r['t_ar_s']:.3f} s (ratio {r['ar_fused_ratio']:.2f})  matrix "
                f"{r['t_matrix_s']:.3f} s (ratio {r['matrix_fused_ratio']:.2f})  cache speedup "
                f"{r['cache_speedup']:.2f}×"
            )
        rows[name] = row
    dev = jax.devices()[0]
    result = {
        "benchmark": "autoregressive",
        "metric": "AR rollout vs full-sequence autoregressive noise matrix (same samples): "
        "t_matrix / t_ar, and each / (evaluations × one jitted call)",
        "load_average_1_5_15": list(os.getloadavg()),
        "network": f"VideoDiT hidden 64 depth 2 heads 4 patch 2, x {batch}x{FRAMES}x{SIZE}x"
        f"{SIZE}x4, Euler-{STEPS} per frame",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "quick": quick,
        "repeats": repeats,
        "device": f"{dev.platform}: {dev.device_kind} (x{jax.device_count()})",
        "host": platform.node(),
        "jax_version": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cases": rows,
        "bench_seconds": time.perf_counter() - start,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, batch 2")
    main(parser.parse_args().quick)
