"""Objectives with several trained trees and a frozen teacher (`Interfaces.trained_trees()` /
`frozen_trees()`, the toy `TwoTrees`): the update schedule (each tree changes exactly in its due
steps, per-tree counts), the frozen teacher (bit-exact, no optimizer state, no EMA), the per-tree
non-finite guard, per-tree optimizer / EMA settings, FSDP of every tree (the teacher included)
matching one device, and config errors."""

import jax
import jax.numpy as jnp
import ml_collections
import nnx_train_testlib as T
import numpy as np
import optax
import pytest

from nnx_train import config as config_lib
from nnx_train import state as state_lib
from nnx_train import step as step_lib
from nnx_train import trainer
from nnx_train.errors import ConfigError


def two_tree_config(workdir: str, **overrides) -> ml_collections.ConfigDict:
    cfg = T.tiny_config(workdir, **{"posthoc_ema.stds": (), "ema.decays": (0.9,), **overrides})
    cfg.interface = ml_collections.ConfigDict({"name": "two_trees", "every": 3})
    cfg.trees = ml_collections.ConfigDict(
        {"critic": {"optimizer": {"lr": 0.05, "name": "sgd"}, "ema": {"decays": ()}}}
    )
    return cfg


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def manual_step(cfg):
    """The jitted multi-tree step and its initial state, built by hand (one compile)."""
    iface = trainer.build_interface(cfg)
    graphdef, params, rng, other, frozen = state_lib.split_module(iface)
    opts = {"network": optax.adam(1e-2), "critic": optax.sgd(0.05)}
    state = step_lib.init_state(
        params, rng, other, opts, ema_decays={"network": (0.9,)}, frozen=frozen
    )
    trees = [
        step_lib.TreeStep(t.tree, opts[t.tree], lambda s: 0.1, loss=t.loss, every=t.every)
        for t in iface.trained_trees()
    ]
    fn = step_lib.make_multi_train_step(graphdef, state_lib.key_template(rng), trees)
    return jax.jit(fn), state


def changed(a, b) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b), strict=True))


BATCH = {"x": jnp.asarray(T.DATA[:8]), "y": jnp.asarray(T.LABELS[:8])}


def test_update_schedule_counts_and_frozen_teacher():
    """6 steps: the network (every 3) changes in steps 0 and 3 only, its EMA with it; the
    critic in every step; the teacher never, bit for bit; counts 2 and 6."""
    step, state = manual_step(two_tree_config("/unused"))
    teacher0 = leaves(state["frozen"])
    for s in range(6):
        prev = jax.tree.map(np.asarray, state)
        state, metrics = step(state, BATCH)
        assert changed(state["params"]["network"], prev["params"]["network"]) == (s % 3 == 0)
        assert changed(state["ema"]["network"], prev["ema"]["network"]) == (s % 3 == 0)
        assert changed(state["params"]["critic"], prev["params"]["critic"]), s
        assert np.isfinite(metrics["network/loss"]) == (s % 3 == 0)  # NaN when not due
        assert np.isfinite(metrics["critic/loss"]) and bool(metrics["finite"])
    assert {k: int(v) for k, v in state["count"].items()} == {"network": 2, "critic": 6}
    for a, b in zip(leaves(state["frozen"]), teacher0, strict=True):
        assert np.array_equal(a, b)


def test_nonfinite_update_of_one_tree_is_skipped():
    """A non-finite network loss skips the network's update only; the critic still trains."""
    cfg = two_tree_config("/unused")
    cfg.interface.every = 1
    cfg.interface.blowup = float("inf")
    step, state = manual_step(cfg)
    init = jax.tree.map(np.asarray, state)
    for _ in range(2):
        state, metrics = step(state, BATCH)
    assert not changed(state["params"]["network"], init["params"]["network"])
    assert not changed(state["opt_state"]["network"], init["opt_state"]["network"])
    assert changed(state["params"]["critic"], init["params"]["critic"])
    assert int(state["guard"]["skipped"]) == 2 and int(state["guard"]["streak"]) == 2
    assert not bool(metrics["network/finite"]) and bool(metrics["critic/finite"])


