"""Helpers for benchmarks on simulated CPU devices (not a benchmark itself: `run.py` skips
names starting with "_").

- `run_worker(script, devices, args)`: run `script --worker ARGS` in a subprocess with
  `--xla_force_host_platform_device_count=devices` set before jax is imported; returns the JSON
  object the worker printed last.
- `save(name, result)`: add the date, jax version, device and core count, write
  `bench/results/<name>.json`, return the result.
"""

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys


def run_worker(script: str, devices: int, args: list[str]) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, script, "--worker", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"worker on {devices} devices failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def save(name: str, result: dict) -> dict:
    import jax

    result = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "device": "simulated CPU devices (xla_force_host_platform_device_count) on "
        + (platform.processor() or platform.machine()),
        "cpu_count": os.cpu_count(),
        **result,
    }
    path = pathlib.Path(__file__).parent / "results" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result
