"""Few-step quality of every flow-map-family objective on 2-D toy data (sliced Wasserstein).

    uv run --frozen --no-sync python bench/flowmaps_2d.py [--quick]

Trains each objective of `nnx_interfaces.flowmaps`, `nnx_interfaces.shortcut` and
`nnx_interfaces.consistency` with the MLP backbone, class-conditional (8 classes per dataset: the
Gaussian, the square, or an arc of a moon — the "observation"), for the same budget (steps ×
batch, Adam), on 8-Gaussians, checkerboard and two moons (standardised to unit std). Then samples
with 1, 2, 4 and 16 steps using tiny loops written here (no nnx-samplers):

  flow          Euler on dI/dt = b_t(I) from noise at t = 0 to t = 1
  ctm psd lsd esd mf shortcut   jumps Φ(x, t_i, t_{i+1}) on a uniform grid
  sct scd       multistep consistency: denoise, re-noise with fresh noise at the next angle
  regression    one call (1 step only)
  mip tsd       their own schemes: 1 step = first call, 2 steps = both calls (4, 16: n/a)

CTM, sCD and DMD2 distil the flow-matching model trained first on the same data. DMD2
(`nnx_interfaces.dmd`, 1-step generator, TTUR 5, GAN head on the fake score's last hidden layer)
is trained with nnx-train's multi-tree step for `dmd_steps` steps; its row is compared with the
teacher's 32-step Heun samples (`teacher_heun32`; DMD2 target: within 1.5×). MF, sCT and sCD use
`time_scale=0.05` (the network sees 0.05·t; with the default they diverge or crawl at this
budget). Metric: sliced Wasserstein-1 distance (128 random directions) between 2000 samples
and 2000 fresh target samples with the same labels; `floor` is the distance between two fresh
target sets (sampling noise).
Writes bench/results/flowmaps_2d.json (device, jax version, date). --quick: 8-Gaussians only,
fewer steps and a smaller MLP.
"""

import argparse
import datetime
import itertools
import json
import math
import os
import pathlib
import platform
import time

if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nnx_backbones.mlp import MLP
from nnx_interfaces import flowmaps as fm
from nnx_interfaces.consistency import SCD, SCT
from nnx_interfaces.dmd import DMD
from nnx_interfaces.shortcut import Shortcut
from nnx_train import state as state_lib
from nnx_train import step as step_lib

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
STEPS = (1, 2, 4, 16)
OBJECTIVES = ("flow", "regression", "tsd", "mip", "ctm", "psd", "lsd", "esd", "mf", "shortcut")
OBJECTIVES += ("sct", "scd")
TWO_TIME = {"ctm", "psd", "lsd", "esd", "mf", "shortcut"}


# --- data: (x [N, 2] float32 with unit std, y [N] int labels in 0..7) --------------------------
def eight_gaussians(rng: np.random.Generator, n: int):
    y = rng.integers(0, 8, n)
    angle = 2 * np.pi * y / 8
    x = 2.0 * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.2 * rng.standard_normal((n, 2))
    return x / 2.0, y


def checkerboard(rng: np.random.Generator, n: int):
    y = rng.integers(0, 8, n)  # the 8 black squares of a 4×4 board on [-2, 2]²
    row, col = y // 2, 2 * (y % 2) + (y // 2) % 2
    x = np.stack([col - 2 + rng.uniform(0, 1, n), row - 2 + rng.uniform(0, 1, n)], 1)
    return x / 1.15, y


def two_moons(rng: np.random.Generator, n: int):
    y = rng.integers(0, 8, n)  # moon = y // 4, arc quarter = y % 4
    u = np.pi * ((y % 4) + rng.uniform(0, 1, n)) / 4
    upper = y < 4
    x = np.where(
        upper[:, None],
        np.stack([np.cos(u), np.sin(u)], 1),
        np.stack([1 - np.cos(u), 0.5 - np.sin(u)], 1),
    )
    x = x + 0.05 * rng.standard_normal((n, 2)) - np.array([0.5, 0.25])
    return x / 0.86, y


