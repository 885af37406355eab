"""Train-step benchmark: DiT images/s and achieved FLOP/s as a fraction of this machine's matmul
roofline, both measured in the same run.

    uv run --frozen --no-sync python bench/train_step.py [--quick]

- Roofline: a jitted dense f32 `jnp.dot` of two n×n matrices (2n³ FLOPs), best of a few runs.
- Train step: flow-matching loss (x_t = (1 − t)·x + t·ε, target ε − x) on a DiT over 32×32×4
  latents with 1000 classes (label dropout on), forward + backward + optax AdamW update, one
  `jax.jit` with the parameters and optimizer state donated. FLOPs per step come from
  `compiled.cost_analysis()["flops"]` (XLA's count for the whole step); achieved FLOP/s =
  FLOPs / median step time; `roofline_ratio` = achieved / matmul FLOP/s.
- DiT-S/2 always; DiT-B/2 too without --quick. Variants of the attention call are timed in the
  same run (`variants`), to show what the attention path costs on this machine.

The machine's 1-minute load average is recorded: on a shared machine both numbers are noisy,
but their ratio is taken within one run. Writes bench/results/train_step.json.
"""

from __future__ import annotations

import argparse
import datetime
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

RESULTS = pathlib.Path(__file__).parent / "results" / "train_step.json"


def matmul_flops_per_s(n: int, repeats: int) -> float:
    """Dense f32 matmul FLOP/s: 2n³ / best time of `repeats` jitted n×n @ n×n products."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
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


def time_train_step(name: str, batch: int, steps: int, **model_kw) -> dict:
    """Compile once, run `steps` timed steps after one warm-up; median images/s and FLOP/s."""
    model = DiT.from_preset(
        name, input_size=32, in_channels=4, num_classes=1000, rngs=nnx.Rngs(0), **model_kw
    )
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    step, state = make_step(model)
    x = jax.random.normal(jax.random.key(2), (batch, 32, 32, 4))
    y = jax.random.randint(jax.random.key(3), (batch,), 0, 1000)
    key = jax.random.key(4)
    t0 = time.perf_counter()
    compiled = step.lower(*state, x, y, key).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost["flops"])
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
    n = 1024 if quick else 2048
    roof_before = matmul_flops_per_s(n, repeats=5)
    batch, steps = (8, 3) if quick else (32, 5)
    runs = [time_train_step("S/2", batch, steps)]
    variants = []
    if not quick:
        runs.append(time_train_step("B/2", batch, steps))
    # Attention path variant timed in the same run: XLA's attention vs the default choice.
    variants.append(
        dict(
            attn_implementation="xla",
            **time_train_step("S/2", batch, steps, attn_implementation="xla"),
        )
    )
    roof_after = matmul_flops_per_s(n, repeats=5)
    roof = max(roof_before, roof_after)
    for r in (*runs, *variants):
        r["roofline_ratio"] = r["flops_per_s"] / roof
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
        variants=variants,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="DiT-S/2 only, batch 8, 3 steps")
    args = parser.parse_args()
    out = main(quick=args.quick)
    for r in (*out["runs"], *out["variants"]):
        print(
            f"{r['model']:10s} batch {r['batch']:3d}: {r['images_per_s']:8.2f} img/s, "
            f"{r['flops_per_s'] / 1e9:7.2f} GFLOP/s = {100 * r['roofline_ratio']:5.1f}% of "
            f"matmul {out['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s"
        )
