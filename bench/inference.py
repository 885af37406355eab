"""Inference speed, before/after in one run: FID Inception-v3 features and the DiT forward inside
the sampler (issue #21).

    uv run --frozen --no-sync python bench/inference.py [--quick]

Every comparison runs its variants interleaved round by round (a load spike on a shared machine
hits all of them alike) and reports the median over rounds of the per-round time ratio
old / new (> 1: new is faster), next to the median times.

1. Inception: `inception_feature_fn(model, fold=False)` (the network as loaded: conv → BN →
   ReLU, XLA convolutions) vs the default `fold=True` (`nnx_eval.inception_fold`: BN folded,
   sibling 1×1 convs fused into one matmul, CPU dot / patch lowerings), uint8 → resize →
   network at 299², random weights in the released layout; images/s and the largest relative
   difference of the pool3 features.
2. DiT-S/2 on 32×32×4 latents (random weights, final layer re-initialised so the output is
   not identically zero): one `pred` call at batch 8 and 16, with and without the residual
   stream's `fusion_boundary`, and folded vs XLA attention; and Euler per network evaluation:
   with CFG (scale 4, batch 8) "before" (`eval_batch=0`, `batching="concat"`: one call on the
   2B batch) vs the default (on CPU `batching="split"`: two B calls) vs `batching="concat"` with
   the default `eval_batch` (the 2B batch in sub-batches of 8 under `lax.map`), and without CFG
   at batch 16, before (`eval_batch=0`) vs the default (two sub-batches of 8).
3. Roofline: the model FLOPs of each program (XLA cost analysis) over its median time, against a
   plain 2048³ float32 matmul timed in the same rounds.

The 1/5/15-minute load averages are recorded: absolute times on a shared machine are not
comparable between runs, the ratios are. Writes bench/results/inference.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

RESULTS = pathlib.Path(__file__).parent / "results" / "inference.json"


def _rounds(fns: dict, rounds: int) -> dict[str, list[float]]:
    """Wall time of each `fn()` per round, interleaved; one warm-up call each first."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return times


def _ratio(times: dict, old: str, new: str) -> float:
    return round(float(np.median(np.array(times[old]) / np.array(times[new]))), 3)


def _med(ts: list[float]) -> float:
    return round(float(np.median(ts)), 4)


def _matmul() -> tuple:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((2048, 2048)), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return (lambda: f(a)), 2 * 2048**3


@contextlib.contextmanager
def _no_fusion_boundary():
    from nnx_backbones.layers import adaln

    saved = adaln.fusion_boundary
    adaln.fusion_boundary = lambda x: x
    try:
        yield
    finally:
        adaln.fusion_boundary = saved


def inception(batch: int, rounds: int) -> dict:
    sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "packages/nnx-eval/tests"))
    from conftest import random_state_dict  # the released layout, seeded random weights
    from nnx_eval.features import inception_feature_fn
    from nnx_eval.inception_weights import inception_from_state_dict

    model = inception_from_state_dict(random_state_dict(0))
    images = np.random.default_rng(0).integers(0, 256, (batch, 299, 299, 3), dtype=np.uint8)
    old, new = inception_feature_fn(model, fold=False), inception_feature_fn(model)
    a, b = old(images)["pool"], new(images)["pool"]
    mm, mm_flops = _matmul()
    times = _rounds({"as_loaded": lambda: old(images), "folded": lambda: new(images), "mm": mm},
                    rounds)  # fmt: skip
    flops = 2 * 5.713e9 * batch  # Inception-v3 at 299²: 5.713 GMAC per image
    mm_rate = mm_flops / np.median(times["mm"])
    return {
        "batch": batch,
        "rounds": rounds,
        "speedup_folded_vs_as_loaded": _ratio(times, "as_loaded", "folded"),
        "images_per_s": {k: round(batch / np.median(times[k]), 2) for k in ("as_loaded", "folded")},
        "median_s": {k: _med(v) for k, v in times.items()},
        "matmul_gflops": round(mm_rate / 1e9, 1),
        "roofline_share": {
            k: round(flops / np.median(times[k]) / mm_rate, 3) for k in ("as_loaded", "folded")
        },
        "pool3_max_rel_diff": float(np.abs(a - b).max() / np.abs(a).max()),
    }


def _dit(attn: str | None = None):
    from nnx_backbones.dit import DiT

    size = {"hidden_size": 384, "depth": 12, "num_heads": 6}  # DiT-S/2
    net = DiT(input_size=32, patch_size=2, in_channels=4, num_classes=1000, **size,
              attn_implementation=attn, rngs=nnx.Rngs(0))  # fmt: skip
    graphdef, state = nnx.split(net)  # adaLN-Zero: give the zero-initialised layers values
    key = jax.random.key(3)

    def fill(v):
        if not jnp.issubdtype(v.dtype, jnp.floating) or bool(jnp.any(v)):
            return v
        return 0.02 * jax.random.normal(key, v.shape)

    state = jax.tree.map(fill, state)
    return nnx.merge(graphdef, state)


