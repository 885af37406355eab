"""Tensor and context parallelism on 8 simulated CPU devices, against one device.

Model level (compiled once per case, module-scoped): a tiny DiT, LightningDiT (2-D RoPE, qk-norm,
SwiGLU) and LightningDDT, parameters sharded by `nnx_train.sharding.param_specs` (Megatron tensor
rules + FSDP), the batch over data × fsdp, traced under `jax.set_mesh`: forward output, loss and
gradients equal the single-device ones (f32, 1e-5 relative); per-device parameter bytes from the
compiled memory analysis scale as 1/(tensor · fsdp); the HLO has one all-reduce per block half
in the forward pass, no all-gather of a whole tensor-parallel weight, and (ring attention) no
all-gather of the whole token sequence. Trainer level: 3 train steps on data 2 × tensor 2 ×
context 2 equal one device, and a SIGKILL + resume of that sharded run is bit-identical.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import nnx_train_testlib as T
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from nnx_backbones.ddt import LightningDDT
from nnx_backbones.dit import DiT
from nnx_backbones.lightning_dit import LightningDiT
from nnx_train import sharding, trainer
from nnx_train.collectives import collectives, counts, over_axis
from nnx_train.errors import ConfigError, ShardingError

D, HEADS, DEPTH, GRID, BATCH = 64, 4, 1, (8, 4), 8
TOKENS = GRID[0] * GRID[1]
COMMON = dict(input_size=GRID, patch_size=1, in_channels=4, num_classes=3, mlp_ratio=3.0)
MODELS = {
    "dit": lambda impl, depth=DEPTH: DiT(hidden_size=D, depth=depth, num_heads=HEADS, **COMMON,
                            attn_implementation=impl, rngs=nnx.Rngs(0)),
    "lightning": lambda impl: LightningDiT(hidden_size=D, depth=DEPTH, num_heads=HEADS,
                                           qk_norm="rms", **COMMON, attn_implementation=impl,
                                           rngs=nnx.Rngs(0)),
    "ddt": lambda impl: LightningDDT(hidden_size=(D, D), depth=(1, 1), num_heads=(HEADS, HEADS),
                                     **COMMON, attn_implementation=impl, rngs=nnx.Rngs(0)),
}  # fmt: skip
# (model, mesh sizes, attention): each strategy and combinations of them.
CASES = {
    "dit-data2-tensor2-context2-ring": ("dit", dict(data=2, tensor=2, context=2), "ring"),
    "dit-fsdp4-tensor2": ("dit", dict(data=1, fsdp=4, tensor=2), None),
    "lightning-data2-tensor2-context2-ulysses": (
        "lightning", dict(data=2, tensor=2, context=2), "ulysses"),
    "ddt-fsdp2-tensor2-context2-ring": ("ddt", dict(data=1, fsdp=2, tensor=2, context=2), "ring"),
}  # fmt: skip


def _inputs():
    keys = jax.random.split(jax.random.key(1), 2)
    x = jax.random.normal(keys[0], (BATCH, *GRID, 4))
    t = jax.random.uniform(keys[1], (BATCH,))
    return x, t, jnp.arange(BATCH) % 3


def _model(name: str, impl, **kw):
    """The network with its zero-initialised (adaLN-Zero) weights made random, so that every
    parameter gets a gradient."""
    model = MODELS[name](impl, **kw)
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param) and not np.any(np.asarray(var[...])):
            var.set_value(0.2 * jax.random.normal(jax.random.key(len(path)), var.shape))
    return model


def _compile(name: str, sizes: dict | None, impl):
    """(forward output, loss, grads), the compiled value-and-grad and the parameter specs."""
    graphdef, params, rest = nnx.split(_model(name, impl), nnx.Param, ...)
    params = nnx.to_pure_dict(params)

    def loss(params, x, t, y):
        out = nnx.merge(graphdef, params, rest)(x, t, y=y)
        return jnp.mean((out - x) ** 2), out

    fn = jax.value_and_grad(loss, has_aux=True)
    args = (params, *_inputs())
    if sizes is None:
        compiled = jax.jit(fn).lower(*args).compile()
        return compiled(*args), compiled, None
    mesh = sharding.build_mesh(**sizes)
    specs = sharding.param_specs(params, mesh, "fsdp", min_size=1)
    p_sh, b_sh = sharding.named(mesh, specs), sharding.batch_sharding(mesh)
    with jax.set_mesh(mesh):
        jitted = jax.jit(fn, in_shardings=(p_sh, b_sh, b_sh, b_sh), out_shardings=(None, p_sh))
        compiled = jitted.lower(*args).compile()
    return compiled(*args), compiled, specs


@pytest.fixture(scope="module")
def compiled_cases():
    refs = {name: _compile(name, None, None) for name in {m for m, _, _ in CASES.values()}}
    return refs, {case: _compile(*spec) for case, spec in CASES.items()}


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("case", list(CASES))
def test_output_loss_and_grads_equal_one_device(compiled_cases, case):
    refs, runs = compiled_cases
    ((ref_loss, ref_out), ref_grads), _, _ = refs[CASES[case][0]]
    ((loss, out), grads), _, _ = runs[case]
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    assert _rel(out, ref_out) < 1e-5
    flat_ref = jax.tree_util.tree_flatten_with_path(ref_grads)[0]
    flat = jax.tree.leaves(grads)
    assert len(flat) == len(flat_ref)
    for (path, r), g in zip(flat_ref, flat, strict=True):
        assert np.any(np.asarray(r)), f"{jax.tree_util.keystr(path)} got no gradient"
        assert _rel(g, r) < 1e-5, jax.tree_util.keystr(path)


def _arg_bytes(compiled) -> int:
    return compiled.memory_analysis().argument_size_in_bytes


@pytest.mark.parametrize(
    "case, shards", [("dit-data2-tensor2-context2-ring", 2), ("dit-fsdp4-tensor2", 8)]
)
def test_parameter_bytes_per_device_scale_with_tensor_and_fsdp(compiled_cases, case, shards):
    """Compiled memory analysis: the step's argument bytes per device (parameters + the batch
    shard) against one device; every block parameter, the time embedder and the adaLN
    modulations are split over "tensor", only embeddings / norms / biases stay whole."""
    refs, runs = compiled_cases
    ratio = _arg_bytes(runs[case][1]) / _arg_bytes(refs["dit"][1])
    assert ratio == pytest.approx(1 / shards, rel=0.15), ratio


def _shapes(hlo: str, op: str) -> list[tuple[int, ...]]:
    return [s for c in collectives(hlo) if c.op == op for s in c.shapes]


def test_hlo_has_no_gather_of_tp_weights_over_tensor_nor_of_the_sequence(compiled_cases):
    """No all-gather whose groups span the tensor axis returns a parameter-shaped array (FSDP
    gathers run over fsdp only; over tensor only the small [B, k·D] adaLN outputs move), and
    under ring attention no all-gather returns the whole token axis."""
    refs, runs = compiled_cases
    (_, ref_grads), _, _ = refs["dit"]
    param_shapes = {tuple(g.shape) for g in jax.tree.leaves(ref_grads)}
    for case in ("dit-data2-tensor2-context2-ring", "dit-fsdp4-tensor2"):
        _, compiled, _ = runs[case]
        mesh = sharding.build_mesh(**CASES[case][1])
        found = collectives(compiled.as_text())
        over_tensor = [c for c in found if c.op == "all-gather" and over_axis(c, mesh, "tensor")]
        assert over_tensor, case  # the adaLN modulations
        for c in over_tensor:
            assert not set(c.shapes) & param_shapes, (case, c)
        if "ring" in case:  # keys / values move by collective-permute; tokens stay split
            assert counts(found)["collective-permute"] > 0
            gathered = _shapes(compiled.as_text(), "all-gather")
            assert not [s for s in gathered if len(s) >= 3 and s[1] == TOKENS], gathered


def test_forward_has_one_all_reduce_per_block_half():
    """Tensor parallelism alone (data 4 × tensor 2), forward pass: 2 all-reduces per block
    (after the attention projection and after fc2) and 1 for the time embedder, nothing else."""
    graphdef, params, rest = nnx.split(_model("dit", None, depth=2), nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    mesh = sharding.build_mesh(data=4, tensor=2)
    p_sh = sharding.named(mesh, sharding.param_specs(params, mesh, "fsdp"))
    b_sh = sharding.batch_sharding(mesh)

    def forward(params, x, t, y):
        return nnx.merge(graphdef, params, rest)(x, t, y=y)

    inputs = _inputs()
    with jax.set_mesh(mesh):
        fn = jax.jit(forward, in_shardings=(p_sh, b_sh, b_sh, b_sh), out_shardings=b_sh)
        hlo = fn.lower(params, *inputs).compile().as_text()
    reduces = _shapes(hlo, "all-reduce")
    assert len(reduces) == 2 * 2 + 1, reduces
    assert set(reduces) == {(BATCH // 4, D), (BATCH // 4, TOKENS, D)}


def test_model_that_does_not_fit_the_mesh_is_a_clear_error():
    abstract = nnx.eval_shape(lambda: MODELS["dit"](None))
    with pytest.raises(ShardingError, match=r"not divisible by mesh\.tensor = 8"):
        sharding.check_model_parallel(abstract, sharding.build_mesh(data=1, tensor=8))
    with pytest.raises(ShardingError, match="needs a context-parallel attention"):
        sharding.check_model_parallel(abstract, sharding.build_mesh(data=4, context=2))
    ulysses = nnx.eval_shape(lambda: MODELS["dit"]("ulysses"))
    with pytest.raises(ShardingError, match="heads per tensor shard"):
        sharding.check_model_parallel(ulysses, sharding.build_mesh(data=1, tensor=2, context=4))
    odd = nnx.eval_shape(lambda: DiT(input_size=(6, 2), patch_size=1, in_channels=4,
                                     hidden_size=D, depth=1, num_heads=HEADS,
                                     attn_implementation="ring", rngs=nnx.Rngs(0)))  # fmt: skip
    with pytest.raises(ShardingError, match="12 tokens"):
        sharding.check_model_parallel(odd, sharding.build_mesh(data=1, context=8))
    cfg = T.dit_config("/tmp/unused", **{"mesh.context": 2})
    cfg.model.attn_implementation = "folded"
    with pytest.raises(ConfigError, match="'ring' or 'ulysses'"):
        T.trainer.config_lib.validate_config(cfg)


# --- trainer level ---------------------------------------------------------------------------
PARALLEL = {"mesh.data": 2, "mesh.tensor": 2, "mesh.context": 2, "sharding.min_size": 1}
SHORT = {"total_steps": 4, "sample.every_steps": 0, "posthoc_ema.snapshot_every": 0}


def _dit_config(workdir: str, **over):
    cfg = T.dit_config(workdir, **SHORT, **over)
    cfg.model.attn_implementation = "ring"
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parallel")
    cache = str(tmp / "jax_cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    single = trainer.train(_dit_config(str(tmp / "single")), T.make_image_data,
                           devices=jax.devices()[:1])  # fmt: skip
    parallel = trainer.train(_dit_config(str(tmp / "parallel"), **PARALLEL), T.make_image_data)
    return single, parallel, cache


@pytest.mark.slow
def test_train_steps_on_data_tensor_context_mesh_equal_one_device(trained):
    single, parallel, _ = trained
    assert parallel.metrics["loss"] == pytest.approx(single.metrics["loss"], rel=1e-5)
    ref, got = T.params_np(single.state), T.params_np(parallel.state)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    qkv = parallel.state["params"]["network"]["blocks"][0]["attn"]["qkv"]["kernel"]
    assert qkv.sharding.spec == P(None, None, "tensor")
    assert {s.data.shape for s in qkv.addressable_shards} == {(16, 3, 8)}


@pytest.mark.slow
def test_sharded_kill_and_resume_is_bit_identical(trained, tmp_path):
    """SIGKILL after step 3 (checkpoint at step 2), resume to step 4: the parameters equal the
    uninterrupted sharded run bit for bit."""
    _, parallel, cache = trained
    cfg = _dit_config(str(tmp_path / "run"), **PARALLEL)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    lib = str(Path(T.__file__))

    def run(out, mode, at):
        cmd = [sys.executable, lib, cfg.to_json(), str(out), mode, str(at)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

    killed = run(tmp_path / "a.npz", "kill", 3)
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run(tmp_path / "b.npz", "none", -1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = dict(np.load(tmp_path / "b.npz"))
    assert int(out.pop("step")) == 4
    out.pop("preempted"), out.pop("loss")
    expected = T.params_np(parallel.state)
    assert out.keys() == expected.keys()
    for k in expected:
        assert np.array_equal(out[k], expected[k]), f"{k} differs"


def test_vit_layer_tensor_parallel_equals_one_device():
    """The pre-norm ViT layer (DINOv2 / RAE decoder) on data 4 × tensor 2: query/key/value and
    fc1 split by head / unit, output.dense and fc2 by input unit; output and gradients equal."""
    from nnx_backbones.vit import ViTLayer

    graphdef, params, rest = nnx.split(ViTLayer(D, HEADS, rngs=nnx.Rngs(0)), nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    x = jax.random.normal(jax.random.key(3), (BATCH, TOKENS, D))

    def loss(params, x):
        out = nnx.merge(graphdef, params, rest)(x)
        return jnp.mean(out**2), out

    fn = jax.value_and_grad(loss, has_aux=True)
    (ref_loss, ref_out), ref_grads = jax.jit(fn)(params, x)
    mesh = sharding.build_mesh(data=4, tensor=2)
    specs = sharding.param_specs(params, mesh, "fsdp", min_size=1)
    assert specs["attention"]["attention"]["query"]["kernel"] == P(None, "tensor")
    assert specs["attention"]["output"]["dense"]["kernel"] == P("tensor", None)
    p_sh = sharding.named(mesh, specs)
    with jax.set_mesh(mesh):
        jitted = jax.jit(fn, in_shardings=(p_sh, sharding.batch_sharding(mesh)))
        compiled = jitted.lower(params, x).compile()
    (got_loss, out), grads = compiled(params, x)
    assert float(got_loss) == pytest.approx(float(ref_loss), rel=1e-5)
    assert _rel(out, ref_out) < 1e-5
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7)  # the key bias's is ~0 (1e-10)
    found = collectives(compiled.as_text())
    assert not [c for c in found if c.op == "all-gather" and over_axis(c, mesh, "tensor")]


def test_tensor_rules_compose_with_fsdp_and_user_rules_win():
    mesh = sharding.build_mesh(data=1, fsdp=4, tensor=2)

    def k(*shape):
        return {"kernel": np.zeros(shape)}

    tree = {
        "blocks": {"0": {
            "attn": {"qkv": k(64, 3, 64), "proj": k(64, 64)},
            "mlp": {"w12": k(64, 2, 96), "fc2": k(96, 64)},
        }},
        "y_embedder": {"embedding_table": {"embedding": np.zeros((4, 64))}},
    }  # fmt: skip
    specs = sharding.param_specs(tree, mesh, min_size=1)
    blk = specs["blocks"]["0"]
    assert blk["attn"]["qkv"]["kernel"] == P("fsdp", None, "tensor")  # column: heads
    assert blk["attn"]["proj"]["kernel"] == P("tensor", "fsdp")  # row: input units
    assert blk["mlp"]["w12"]["kernel"] == P("fsdp", None, "tensor")
    assert blk["mlp"]["fc2"]["kernel"] == P("tensor", "fsdp")
    assert specs["y_embedder"]["embedding_table"]["embedding"] == P(None, "fsdp")  # FSDP only
    mine = sharding.param_specs(tree, mesh, rules=[("attn/proj/kernel", (None, None))])
    assert mine["blocks"]["0"]["attn"]["proj"]["kernel"] == P(None, None)
    odd = {"attn": {"qkv": k(64, 3, 63)}}
    with pytest.raises(ShardingError, match="tensor parallelism"):
        sharding.param_specs(odd, mesh)