def test_trainer_fsdp_of_every_tree_per_tree_settings_and_one_device_match(tmp_path):
    """Through `train`: FSDP shards the trees and the frozen teacher, and matches one device;
    per-tree optimizer / EMA settings from config.trees; no optimizer state or EMA for the
    teacher; per-tree metrics."""
    over = {"total_steps": 4, "sharding.min_size": 1, "mesh.fsdp": 2, "checkpoint.every_steps": 4}
    fsdp = trainer.train(two_tree_config(str(tmp_path / "fsdp"), **over), T.make_data)
    one = trainer.train(
        two_tree_config(str(tmp_path / "one"), **{**over, "mesh.fsdp": 1}),
        T.make_data,
        devices=jax.devices()[:1],
    )
    st = fsdp.state
    assert "fsdp" in str(st["frozen"]["teacher"]["kernel"].sharding.spec)
    assert "fsdp" in str(st["params"]["critic"]["kernel"].sharding.spec)
    assert any("fsdp" in str(x.sharding.spec) for x in jax.tree.leaves(st["ema"]["network"]))
    for a, b in zip(leaves(st["params"]), leaves(one.state["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert {k: int(v) for k, v in st["count"].items()} == {"network": 2, "critic": 4}
    assert set(st["params"]) == set(st["opt_state"]) == set(st["ema"]) == {"network", "critic"}
    assert list(st["ema"]["network"]) == ["0.9"] and st["ema"]["critic"] == {}
    paths = jax.tree_util.tree_flatten_with_path((st["opt_state"], st["ema"], st["params"]))[0]
    assert not any("teacher" in jax.tree_util.keystr(p) for p, _ in paths)
    # each tree's schedule runs on its own update count (warm-up 2): the critic's 4th update
    # at its peak 0.05 (trees.critic), the network's 2nd (step 3) half-way to 1e-2
    m = one.metrics
    assert m["critic/lr"] == pytest.approx(0.05, rel=1e-6)
    assert m["network/lr"] == pytest.approx(0.005, rel=1e-6)
    assert np.isfinite(m["critic/loss"]) and np.isfinite(m["critic/aux/held"])
    assert "loss" not in m and m["finite"]


def test_config_errors_name_the_trees(tmp_path):
    cfg = two_tree_config(str(tmp_path))
    cfg.trees.generator = ml_collections.ConfigDict({"optimizer": {"lr": 1.0}})
    with pytest.raises(ConfigError, match=r"config.trees names \['generator'\]"):
        trainer.train(cfg, T.make_data, devices=jax.devices()[:1])
    bad = two_tree_config(str(tmp_path))
    bad.trees.critic.optimizer.lrr = 1.0
    bad.trees.critic.optimizer.name = "adamz"
    with pytest.raises(ConfigError, match=r"trees.critic.optimizer.lrr"):
        config_lib.validate_config(bad)
    del bad.trees.critic.optimizer["lrr"]
    with pytest.raises(ConfigError, match=r"trees.critic: optimizer.name = 'adamz'"):
        config_lib.validate_config(bad)
    single = T.tiny_config(str(tmp_path))
    single.trees = ml_collections.ConfigDict({"x": {"ema": {"decays": ()}}})
    with pytest.raises(ConfigError, match="trains one tree"):
        trainer.train(single, T.make_data, devices=jax.devices()[:1])


def test_tree_update_validates_its_schedule():
    from nnx_interfaces.base import TreeUpdate
    from nnx_interfaces.errors import InterfaceConfigError

    with pytest.raises(InterfaceConfigError, match="offset < every"):
        TreeUpdate("g", every=2, offset=2)


def test_per_tree_structural_fields_make_a_checkpoint_incompatible():
    from nnx_train.checkpoint import check_compatible
    from nnx_train.errors import IncompatibleCheckpointError

    stored = two_tree_config("/unused").to_dict()
    lr_only = two_tree_config("/unused")
    lr_only.trees.critic.optimizer.lr = 0.5  # a schedule change: allowed
    check_compatible(stored, lr_only.to_dict())
    other = two_tree_config("/unused")
    other.trees.critic.ema.decays = (0.9,)
    with pytest.raises(IncompatibleCheckpointError, match=r"trees.critic.ema.decays"):
        check_compatible(stored, other.to_dict())
