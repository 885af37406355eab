"""Batch entries other than "x" reach the interface loss as keyword arguments (REPA's
`x_feature`), in the plain step, under gradient accumulation and through the sharded trainer.

`FeatureRegress` has a deterministic loss that needs an extra field: mean ‖net(x, ½, y) − f‖²,
with aux `feat_mean` = mean(f); both are compared with a NumPy computation of the same formula."""

import jax
import jax.numpy as jnp
import ml_collections
import nnx_train_testlib as T
import numpy as np
import optax
import pytest
from flax import nnx

from nnx_train import registry, trainer
from nnx_train import state as state_lib
from nnx_train import step as step_lib


class FeatureRegress(T.TinyFlow):
    """loss = mean_b ‖net(x_b, t=½, y_b) − f_b‖² for `x_feature` f: [B, 2] (no random draws)."""

    def loss(self, x, *args, return_aux=False, y=None, x_feature=None, **kwargs):
        t = jnp.full((x.shape[0],), 0.5)
        loss = jnp.mean(self.mean_flat((self.network(x, t, y=y) - x_feature) ** 2))
        return (loss, {"feat_mean": jnp.mean(x_feature)}) if return_aux else loss


registry.register("interface", "feature_regress", FeatureRegress)

FEATURES = np.random.default_rng(3).normal(size=(64, 2)).astype(np.float32)


def _state_and_graph():
    cfg = T.tiny_config("/unused")
    cfg.interface = ml_collections.ConfigDict({"name": "feature_regress"})
    iface = trainer.build_interface(cfg)
    graphdef, params, rng, other, _ = state_lib.split_module(iface)
    opt = optax.sgd(0.1)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": opt.init(params),
        "ema": {},
        "power_ema": {},
        "rng": state_lib.keys_to_data(rng),
        "other": other,
        "guard": step_lib.init_guard(),
    }
    return iface, graphdef, rng, opt, state


@pytest.mark.parametrize("accum", [1, 4])
def test_extra_field_reaches_the_loss(accum):
    iface, graphdef, rng, opt, state = _state_and_graph()
    x, y, f = T.DATA[:8], T.LABELS[:8], FEATURES[:8]
    # NumPy reference: the network's output at t = ½ (same parameters), then the formula.
    out = np.asarray(iface.network(jnp.asarray(x), jnp.full((8,), 0.5), y=jnp.asarray(y)))
    want = np.mean(np.mean((out - f) ** 2, axis=1))
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "x_feature": jnp.asarray(f)}
    fn = step_lib.make_train_step(
        graphdef, state_lib.key_template(rng), opt, lambda s: 0.1, grad_accum=accum
    )
    _, metrics = jax.jit(fn)(state, batch)
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-5)
    assert float(metrics["aux/feat_mean"]) == pytest.approx(f.mean(), rel=1e-5, abs=1e-6)
    # A different feature changes the loss: the field is used, not ignored.
    batch["x_feature"] = batch["x_feature"] + 1.0
    _, metrics2 = jax.jit(fn)(state, batch)
    assert float(metrics2["loss"]) == pytest.approx(np.mean((out - f - 1.0) ** 2), rel=1e-5)


def test_extra_field_through_the_sharded_trainer(tmp_path):
    """8 simulated devices, FSDP, 2 micro-batches: the constant feature 2.0 gives aux 2.0."""

    def make_data(process_index, process_count, local_batch):
        rng = np.random.default_rng(process_index)
        while True:
            idx = rng.integers(0, 64, local_batch)
            yield {
                "x": T.DATA[idx],
                "y": T.LABELS[idx],
                "x_feature": np.full((local_batch, 2), 2.0, np.float32),
            }

    cfg = T.tiny_config(str(tmp_path), **{"train.grad_accum": 2, "checkpoint.every_steps": 0})
    cfg.interface = ml_collections.ConfigDict({"name": "feature_regress"})
    cfg.total_steps = 2
    result = trainer.train(cfg, make_data)
    assert result.step == 2
    assert result.metrics["aux/feat_mean"] == pytest.approx(2.0)
    assert np.isfinite(result.metrics["loss"])
    leaves = jax.tree.leaves(nnx.to_pure_dict(nnx.State(result.state["params"])))
    assert all(np.all(np.isfinite(np.asarray(a))) for a in leaves)


class StepReporter(T.TinyFlow):
    """A loss with a named `step` parameter reports it (sCD's warm-up, flow-map curricula)."""

    def loss(self, x, *args, return_aux=False, y=None, step=-1, **kwargs):
        t = jnp.full((x.shape[0],), 0.5)
        loss = jnp.mean(self.mean_flat(self.network(x, t, y=y) ** 2))
        aux = {"seen_step": jnp.asarray(step, jnp.float32)}
        return (loss, aux) if return_aux else loss


registry.register("interface", "step_reporter", StepReporter)


def test_loss_with_a_step_parameter_gets_the_train_step():
    cfg = T.tiny_config("/unused")
    cfg.interface = ml_collections.ConfigDict({"name": "step_reporter"})
    graphdef, params, rng, other, _ = state_lib.split_module(trainer.build_interface(cfg))
    _, _, _, opt, state = _state_and_graph()
    state = {**state, "params": params, "opt_state": opt.init(params), "other": other}
    batch = {"x": jnp.asarray(T.DATA[:8]), "y": jnp.asarray(T.LABELS[:8])}
    fn = jax.jit(
        step_lib.make_train_step(graphdef, state_lib.key_template(rng), opt, lambda s: 0.1)
    )
    seen = []
    for _ in range(3):
        state, metrics = fn(state, batch)
        seen.append(float(metrics["aux/seen_step"]))
    assert seen == [0.0, 1.0, 2.0]  # the number of completed updates, not the default −1
    with pytest.raises(ValueError, match="'step'"):
        fn(state, {**batch, "step": jnp.zeros((8,))})
