"""Tensor / context parallelism on 8 simulated CPU devices: memory, collectives, step time.

    uv run --frozen --no-sync python bench/parallel.py [--quick]

One DiT train step (SiT-style velocity loss, AdamW; hidden 128, 4 heads, 16×16×4 latents,
patch 2 → 64 tokens; --quick: depth 2, batch 16; full: depth 4, batch 32) per strategy,
compiled under `jax.set_mesh` with the parameters sharded by `nnx_train.sharding.param_specs`
(TENSOR_RULES + FSDP) and the batch over data × fsdp. Per strategy:
  param_MB      parameter + optimizer-state bytes held per device (compiled memory analysis:
                the step's argument bytes, the batch shard included)
  temp_MB       the step's temporary (activation) bytes per device (memory analysis)
  collectives   count of all-reduce / all-gather / reduce-scatter / all-to-all /
                collective-permute ops in the compiled HLO (`nnx_train.collectives`)
  comm_MB       their output bytes per device per step
  step_ratio    median step time ÷ the data-parallel (data = 8) step time, same run
On simulated CPU devices all 8 "devices" share the same cores and "communication" is a memory
copy, so step_ratio measures partitioning overhead only — it is a ratio, never a speed-up, and
says nothing about TPU or GPU interconnects. Memory and collective counts are what transfer.
Writes bench/results/parallel.json.
"""

import argparse
import json
import time

import _simulated

STRATEGIES = {  # name: (mesh sizes, attn_implementation)
    "data8": (dict(data=8), None),
    "fsdp8": (dict(data=1, fsdp=8), None),
    "data4×tensor2": (dict(data=4, tensor=2), None),
    "data2×tensor4": (dict(data=2, tensor=4), None),
    "data4×context2 ring": (dict(data=4, context=2), "ring"),
    "data4×context2 ulysses": (dict(data=4, context=2), "ulysses"),
    "data2×tensor2×context2 ring": (dict(data=2, tensor=2, context=2), "ring"),
    "fsdp4×tensor2": (dict(data=1, fsdp=4, tensor=2), None),
}


def worker(quick: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from nnx_backbones.dit import DiT
    from nnx_train import collectives, sharding

    depth, batch, steps = (2, 16, 8) if quick else (4, 32, 20)
    x = jax.random.normal(jax.random.key(0), (batch, 16, 16, 4))
    noise = jax.random.normal(jax.random.key(1), x.shape)
    t = jax.random.uniform(jax.random.key(2), (batch,))
    y = jnp.arange(batch) % 10
    opt = optax.adamw(1e-4)
    rows, runs = {}, {}
    for name, (sizes, impl) in STRATEGIES.items():
        model = DiT(input_size=16, patch_size=2, in_channels=4, hidden_size=128, depth=depth,
                    num_heads=4, num_classes=10, attn_implementation=impl,
                    rngs=nnx.Rngs(0))  # fmt: skip
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        params = nnx.to_pure_dict(params)
        mesh = sharding.build_mesh(**sizes)
        sharding.check_model_parallel(model, mesh)
        p_specs = sharding.param_specs(params, mesh, "fsdp", min_size=1)
        opt_state = opt.init(params)
        o_specs = sharding.follow_specs(opt_state, params, p_specs)
        p_sh, o_sh = sharding.named(mesh, p_specs), sharding.named(mesh, o_specs)
        b_sh = sharding.batch_sharding(mesh)

        def step(params, opt_state, x, noise, t, y):
            def loss(params):
                tt = t[:, None, None, None]
                x_t = (1 - tt) * x + tt * noise
                out = nnx.merge(graphdef, params, rest)(x_t, t, y=y)
                return jnp.mean((out - (noise - x)) ** 2)

            value, grads = jax.value_and_grad(loss)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        with jax.set_mesh(mesh):
            jitted = jax.jit(step, in_shardings=(p_sh, o_sh, b_sh, b_sh, b_sh, b_sh),
                             out_shardings=(p_sh, o_sh, None), donate_argnums=(0, 1))  # fmt: skip
            compiled = jitted.lower(params, opt_state, x, noise, t, y).compile()
        mem = compiled.memory_analysis()
        found = collectives.collectives(compiled.as_text())
        state = (jax.device_put(params, p_sh), jax.device_put(opt_state, o_sh))
        args = [jax.device_put(a, b_sh) for a in (x, noise, t, y)]
        runs[name] = [compiled, state, args]
        rows[name] = {
            "param_MB": mem.argument_size_in_bytes / 1e6,
            "temp_MB": mem.temp_size_in_bytes / 1e6,
            "collectives": sum(collectives.counts(found).values()),
            **{k: v for k, v in collectives.counts(found).items() if v},
            "comm_MB": sum(c.nbytes for c in found) / 1e6,
        }
    # Time the strategies round-robin (one step each per round), so that load on the machine
    # falls on all of them alike; the first round is a warm-up.
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(steps + 1):
        for name, run in runs.items():
            compiled, state, args = run
            t0 = time.perf_counter()
            p, o, value = compiled(*state, *args)
            value.block_until_ready()
            times[name].append(time.perf_counter() - t0)
            run[1] = (p, o)
            rows[name]["loss"] = float(value)
    for name in runs:
        rows[name]["step_s"] = float(np.median(times[name][1:]))
    base = rows["data8"]
    for r in rows.values():
        r["param_ratio"] = r["param_MB"] / base["param_MB"]
        r["step_ratio"] = r["step_s"] / base["step_s"]
    return {"rows": rows, "depth": depth, "batch": batch}


def main(quick: bool = False) -> dict:
    data = _simulated.run_worker(__file__, 8, ["--quick"] if quick else [])
    return _simulated.save("parallel", {
        "metric": "DiT train step per strategy on 8 simulated CPU devices; step_ratio = step "
        "time ÷ data8 in the same run (CPU: partitioning overhead only, not a speed-up)",
        "quick": quick,
        "model": f"DiT hidden 128, depth {data['depth']}, 4 heads, 64 tokens, batch "
        f"{data['batch']}, AdamW",
        "strategies": data["rows"],
    })  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.quick)))
    else:
        res = main(args.quick)
        for name, r in res["strategies"].items():
            print(f"{name:30s} params {r['param_MB']:.3f} MB ({r['param_ratio']:.2f}×), "
                  f"temp {r['temp_MB']:.2f} MB, {r['collectives']} collectives "
                  f"{r['comm_MB']:.2f} MB, step ×{r['step_ratio']:.2f}")  # fmt: skip