DATASETS = {"8gaussians": eight_gaussians, "checkerboard": checkerboard, "moons": two_moons}


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_dirs: int = 128, seed: int = 0) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance (equal sample sizes)."""
    theta = np.random.default_rng(seed).standard_normal((2, n_dirs))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    pa, pb = np.sort(a @ theta, axis=0), np.sort(b @ theta, axis=0)
    return float(np.mean(np.abs(pa - pb)))


# --- models ------------------------------------------------------------------------------------
def build(kind: str, width: int, depth: int, seed: int, teacher=None, total_steps: int = 1):
    rngs = nnx.Rngs(seed, time=seed + 1, noise=seed + 2, label_dropout=seed + 3)
    net = MLP((2,), width=width, depth=depth, use_r=kind in TWO_TIME, num_classes=8, rngs=rngs)
    st = fm.STSampling(delta_t_span=total_steps // 2)
    warm = total_steps // 4
    if kind == "ctm":
        return fm.ConsistencyTrajectoryModel(net, teacher, ctm_dt=0.05, st=st)
    # MF, sCT and sCD differentiate the network in time under a stop-gradient target: a slower
    # time embedding (network sees 0.05·t) keeps those derivatives tame.
    if kind == "scd":
        return SCD(net, teacher=teacher, sigma_d=1.0, tangent_warmup_steps=warm, time_scale=0.05)
    if kind == "sct":
        return SCT(net, sigma_d=1.0, tangent_warmup_steps=warm, time_scale=0.05)
    if kind == "mf":
        return fm.MeanFlowMap(net, st=st, time_scale=0.05)
    cls = {
        "flow": fm.FlowMatching,
        "regression": fm.Regression,
        "tsd": fm.TwoStepDenoising,
        "mip": fm.MinimumIterativePolicy,
        "psd": fm.ProgressiveSelfDistillation,
        "lsd": fm.LagrangianSelfDistillation,
        "esd": fm.EulerianSelfDistillation,
        "shortcut": Shortcut,
    }[kind]
    return cls(net, st=st)


TRAINABLE = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("teacher")))


@nnx.jit
def train_step(itf, opt, x, y, step):
    diff = nnx.DiffState(0, TRAINABLE)
    loss, grads = nnx.value_and_grad(lambda m: m.loss(x, y, step=step), argnums=diff)(itf)
    opt.update(itf, grads)
    return loss


def train(itf, sample, steps: int, batch: int, lr: float, seed: int):
    opt = nnx.Optimizer(itf, optax.adam(lr), wrt=TRAINABLE)
    rng = np.random.default_rng(seed)
    loss = float("nan")
    for i in range(steps):
        x, y = sample(rng, batch)
        loss = train_step(itf, opt, jnp.asarray(x, jnp.float32), jnp.asarray(y), jnp.int32(i))
    return float(loss)


def train_dmd2(
    teacher, sample, steps: int, batch: int, lr: float, seed: int, width: int, depth: int
):
    """DMD2 from the flow teacher: generator and fake score copies of it, the teacher frozen;
    nnx-train's multi-tree step (generator every 5th step), `lax.scan` over chunks of steps."""
    dmd = DMD(
        nnx.clone(teacher), nnx.clone(teacher), teacher, fake_updates=5,
        gan_weight_generator=3e-3, gan_weight_critic=1e-2, gan_hidden_at=depth,
        gan_channels=width, rngs=nnx.Rngs(time=seed, noise=seed + 1),
    )  # fmt: skip
    graphdef, params, rng, other, frozen = state_lib.split_module(dmd)
    opts = {"generator": optax.adam(lr), "critic": optax.adam(2 * lr)}
    state = step_lib.init_state(params, rng, other, opts, frozen=frozen)
    trees = [
        step_lib.TreeStep(t.tree, opts[t.tree], lambda c: lr, loss=t.loss, every=t.every)
        for t in dmd.trained_trees()
    ]
    step = step_lib.make_multi_train_step(graphdef, state_lib.key_template(rng), trees)

    @jax.jit
    def chunk(state, xs, ys):
        def body(st, xy):
            st, m = step(st, {"x": xy[0], "y": xy[1]})
            return st, m["critic/loss"]

        return jax.lax.scan(body, state, (xs, ys))

    rng_np = np.random.default_rng(seed)
    per = 100
    for _ in range(steps // per):
        xy = [sample(rng_np, batch) for _ in range(per)]
        xs = jnp.asarray(np.stack([x for x, _ in xy]), jnp.float32)
        state, losses = chunk(state, xs, jnp.asarray(np.stack([y for _, y in xy])))
    return state_lib.merge_module(
        graphdef,
        state["params"],
        state_lib.data_to_keys(state["rng"], state_lib.key_template(rng)),
        state["other"],
        state["frozen"],
    ), float(losses[-1])


# --- tiny samplers -------------------------------------------------------------------------------
@nnx.jit
def _jump(itf, x, s, t, y):
    return itf.flow_map(x, s, t, y=y)


@nnx.jit
def _euler(itf, x, s, t, y):
    return x + (t - s)[:, None] * itf.pred(x, s, y=y)


@nnx.jit
def _denoise(itf, x, t, y):
    return itf.denoise(x, t, y=y)


def heun(itf, n: jax.Array, y: jax.Array, steps: int) -> jax.Array:
    """The flow model's PF-ODE from noise (t = 0) to 1 − data_eps with `steps` Heun steps."""
    full = lambda v: jnp.full((n.shape[0],), v, jnp.float32)  # noqa: E731
    grid = np.linspace(0.0, 1.0 - itf.interpolant.data_eps, steps + 1)
    x = n
    for s, t in itertools.pairwise(grid):
        d1 = _pred(itf, x, full(s), y)
        d2 = _pred(itf, x + (t - s) * d1, full(t), y)
        x = x + 0.5 * (t - s) * (d1 + d2)
    return x


@nnx.jit
def _pred(itf, x, t, y):
    return itf.pred(x, t, y=y)


def generate(kind: str, itf, n: jax.Array, y: jax.Array, steps: int, key: jax.Array):
    """Samples `[N, 2]` from noise n with `steps` network calls, or None if not defined."""
    full = lambda v: jnp.full((n.shape[0],), v, jnp.float32)  # noqa: E731
    if kind in ("flow", *TWO_TIME):
        grid = np.linspace(0.0, 1.0 - itf.interpolant.data_eps, steps + 1)
        x = n
        for s, t in itertools.pairwise(grid):
            x = (_euler if kind == "flow" else _jump)(itf, x, full(s), full(t), y)
        return x
    if kind == "regression":
        return _denoise(itf, itf.initial_state(n), full(0.0), y) if steps == 1 else None
    if kind in ("mip", "tsd"):
        if steps > 2:
            return None
        x_hat = _denoise(itf, itf.initial_state(n), full(0.0), y)
        if steps == 1:
            return x_hat
        return _denoise(itf, itf.renoise(x_hat, n, full(itf.t_fix)), full(itf.t_fix), y)
    # sCT / sCD: multistep consistency sampling from t_max = arctan(80/σ_d).
    t_max = math.atan(80.0 / itf.sigma_d)
    angles = [t_max * (1 - i / steps) for i in range(steps)]
    x = itf.sigma_d * n
    for i, t in enumerate(angles):
        if i > 0:
            z = jax.random.normal(jax.random.fold_in(key, i), n.shape)
            x = math.cos(t) * x_hat + math.sin(t) * itf.sigma_d * z
        x_hat = _denoise(itf, x, full(t), y)
    return x_hat


# --- main ----------------------------------------------------------------------------------------
def main(quick: bool = False) -> dict:
    cfg = dict(
        steps=400 if quick else 800,
        batch=256,
        lr=2e-3,
        width=64 if quick else 96,
        depth=2,
        n_eval=2000,
        dmd_steps=2000 if quick else 3000,
        dmd_lr=1e-3,
        datasets=["8gaussians"] if quick else list(DATASETS),
    )
    t_start = time.time()
    swd, losses, floors, heun32, ratio = {}, {}, {}, {}, {}
    for dname in cfg["datasets"]:
        sample = DATASETS[dname]
        rng = np.random.default_rng(123)
        ref, y_ref = sample(rng, cfg["n_eval"])
        fresh = np.zeros_like(ref)
        for c in range(8):  # fresh targets with the same labels
            idx = np.nonzero(y_ref == c)[0]
            xs, ys = sample(rng, 16 * len(idx) + 256)
            fresh[idx] = xs[ys == c][: len(idx)]
        floors[dname] = sliced_wasserstein(ref, fresh)
        noise = jax.random.normal(jax.random.key(7), ref.shape)
        y = jnp.asarray(y_ref)
        trained = {}
        for kind in OBJECTIVES:
            t0 = time.time()
            teacher = trained.get("flow") if kind in ("ctm", "scd") else None
            itf = build(kind, cfg["width"], cfg["depth"], 0, teacher, cfg["steps"])
            losses[f"{kind}/{dname}"] = train(
                itf, sample, cfg["steps"], cfg["batch"], cfg["lr"], seed=1
            )
            trained[kind] = itf
            row = {}
            for k in STEPS:
                out = generate(kind, itf, noise, y, k, jax.random.key(k))
                row[f"{k} step"] = None if out is None else sliced_wasserstein(np.asarray(out), ref)
            row["train_s"] = round(time.time() - t0, 1)
            swd[f"{kind}/{dname}"] = row
            cells = " ".join("  n/a " if v is None else f"{v:6.3f}" for v in list(row.values())[:4])
            print(f"{kind:>10s} {dname:>12s}  {cells}  ({row['train_s']} s)", flush=True)
        # DMD2: a 1-step generator distilled from the flow teacher, against its 32-step Heun
        teacher = trained["flow"]
        heun32[dname] = sliced_wasserstein(np.asarray(heun(teacher, noise, y, 32)), ref)
        t0 = time.time()
        dmd, losses[f"dmd2/{dname}"] = train_dmd2(
            teacher, sample, cfg["dmd_steps"], cfg["batch"], cfg["dmd_lr"], 3, cfg["width"],
            cfg["depth"],
        )  # fmt: skip
        t_noise = jnp.full((noise.shape[0],), dmd.generator_times()[0])
        one = sliced_wasserstein(np.asarray(_denoise(dmd.generator, noise, t_noise, y)), ref)
        swd[f"dmd2/{dname}"] = {"1 step": one, "2 step": None, "4 step": None,
                                "16 step": None, "train_s": round(time.time() - t0, 1)}  # fmt: skip
        ratio[dname] = one / heun32[dname]
        print(f"{'dmd2':>10s} {dname:>12s}  {one:6.3f}  (teacher Heun-32 {heun32[dname]:.3f}, "
              f"ratio {ratio[dname]:.2f})", flush=True)  # fmt: skip
    result = {
        "benchmark": "flowmaps_2d",
        "metric": "sliced Wasserstein-1 to fresh targets (lower is better) at 1/2/4/16 steps",
        "device": str(jax.devices()[0].device_kind),
        "jax_version": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "config": {k: v for k, v in cfg.items() if k != "datasets"},
        "datasets": ",".join(cfg["datasets"]),
        "swd": swd,
        "floor": floors,
        "teacher_heun32": heun32,
        "dmd2_over_heun32": ratio,
        "final_loss": losses,
        "seconds": round(time.time() - t_start, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flowmaps_2d.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
