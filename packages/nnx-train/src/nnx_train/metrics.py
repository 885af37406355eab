"""Metrics: a JSONL file (always), wandb (online / offline / disabled), TensorBoard (optional,
tensorboardX event files under `{workdir}/tensorboard`), a tqdm bar, MFU.

Only process 0 writes. wandb is imported lazily and never needs an API key unless mode="online";
the WANDB_MODE environment variable overrides the configured mode.

Resumes: a run that died after logging step M but whose last checkpoint is step N < M resumes from
N and logs steps N+1… again. Every record carries `segment` (0 for the first start, +1 per
resume); `read_metrics` drops the records of the abandoned part of an earlier segment (steps
after the step the next segment resumed from), so plots never interleave two histories.

MFU = (FLOPs of one compiled step per device × steps/s) / (peak FLOP/s per device), with FLOPs
from the compiled step's `cost_analysis()` and the peak either given or looked up by device kind.
"""

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import tqdm

from nnx_train import fileio

# Dense bf16 peak FLOP/s per device, by `jax.devices()[0].device_kind` prefix.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA B200": 2250e12,
}


def detect_peak_flops(device: Any = None) -> float | None:
    """Peak FLOP/s of one device from its kind, or None if unknown (e.g. CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    for prefix in sorted(PEAK_FLOPS, key=len, reverse=True):
        if kind.startswith(prefix):
            return PEAK_FLOPS[prefix]
    return None


def compiled_flops(compiled: Any) -> float | None:
    """FLOPs of one call of a compiled (per-device) program, from XLA's cost analysis."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    flops = float(cost["flops"])
    return flops if flops > 0 else None


class MetricsLogger:
    """Writes metric dicts to `{workdir}/metrics.jsonl` and wandb; shows a progress bar.

    Args:
      workdir: run directory (local or gs://).
      total_steps, start_step: for the progress bar and its ETA.
      wandb_mode: "online" | "offline" | "disabled" (WANDB_MODE overrides).
      config: stored as the wandb run config.
      enabled: False on processes other than 0.
    """

    def __init__(
        self,
        workdir: str,
        *,
        total_steps: int,
        start_step: int = 0,
        wandb_mode: str = "disabled",
        wandb_project: str = "nnx-diffusion",
        wandb_name: str = "",
        config: Mapping | None = None,
        progress_bar: bool = True,
        tensorboard: bool = False,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.path = fileio.join(workdir, "metrics.jsonl")
        self._wandb = None
        self._bar = None
        self._tb = None
        self.segment = 0
        if not enabled:
            return
        fileio.makedirs(workdir)
        if fileio.path(self.path).exists():
            text = fileio.path(self.path).read_text()
            self.segment = text.count('"event": "start"')
            if text and not text.endswith("\n"):  # a killed run's partial line: end it
                with fileio.path(self.path).open("a") as f:
                    f.write("\n")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=fileio.join(workdir, "tensorboard"))
        mode = os.environ.get("WANDB_MODE", wandb_mode)
        if mode != "disabled":
            import wandb

            self._wandb = wandb.init(
                project=wandb_project,
                name=wandb_name or None,
                mode=mode,
                dir=workdir if "://" not in workdir else None,
                config=dict(config or {}),
                resume="allow",
            )
        if progress_bar:
            self._bar = tqdm.tqdm(
                total=total_steps, initial=start_step, dynamic_ncols=True, desc="train"
            )

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append one record {"step", "time", **metrics} (scalars made JSON-able)."""
        if not self.enabled:
            return
        record = {"step": int(step), "time": time.time(), "segment": self.segment}
        record.update({k: _scalar(v) for k, v in metrics.items()})
        with fileio.path(self.path).open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=int(step))
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "time", "segment") and _is_number(v):
                    self._tb.add_scalar(k, v, global_step=int(step))
        losses = {k: v for k, v in record.items() if k == "loss" or k.endswith("/loss")}
        losses = {k: v for k, v in losses.items() if "aux/" not in k}  # "<tree>/loss" too
        if self._bar is not None and losses:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics.jsonl in order, without the abandoned part of each resumed
    segment (records of segment k with a step after the step segment j > k resumed from) and
    without lines a killed run left half-written."""
    records = []
    for line in _lines(path):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a partial last line of a killed run
            continue
    segment, resumed_at = 0, {}  # files written before `segment` existed: count start events
    for r in records:
        if r.get("event") == "start":
            segment = r.get("segment", len(resumed_at))
            resumed_at[segment] = r["step"]
        r.setdefault("segment", segment)
    out = []
    for r in records:
        later = [s for seg, s in resumed_at.items() if seg > r["segment"]]
        if not later or r["step"] <= min(later):
            out.append(r)
    return out


def _lines(path: str) -> list[str]:
    with fileio.path(path).open("r") as f:
        return f.read().splitlines()


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _scalar(v: Any) -> Any:
    a = np.asarray(v)
    if a.ndim == 0:
        return a.item() if a.dtype != np.bool_ else bool(a)
    return a.tolist()
