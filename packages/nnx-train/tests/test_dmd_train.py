"""DMD / DMD2 through the trainer's multi-tree step.

- A Gaussian teacher N(μ, s²) and an affine generator G(z) = a·z + b with a Gaussian fake score
  (all closed form, `nnx_interfaces.gaussian_models`): the jitted DMD step (scanned) drives the
  generator to the data mean and std, 1-D and 2-D; TTUR counts (generator every 5th step); the
  teacher never changes (bit-exact) and has no optimizer state.
- A tiny DMD2 (SiT + MLP, 2-step generator with backward simulation, CFG, GAN head) trained by
  `train` (per-tree optimizers and EMAs), SIGKILLed after step 5 in a real subprocess, resumes
  bit-identically to an uninterrupted run.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import nnx_train_testlib as T
import numpy as np
import optax
import pytest
from flax import nnx

from nnx_interfaces.dmd import DMD
from nnx_interfaces.gaussian_models import AffineGenerator, GaussianScore
from nnx_train import state as state_lib
from nnx_train import step as step_lib


def gaussian_dmd(mu, s, fake_updates=5) -> DMD:
    d = len(mu)
    r = lambda i: nnx.Rngs(time=10 * i, noise=10 * i + 1)  # noqa: E731
    return DMD(
        AffineGenerator(np.ones(d), np.zeros(d), rngs=r(0)),
        GaussianScore(np.zeros(d), np.ones(d), rngs=r(1)),  # the fake starts at the generator's
        GaussianScore(mu, s, rngs=r(2)),
        fake_updates=fake_updates,
    )


@pytest.mark.parametrize("mu, s", [([1.5], [0.5]), ([1.0, -2.0], [0.4, 1.5])])
def test_affine_generator_converges_to_the_data(mu, s):
    dmd = gaussian_dmd(np.asarray(mu), np.asarray(s))
    graphdef, params, rng, other, frozen = state_lib.split_module(dmd)
    steps = 3000
    sched = optax.cosine_decay_schedule(3e-2, steps // 5)
    opts = {"generator": optax.adam(sched), "critic": optax.adam(1e-1)}
    state = step_lib.init_state(params, rng, other, opts, frozen=frozen)
    trees = [
        step_lib.TreeStep(t.tree, opts[t.tree], lambda c: 0.0, loss=t.loss, every=t.every)
        for t in dmd.trained_trees()
    ]
    step = step_lib.make_multi_train_step(graphdef, state_lib.key_template(rng), trees)
    batch = {"x": jnp.zeros((64, len(mu)))}  # DMD never reads the data (no GAN here)

    @jax.jit
    def run(state):
        return jax.lax.scan(lambda st, _: (step(st, batch)[0], None), state, None, steps)[0]

    teacher0 = jax.tree.map(np.asarray, state["frozen"])
    out = run(state)
    gen = out["params"]["generator"]["network"]
    np.testing.assert_allclose(np.abs(gen["a"]), s, atol=0.05)
    np.testing.assert_allclose(gen["b"], mu, atol=0.05)
    assert {k: int(v) for k, v in out["count"].items()} == {"generator": 600, "critic": 3000}
    for a, b in zip(jax.tree.leaves(out["frozen"]), jax.tree.leaves(teacher0), strict=True):
        assert np.array_equal(np.asarray(a), b)
    assert set(out["opt_state"]) == {"generator", "critic"} and "teacher" not in out["params"]
    # the fake score followed the generator from N(0, 1) (loosely: its x-prediction loss is
    # flat in the std at large t, and its last steps are noisy)
    fake = out["params"]["critic"]["fake"]["network"]
    np.testing.assert_allclose(np.exp(fake["log_std"]), np.abs(gen["a"]), atol=0.25)
    np.testing.assert_allclose(fake["mean"], gen["b"], atol=0.25)


LIB = str(Path(T.__file__))


def dmd2_config(workdir: str):
    cfg = T.tiny_config(workdir, **{"posthoc_ema.stds": (), "log.every_steps": 1})
    cfg.interface = type(cfg.interface)(
        {"name": "tiny_dmd2", "generator_steps": 2, "fake_updates": 2, "guidance": 1.5}
    )
    cfg.trees = type(cfg.trees)(
        {"generator": {"optimizer": {"lr": 2e-3}, "ema": {"decays": (0.9,)}},
         "critic": {"optimizer": {"lr": 5e-3}, "ema": {"decays": ()}}}
    )  # fmt: skip
    return cfg


@pytest.mark.slow
def test_dmd2_run_killed_and_resumed_is_bit_identical(tmp_path):
    cache = str(tmp_path / "cache")
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

    def run(cfg, out, mode, at):
        cmd = [sys.executable, LIB, cfg.to_json(), str(out), mode, str(at)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

    ref = run(dmd2_config(str(tmp_path / "ref")), tmp_path / "ref.npz", "none", -1)
    assert ref.returncode == 0, ref.stderr[-3000:]
    cfg = dmd2_config(str(tmp_path / "run"))
    killed = run(cfg, tmp_path / "b.npz", "kill", 5)
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run(cfg, tmp_path / "c.npz", "none", -1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = dict(np.load(tmp_path / "ref.npz")), dict(np.load(tmp_path / "c.npz"))
    assert int(got.pop("step")) == 6 and int(want.pop("step")) == 6
    for k in ("preempted", "loss"):
        got.pop(k), want.pop(k)
    assert got.keys() == want.keys() and any("head" in k for k in got)
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    # the generator and the fake score both start as copies of the teacher and train apart
    gen = [k for k in got if k.startswith("['generator']['network']")]
    moved = [
        not np.array_equal(got[k], got[k.replace("['generator']", "['critic']['fake']", 1)])
        for k in gen
    ]
    assert gen and any(moved)
