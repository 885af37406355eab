"""Self Forcing through the trainer's multi-tree step: a tiny causal VideoDiT generator (SiT
under Diffusion Forcing) with its fake score and frozen teacher; jitted steps run with finite
losses, the generator (every 2nd step) and critic (every step) move, the teacher stays bit-exact."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nnx_backbones import VideoDiT
from nnx_interfaces import DiffusionForcing, SelfForcing, SiTInterface
from nnx_train import state as state_lib
from nnx_train import step as step_lib


def tiny_self_forcing() -> SelfForcing:
    net = VideoDiT(
        input_size=4, patch_size=2, in_channels=2, hidden_size=32, depth=1, num_heads=2,
        num_frames=3, num_classes=3, rngs=nnx.Rngs(0),
    )  # fmt: skip
    rngs = lambda i: nnx.Rngs(0, time=10 * i + 1, noise=10 * i + 2)  # noqa: E731

    def sit(n, i):
        return SiTInterface(n, "uniform", t_shift_base=None, rngs=rngs(i))

    return SelfForcing(
        DiffusionForcing(sit(net, 0)),
        DiffusionForcing(sit(nnx.clone(net), 1), noise_levels="shared"),
        DiffusionForcing(sit(nnx.clone(net), 2)),
        generator_steps=2,
        fake_updates=2,
        guidance=1.5,
        null_label=3,
    )


def test_self_forcing_multi_tree_steps():
    sf = tiny_self_forcing()
    graphdef, params, rng, other, frozen = state_lib.split_module(sf)
    opts = {"generator": optax.adam(1e-3), "critic": optax.adam(1e-3)}
    state = step_lib.init_state(params, rng, other, opts, frozen=frozen)
    trees = [
        step_lib.TreeStep(t.tree, opts[t.tree], lambda c: 0.0, loss=t.loss, every=t.every)
        for t in sf.trained_trees()
    ]
    step = jax.jit(step_lib.make_multi_train_step(graphdef, state_lib.key_template(rng), trees))
    batch = {"x": jnp.zeros((2, 3, 4, 4, 2)), "y": jnp.asarray([0, 2])}
    teacher0 = jax.tree.map(np.asarray, state["frozen"])
    gen0 = jax.tree.map(np.asarray, state["params"]["generator"])
    for s in range(3):
        state, metrics = step(state, batch)
        assert bool(metrics["finite"]) and np.isfinite(metrics["critic/loss"]), s
        if s % 2 == 0:
            assert np.isfinite(metrics["generator/loss"]), s
    assert {k: int(v) for k, v in state["count"].items()} == {"generator": 2, "critic": 3}
    for a, b in zip(jax.tree.leaves(state["frozen"]), jax.tree.leaves(teacher0), strict=True):
        assert np.array_equal(np.asarray(a), b)
    moved = [
        not np.array_equal(np.asarray(a), b)
        for a, b in zip(
            jax.tree.leaves(state["params"]["generator"]), jax.tree.leaves(gen0), strict=True
        )
    ]
    assert any(moved)
    assert set(state["opt_state"]) == {"generator", "critic"} and "teacher" not in state["params"]
