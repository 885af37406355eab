"""Shared pytest set-up for every suite: 8 simulated CPU devices, set before jax is imported."""

import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("WANDB_MODE", "disabled")

# Every ```python block in the Markdown files under the test paths runs as a test (README
# examples, docs pages, the tutorial); see tools/markdown_examples.py.
sys.path.insert(0, str(pathlib.Path(__file__).parent / "tools"))
pytest_plugins = ["markdown_examples"]
