"""Sampler throughput: the fused sampler vs NFE × one jitted network call, next to a per-step
Python loop.

    uv run --frozen --no-sync python bench/samplers.py [--quick]

For Euler-32, Heun-32, Euler–Maruyama-250 (SiT interface) and MeanFlow-1 (one jump, MeanFlow
interface) on a tiny DiT, measures in one run (best of `repeats`, after a warm-up call):
  t_call   one jitted network evaluation (`interface.pred`, state passed as an argument),
  t_fused  the whole sampler: one jitted program, `lax.scan` over the steps (`Sampler.bind`),
  t_api    the same through `Sampler.sample` (adds the per-call `nnx.split` and grid building),
  t_loop   a Python loop over steps calling one jitted step function per step (the baseline).
t_call is timed as NFE back-to-back calls (so its dispatch overhead is amortized as in a
real loop), divided by NFE. Ratios are t / (NFE · t_call); the fused sampler must be ≤ 1.05. Writes
bench/results/samplers.json with the device, jax version and date.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import time

# Single-threaded XLA on CPU: on a shared machine, multi-threaded kernels make per-call timings
# swing with the other processes' load. (A benchmark script, so set before jax is imported.)
if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.dit import DiT
from nnx_interfaces.meanflow import MeanFlowInterface
from nnx_interfaces.sit import SiTInterface
from nnx_samplers import Euler, EulerMaruyama, Heun, Jump

RESULTS = pathlib.Path(__file__).parent / "results" / "samplers.json"
LIMIT = 1.05


def _interleaved_best(fns: dict, repeats: int) -> dict:
    """Best (wall, process-CPU) time of each `fn()` (blocking on its result) over `repeats`
    rounds, the functions interleaved within a round so that a load spike on a shared machine
    hits all of them alike; one warm-up call each (compilation) first."""
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


def _tiny_dit(use_r: bool, size: int) -> DiT:
    return DiT(
        input_size=size,
        patch_size=2,
        in_channels=4,
        hidden_size=128,
        depth=2,
        num_heads=4,
        num_classes=10,
        use_r=use_r,
        rngs=nnx.Rngs(0, time=1, noise=2),
    )


# --- one-step functions for the Python-loop baseline (each step is one jitted call) -------------
def _step_fns(graphdef, two_time: bool):
    def model(state):
        return nnx.merge(graphdef, state)

    @jax.jit
    def euler(state, x, t, t_next, y, key):
        tb = jnp.full((x.shape[0],), t)
        if two_time:
            v = model(state).pred(x, tb, jnp.full((x.shape[0],), t_next), y=y)
        else:
            v = model(state).pred(x, tb, y=y)
        return x + (t_next - t) * v

    @jax.jit
    def heun(state, x, t, t_next, y, key):
        m = model(state)
        b = x.shape[0]
        d = m.pred(x, jnp.full((b,), t), y=y)
        x_e = x + (t_next - t) * d
        return x + (t_next - t) * 0.5 * (d + m.pred(x_e, jnp.full((b,), t_next), y=y))

    @jax.jit
    def em(state, x, t, t_next, y, key):  # linear path: x̂ = x − t·v, s = −(x − (1 − t)·x̂)/t²
        v = model(state).pred(x, jnp.full((x.shape[0],), t), y=y)
        s = -(x - (1 - t) * (x - t * v)) / t**2
        h = t_next - t
        z = jax.random.normal(key, x.shape)
        return x + h * v + jnp.abs(h) * 0.5 * s + jnp.sqrt(jnp.abs(h)) * z

    return {"euler": euler, "heun": heun, "em": em}


def _loop(step, state, x, times, y, key):
    keys = jax.random.split(key, len(times) - 1)
    for i in range(len(times) - 1):
        x = step(state, x, times[i], times[i + 1], y, keys[i])
    return x


def main(quick: bool = False) -> dict:
    repeats, batch, size = (6, 4, 8) if quick else (10, 8, 16)
    x0 = jax.random.normal(jax.random.key(0), (batch, size, size, 4))
    y = jnp.arange(batch) % 10
    key = jax.random.key(1)
    sit = SiTInterface(_tiny_dit(False, size), "uniform", t_shift_base=None)
    mf = MeanFlowInterface(_tiny_dit(True, size), "uniform", t_shift_base=None)
    cases = [
        ("Euler-32", Euler(32), sit, "euler"),
        ("Heun-32", Heun(32), sit, "heun"),
        ("EM-250", EulerMaruyama(250, diffusion="constant", last_step_mean=False), sit, "em"),
        ("MeanFlow-1", Jump(1), mf, "euler"),
    ]
    start = time.perf_counter()
    rows = {}
    calls = {}  # one jitted network call per interface
    for name, sampler, interface, step_name in cases:
        graphdef, state = nnx.split(interface)
        two_time = bool(interface.two_time)
        if id(interface) not in calls:

            @jax.jit
            def call(state, x, t, graphdef=graphdef, two_time=two_time):
                m = nnx.merge(graphdef, state)
                return m.pred(x, t, t * 0.5, y=y) if two_time else m.pred(x, t, y=y)

            calls[id(interface)] = call
        call = calls[id(interface)]

        t_vec = jnp.full((batch,), 0.7)
        bound = sampler.bind(interface)
        step = _step_fns(graphdef, two_time)[step_name]
        times = [float(v) for v in bound.times]
        nfe = bound.nfe
        fns = {
            "call": lambda: [call(state, x0, t_vec) for _ in range(nfe)],  # NFE back-to-back
            "fused": lambda: bound(key, x0, y=y).x,
            "api": lambda: sampler.sample(key, interface, x0, y=y).x,
            "loop": lambda: _loop(step, state, x0, times, y, key),
        }
        if quick:  # `sample` runs the same compiled program as `bind`: skip it to save time
            del fns["api"]
        best = _interleaved_best(fns, repeats)
        row = {"nfe": nfe}
        for clock in ("wall", "cpu"):
            t = best[clock]
            per_call = t["call"] / nfe
            row[clock] = {
                "t_call_ms": 1e3 * per_call,
                "t_fused_ms": 1e3 * t["fused"],
                "fused_ratio": t["fused"] / (nfe * per_call),
                "sample_api_ratio": t["api"] / (nfe * per_call) if "api" in t else None,
                "python_loop_ratio": t["loop"] / (nfe * per_call),
            }
        row["ok_wall"] = bool(row["wall"]["fused_ratio"] <= LIMIT)
        row["ok_cpu"] = bool(row["cpu"]["fused_ratio"] <= LIMIT)
        rows[name] = row
        for clock in ("wall", "cpu"):
            r = row[clock]
            api = "" if r["sample_api_ratio"] is None else f"{r['sample_api_ratio']:.3f}"
            print(
                f"{name:11s} {clock:4s} NFE={nfe:4d}  call {r['t_call_ms']:7.3f} ms  fused "
                f"{r['fused_ratio']:.3f}  sample() {api:5s}  python loop "
                f"{r['python_loop_ratio']:.3f}"
            )
    dev = jax.devices()[0]
    result = {
        "benchmark": "samplers",
        "metric": "time / (NFE × one jitted network call); fused wall ratio must be <= 1.05",
        "clocks": "wall: perf_counter; cpu: process_time (all threads of this process), less "
        "sensitive to other processes on a shared machine",
        "load_average_1_5_15": list(os.getloadavg()),
        "network": f"DiT hidden 128 depth 2 heads 4 patch 2, x {batch}x{size}x{size}x4",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "quick": quick,
        "repeats": repeats,
        "device": f"{dev.platform}: {dev.device_kind} (x{jax.device_count()})",
        "host": platform.node(),
        "jax_version": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cases": rows,
        "all_ok_wall": all(r["ok_wall"] for r in rows.values()),
        "all_ok_cpu": all(r["ok_cpu"] for r in rows.values()),
        "bench_seconds": time.perf_counter() - start,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (< 2 minutes)")
    main(quick=parser.parse_args().quick)
