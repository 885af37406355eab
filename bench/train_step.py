"""Train-step benchmark: DiT images/s and achieved FLOP/s as a fraction of this machine's matmul
roofline, both measured in the same run.

    uv run --frozen --no-sync python bench/train_step.py [--quick]

- Roofline: a jitted dense f32 `jnp.dot` of two 2048² matrices (2·2048³ FLOPs), best of 10, measured
  before and after the train steps; the larger of the two.
- Train step: flow-matching loss (x_t = (1 − t)·x + t·ε, target ε − x) on a DiT over 32×32×4
  latents with 1000 classes (label dropout on), forward + backward + optax AdamW update, one
  `jax.jit` with the parameters and optimizer state donated. FLOPs per step come from
  `compiled.cost_analysis()["flops"]` (XLA's count for the whole step); achieved FLOP/s =
  FLOPs / median step time; `roofline_ratio` = achieved / matmul FLOP/s.
- DiT-S/2 at batch 8 always; without --quick also DiT-S/2 at batch 32 and DiT-B/2 at batch 8.
- `ablation`: DiT-S/2 again with each CPU fix of nnx-backbones switched off, timed in the same
  run, so before/after is a ratio on one machine: `fusion_boundary` off (the residual stream
  passes through unchanged, as before the fix; `nnx_backbones.layers.fusion`) and the attention
  path (`"folded"`, this package's CPU default, or `"xla"`, `jax.nn.dot_product_attention`'s).
  "Before" is boundary off + xla attention; "after" is the default.

The machine's 1-minute load average is recorded: on a shared machine both numbers are noisy,
but their ratio is taken within one run. Writes bench/results/train_step.json.

On an accelerator (GPU/TPU), `--accelerator` times DiT-B/2 and DiT-XL/2 in bfloat16 (parameters
float32) and writes bench/results/train_step_accelerator.json with MFU = model FLOP/s ÷ the
device's dense bf16 peak (`--peak-tflops`, or the datasheet value for a known device kind), next
to the ratio to a measured bf16 8192² matmul:

    uv run --frozen --no-sync python bench/train_step.py --accelerator --batch 256

The model FLOPs are XLA's count for the same step traced with `attn_implementation="xla"`
(lowered, not run), because fused attention kernels (cuDNN) are custom calls XLA cannot count.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from nnx_backbones.dit import DiT
from nnx_backbones.layers import adaln

RESULTS = pathlib.Path(__file__).parent / "results" / "train_step.json"


# Dense bf16 peak FLOP/s from the datasheets (SXM parts, without sparsity), by device_kind.
PEAK_BF16_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4,
    "NVIDIA H200": 989.4,
    "NVIDIA A100-SXM4-80GB": 312.0,
}

RESULTS_ACCELERATOR = RESULTS.with_name("train_step_accelerator.json")


def matmul_flops_per_s(n: int, repeats: int, dtype=jnp.float32) -> float:
    """Dense matmul FLOP/s: 2n³ / best time of `repeats` jitted n×n @ n×n products."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def make_step(model: DiT, lr: float = 1e-4):
    """A pure jitted train step over (params, opt_state, rest) with donation; returns it, the
    initial state and the optimizer."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.adamw(lr, weight_decay=0.0)
    opt_state = opt.init(params)

    def step(params, opt_state, rest, x, y, key):
        k_t, k_n = jax.random.split(key)
        t = jax.random.uniform(k_t, (x.shape[0],))
        noise = jax.random.normal(k_n, x.shape, x.dtype)

        net = nnx.merge(graphdef, params, rest)

        def loss_fn(net):
            tb = t[:, None, None, None]
            v = net((1 - tb) * x + tb * noise, t, y=y, train=True)
            return jnp.mean(jnp.square(v - (noise - x)))

        loss, grads = nnx.value_and_grad(loss_fn)(net)
        params, rest = nnx.state(net, nnx.Param), nnx.state(net, nnx.Not(nnx.Param))
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, rest, loss

    return jax.jit(step, donate_argnums=(0, 1, 2)), (params, opt_state, rest)


def time_train_step(
    name: str, batch: int, steps: int, *, fusion_boundary: bool = True, **model_kw
) -> dict:
    """Compile once, run `steps` timed steps after one warm-up; median images/s and FLOP/s.

    `fusion_boundary=False` traces the blocks with the residual boundary replaced by the
    identity (the code as it was before that fix), for the ablation.
    """
    boundary = adaln.fusion_boundary
    if not fusion_boundary:
        adaln.fusion_boundary = lambda x: x
    try:
        return _time_train_step(name, batch, steps, **model_kw)
    finally:
        adaln.fusion_boundary = boundary


def _dit(name: str, **model_kw) -> DiT:
    return DiT.from_preset(
        name, input_size=32, in_channels=4, num_classes=1000, rngs=nnx.Rngs(0), **model_kw
    )


def _flops(compiled_or_lowered) -> float:
    cost = compiled_or_lowered.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def _time_train_step(
    name: str, batch: int, steps: int, *, count_flops_with_xla_attention: bool = False, **model_kw
) -> dict:
    model = _dit(name, **model_kw)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    step, state = make_step(model)
    x = jax.random.normal(jax.random.key(2), (batch, 32, 32, 4))
    y = jax.random.randint(jax.random.key(3), (batch,), 0, 1000)
    key = jax.random.key(4)
    t0 = time.perf_counter()
    compiled = step.lower(*state, x, y, key).compile()
    compile_s = time.perf_counter() - t0
    if count_flops_with_xla_attention:
        counting_kw = {**model_kw, "attn_implementation": "xla"}
        counting_step, counting_state = make_step(nnx.eval_shape(lambda: _dit(name, **counting_kw)))
        flops = _flops(counting_step.lower(*counting_state, x, y, key))
    else:
        flops = _flops(compiled)
    state = (*compiled(*state, x, y, key)[:3],)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        *new, loss = compiled(*state, x, y, jax.random.fold_in(key, i))
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
        state = tuple(new)
    med = statistics.median(times)
    return dict(
        model=f"DiT-{name}",
        params=int(n_params),
        batch=batch,
        steps=steps,
        compile_s=round(compile_s, 2),
        step_s_median=med,
        step_s_all=[round(s, 4) for s in times],
        images_per_s=batch / med,
        flops_per_step=flops,
        flops_per_s=flops / med,
        loss=float(loss),
    )


def main(quick: bool = False) -> dict:
    # A 2048² product (~0.1 s here) gives a steadier best-of-10 than 1024² (~12 ms), whose best
    # ranged 130–177 GFLOP/s across runs on the shared VM.
    n = 2048
    roof_before = matmul_flops_per_s(n, repeats=10)
    steps = 3 if quick else 5
    # Batch 8 is this 2-core CPU's best operating point (images/s); see bench/README.md.
    runs = [time_train_step("S/2", 8, steps)]
    if not quick:
        runs += [time_train_step("S/2", 32, steps), time_train_step("B/2", 8, steps)]
    ablation = [dict(fusion_boundary="on", attention="folded (default)", **runs[0])]
    for boundary, attention in ((True, "xla"), (False, "xla")):
        r = time_train_step(
            "S/2", 8, steps, fusion_boundary=boundary, attn_implementation=attention
        )
        ablation.append(dict(fusion_boundary="on" if boundary else "off", attention=attention, **r))
    roof_after = matmul_flops_per_s(n, repeats=10)
    roof = max(roof_before, roof_after)
    for r in (*runs, *ablation):
        r["roofline_ratio"] = r["flops_per_s"] / roof
    before = ablation[-1]["step_s_median"]
    for r in ablation:
        r["speedup_vs_before"] = before / r["step_s_median"]
    result = dict(
        benchmark="train_step",
        quick=quick,
        device=str(jax.devices()[0].device_kind),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        load_avg_1min=os.getloadavg()[0],
        jax_version=jax.__version__,
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        matmul_n=n,
        matmul_flops_per_s=roof,
        matmul_flops_per_s_before_after=[roof_before, roof_after],
        runs=runs,
        ablation=ablation,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main_accelerator(
    models: list[str],
    batch: int,
    steps: int,
    dtype: str,
    remat: bool,
    peak_tflops: float | None,
    matmul_n: int = 8192,
) -> dict:
    """DiT presets in `dtype` on the default (accelerator) device: images/s, FLOP/s and MFU."""
    device = jax.devices()[0]
    peak = 1e12 * (peak_tflops or PEAK_BF16_TFLOPS.get(device.device_kind, float("nan")))
    matmul = matmul_flops_per_s(matmul_n, repeats=10, dtype=jnp.bfloat16)
    runs = []
    for name in models:
        r = _time_train_step(
            name,
            batch,
            steps,
            count_flops_with_xla_attention=True,
            dtype=jnp.dtype(dtype),
            remat=remat,
        )
        r.update(dtype=dtype, remat=remat, mfu=r["flops_per_s"] / peak)
        r["matmul_ratio"] = r["flops_per_s"] / matmul
        runs.append(r)
    result = dict(
        benchmark="train_step_accelerator",
        device=device.device_kind,
        platform=device.platform,
        jax_version=jax.__version__,
        jaxlib_version=importlib.metadata.version("jaxlib"),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        peak_bf16_flops_per_s=peak,
        matmul_n=matmul_n,
        matmul_bf16_flops_per_s=matmul,
        runs=runs,
    )
    RESULTS_ACCELERATOR.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_ACCELERATOR.write_text(json.dumps(result, indent=2) + "\n")
    for r in runs:
        print(
            f"{r['model']:10s} {dtype} batch {batch}: {r['images_per_s']:8.1f} img/s, "
            f"{r['flops_per_s'] / 1e12:7.1f} TFLOP/s, MFU {100 * r['mfu']:5.1f}%, "
            f"{100 * r['matmul_ratio']:5.1f}% of a bf16 {matmul_n}² matmul "
            f"({matmul / 1e12:.1f} TFLOP/s)"
        )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="DiT-S/2 only, 3 steps")
    parser.add_argument(
        "--accelerator", action="store_true", help="bf16 DiT-B/2 and XL/2 MFU on the device"
    )
    parser.add_argument("--models", default="B/2,XL/2", help="with --accelerator")
    parser.add_argument("--batch", type=int, default=256, help="with --accelerator")
    parser.add_argument("--steps", type=int, default=10, help="with --accelerator")
    parser.add_argument("--dtype", default="bfloat16", help="with --accelerator")
    parser.add_argument("--remat", action="store_true", help="with --accelerator")
    parser.add_argument("--peak-tflops", type=float, default=None, help="with --accelerator")
    parser.add_argument("--matmul-n", type=int, default=8192, help="with --accelerator")
    args = parser.parse_args()
    if args.accelerator:
        main_accelerator(
            args.models.split(","),
            args.batch,
            args.steps,
            args.dtype,
            args.remat,
            args.peak_tflops,
            args.matmul_n,
        )
        raise SystemExit(0)
    out = main(quick=args.quick)
    for r in (*out["runs"], *out["ablation"]):
        print(
            f"{r['model']:10s} {r.get('fusion_boundary', ''):3s} {r.get('attention', ''):16s} "
            f"batch {r['batch']:3d}: {r['images_per_s']:8.2f} img/s, "
            f"{r['flops_per_s'] / 1e9:7.2f} GFLOP/s = {100 * r['roofline_ratio']:5.1f}% of "
            f"matmul {out['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s"
        )