def dit(rounds: int, steps: int) -> dict:
    from nnx_interfaces.sit import SiTInterface
    from nnx_samplers import ClassifierFreeGuidance, Euler

    def compiled_pred(net, b: int):
        graphdef, state = nnx.split(net)
        x = jax.random.normal(jax.random.key(0), (b, 32, 32, 4))
        t, y = jnp.full((b,), 0.5), jnp.arange(b) % 1000
        f = jax.jit(lambda s, x, t, y: nnx.merge(graphdef, s)(x, t, y=y))
        c = f.lower(state, x, t, y).compile()
        flops = float(c.cost_analysis().get("flops", 0.0))
        return (lambda: c(state, x, t, y)), flops, c(state, x, t, y)

    net, net_xla = _dit(), _dit("xla")
    fns, flops, outs = {}, {}, {}
    for b in (8, 16):
        fns[f"pred_b{b}"], flops[f"pred_b{b}"], outs[f"pred_b{b}"] = compiled_pred(net, b)
        with _no_fusion_boundary():
            fns[f"pred_b{b}_no_boundary"], flops[f"pred_b{b}_no_boundary"], outs["nb"] = (
                compiled_pred(net, b)
            )
        fns[f"pred_b{b}_xla_attention"], flops[f"pred_b{b}_xla_attention"], outs["xla"] = (
            compiled_pred(net_xla, b)
        )
        diff = {k: float(jnp.abs(outs[k] - outs[f"pred_b{b}"]).max()) for k in ("nb", "xla")}
        flops[f"max_abs_diff_b{b}"] = diff

    sit = SiTInterface(net, "uniform", t_shift_base=None)
    x0 = jax.random.normal(jax.random.key(1), (8, 32, 32, 4))
    y = jnp.arange(8) % 1000
    key = jax.random.key(2)
    x16, y16 = jax.random.normal(jax.random.key(4), (16, 32, 32, 4)), jnp.arange(16) % 1000
    cfg = {"concat": ClassifierFreeGuidance(4.0, batching="concat")}
    bound = {  # "before": one call on the whole (2B) batch, as before eval_batch existed
        "before": (Euler(steps, eval_batch=0).bind(sit, guidance=cfg["concat"]), x0, y),
        "default": (Euler(steps).bind(sit, guidance=ClassifierFreeGuidance(4.0)), x0, y),
        "concat_chunked": (Euler(steps).bind(sit, guidance=cfg["concat"]), x0, y),
        "nocfg_b16_before": (Euler(steps, eval_batch=0).bind(sit), x16, y16),
        "nocfg_b16": (Euler(steps).bind(sit), x16, y16),
    }
    samples = {m: b(key, x, y=yy).x for m, (b, x, yy) in bound.items()}
    for m, (b, x, yy) in bound.items():
        fns[f"euler_{m}"] = lambda b=b, x=x, yy=yy: b(key, x, y=yy).x
    fns["mm"], mm_flops = _matmul()
    times = _rounds(fns, rounds)
    mm_rate = mm_flops / np.median(times["mm"])
    per_nfe = {m: _med([t / steps for t in times[f"euler_{m}"]]) for m in bound}
    return {
        "network": "DiT-S/2 (hidden 384, depth 12, heads 6), 32x32x4 latents, float32",
        "rounds": rounds,
        "euler_steps": steps,
        "median_s": {k: _med(v) for k, v in times.items()},
        "speedup": {
            "no_boundary_b8": _ratio(times, "pred_b8", "pred_b8_no_boundary"),
            "no_boundary_b16": _ratio(times, "pred_b16", "pred_b16_no_boundary"),
            "xla_attention_b8": _ratio(times, "pred_b8", "pred_b8_xla_attention"),
            "xla_attention_b16": _ratio(times, "pred_b16", "pred_b16_xla_attention"),
            "euler_cfg_default_vs_before": _ratio(times, "euler_before", "euler_default"),
            "euler_cfg_concat_chunked_vs_before": _ratio(
                times, "euler_before", "euler_concat_chunked"
            ),
            "euler_b16_default_vs_before": _ratio(
                times, "euler_nocfg_b16_before", "euler_nocfg_b16"
            ),
        },
        "euler_per_nfe_s": per_nfe,
        "cfg_before_nfe_over_pred_b16": round(per_nfe["before"] / _med(times["pred_b16"]), 3),
        "cfg_default_nfe_over_2x_pred_b8": round(
            per_nfe["default"] / (2 * _med(times["pred_b8"])), 3
        ),
        "matmul_gflops": round(mm_rate / 1e9, 1),
        "roofline_share": {
            k: round(flops[k] / np.median(times[k]) / mm_rate, 3)
            for k in fns
            if k.startswith("pred") and flops.get(k)
        },
        "max_abs_diff": {k: v for k, v in flops.items() if k.startswith("max_abs")},
        "samples_max_abs_diff_vs_before": {
            "cfg_default": float(jnp.abs(samples["default"] - samples["before"]).max()),
            "cfg_concat_chunked": float(
                jnp.abs(samples["concat_chunked"] - samples["before"]).max()
            ),
            "b16": float(jnp.abs(samples["nocfg_b16"] - samples["nocfg_b16_before"]).max()),
        },
    }


def main(quick: bool = False) -> dict:
    t0 = time.perf_counter()
    load_start = list(os.getloadavg())
    result = {
        "benchmark": "inference",
        "quick": quick,
        "load_average_1_5_15_at_start": load_start,
        "dit": dit(rounds=3 if quick else 5, steps=4 if quick else 8),
        "inception": inception(batch=32, rounds=3 if quick else 5),
    }
    dev = jax.devices()[0]
    result |= {
        "device": f"{dev.platform}: {dev.device_kind} (x{jax.device_count()})",
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_1_5_15_at_end": list(os.getloadavg()),
        "bench_seconds": round(time.perf_counter() - t0, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, Euler-4")
    args = parser.parse_args()
    print(json.dumps(main(args.quick), indent=2))
