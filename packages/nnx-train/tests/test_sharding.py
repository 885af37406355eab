"""Sharding: mesh and spec rules, and training on 8 simulated CPU devices (FSDP, replicate) and on
2 processes (jax.distributed over 127.0.0.1, gloo) matching a single device / single process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import nnx_train_testlib as T
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from nnx_train import sharding, trainer
from nnx_train.errors import ShardingError


def test_build_mesh_sizes_and_errors():
    mesh = sharding.build_mesh(data=-1, fsdp=2)
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1, "context": 1}
    with pytest.raises(ShardingError, match="needs 6 devices"):
        sharding.build_mesh(data=3, fsdp=2)
    with pytest.raises(ShardingError, match="at most one −1"):
        sharding.build_mesh(data=-1, fsdp=-1)


def test_param_specs_fsdp_largest_divisible_axis_small_replicated_and_rules():
    mesh = sharding.build_mesh(data=1, fsdp=8)
    tree = {
        "big": np.zeros((6, 64)),  # largest axis 64 divisible by 8
        "odd": np.zeros((24, 9)),  # 24 is the largest divisible axis
        "small": np.zeros((8,)),  # below min_size
        "prime": np.zeros((7, 11)),  # nothing divisible
        "attn": {"kernel": np.zeros((16, 32))},
    }
    specs = sharding.param_specs(
        tree, mesh, "fsdp", min_size=16, rules=[("attn/kernel", (None, None))]
    )
    assert specs["big"] == P(None, "fsdp") and specs["odd"] == P("fsdp", None)
    assert (
        specs["small"] == P() and specs["prime"] == P() and specs["attn"]["kernel"] == P(None, None)
    )
    assert sharding.param_specs(tree, mesh, "replicate")["big"] == P()
    with pytest.raises(ShardingError, match="does not divide"):
        sharding.param_specs(tree, mesh, rules=[("prime", ("fsdp", None))])


def test_optimizer_state_follows_parameter_specs():
    mesh = sharding.build_mesh(data=1, fsdp=8)
    params = {"w": np.zeros((8, 4), np.float32), "b": np.zeros((3,), np.float32)}
    specs = sharding.param_specs(params, mesh, min_size=1)
    opt_state = jax.eval_shape(optax.adamw(1e-3).init, params)
    followed = sharding.follow_specs(opt_state, params, specs)
    mu = followed[0].mu
    assert mu["w"] == P("fsdp", None) and mu["b"] == P()
    assert followed[0].count == P()


SMALL = {"total_steps": 3, "log.every_steps": 3, "sharding.min_size": 1, "ema.decays": (0.9,)}
SMALL |= {"posthoc_ema.stds": (), "checkpoint.every_steps": 0}
FSDP = {"mesh.data": 1, "mesh.fsdp": 8}


def _run(tmp, name, devices, **over):
    cfg = T.tiny_config(str(tmp / name), **SMALL, **over)
    return trainer.train(cfg, T.make_data, devices=devices)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharding")
    single = _run(tmp, "single", jax.devices()[:1])
    fsdp = _run(tmp, "fsdp", None, **FSDP)
    return single, fsdp


def test_fsdp_and_replicate_on_8_devices_match_one_device(runs, tmp_path):
    assert jax.device_count() == 8
    single, fsdp = runs
    repl = _run(tmp_path, "repl", None, **{"sharding.strategy": "replicate"})
    ref = T.params_np(single.state)
    for other in (fsdp, repl):
        assert other.metrics["loss"] == pytest.approx(single.metrics["loss"], rel=1e-5)
        got = T.params_np(other.state)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # Each device holds 1/8 of every array that has an axis divisible by 8 (all of them here).
    for leaf in jax.tree.leaves(fsdp.state["params"]) + jax.tree.leaves(fsdp.state["opt_state"]):
        if leaf.ndim and any(d % 8 == 0 for d in leaf.shape):
            sizes = {s.data.size for s in leaf.addressable_shards}
            assert sizes == {leaf.size // 8}, (leaf.shape, sizes)
    for leaf in jax.tree.leaves(repl.state["params"]):
        assert {s.data.size for s in leaf.addressable_shards} == {leaf.size}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_single_process(runs, tmp_path):
    """2 processes × 4 CPU devices (jax.distributed on 127.0.0.1, gloo collectives), each loading
    its half of every batch, against the same FSDP mesh in one process."""
    ref = runs[1]
    port = _free_port()
    cfg = T.tiny_config(str(tmp_path / "multi"), **SMALL, **FSDP)
    cfg.distributed.initialize = True
    cfg.distributed.coordinator_address = f"127.0.0.1:{port}"
    cfg.distributed.num_processes = 2
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    procs = []
    for pid in range(2):
        cfg.distributed.process_id = pid
        out = tmp_path / f"p{pid}.npz"
        cmd = [sys.executable, str(Path(T.__file__)), cfg.to_json(), str(out)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    got = dict(np.load(tmp_path / "p0.npz"))
    assert int(got.pop("step")) == 3
    assert float(got.pop("loss")) == pytest.approx(ref.metrics["loss"], rel=1e-5)
    got.pop("preempted")
    expected = T.params_np(ref.state)
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
