"""The `Interfaces` contract for every interface, on a tiny labelled MLP and 2-D Gaussian data:
`nnx.jit` + `nnx.value_and_grad` of `loss`, gradients reaching every parameter, the documented
aux keys, fresh random draws per step, and a loss that decreases under SGD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.mlp import MLP
from nnx_interfaces.ddpm import DDPMInterface
from nnx_interfaces.edm import EDMInterface
from nnx_interfaces.meanflow import MeanFlowInterface
from nnx_interfaces.sit import SiTInterface

MEAN, STD = jnp.array([1.0, -0.5]), 0.25


def _mlp(**kw):
    return MLP(
        (2,),
        width=16,
        depth=2,
        num_classes=3,
        rngs=nnx.Rngs(0, time=1, noise=2, label_dropout=3),
        **kw,
    )


MAKERS = {
    "sit": lambda: SiTInterface(_mlp(label_dropout=0.1), "logitnormal", t_shift_base=None),
    "edm": lambda: EDMInterface(_mlp(label_dropout=0.1)),
    "ddpm_v_cosine": lambda: DDPMInterface(
        _mlp(label_dropout=0.1), beta_schedule="cosine", prediction="v"
    ),
    "meanflow": lambda: MeanFlowInterface(
        _mlp(use_r=True),
        "logitnormal",
        t_mu=-0.4,
        t_shift_base=None,
        guidance_scale=1.5,
        guidance_mixture_ratio=0.2,
        cond_drop_ratio=0.1,
    ),
}
AUX_KEYS = {"loss", "mse", "per_example", "t"}


def _train(itf, metric: str, steps: int = 300, lr: float = 0.01):
    """SGD with momentum inside one `jax.jit` (`lax.scan` over split NNX state).

    Returns per-step outputs: loss, aux['loss'], aux[metric], the first four drawn times, and the
    max |gradient| of every parameter leaf.
    """
    graphdef, state = nnx.split(itf)

    def body(carry, key):
        state, mom = carry
        model = nnx.merge(graphdef, state)
        kx, ky = jax.random.split(key)
        x = MEAN + STD * jax.random.normal(kx, (64, 2))
        y = jax.random.randint(ky, (64,), 0, 3)
        (loss, aux), grads = nnx.value_and_grad(
            lambda m: m.loss(x, y=y, return_aux=True), has_aux=True
        )(model)
        assert set(aux) >= AUX_KEYS, set(aux)  # static: checked while tracing
        assert aux["per_example"].shape == (64,) and aux["t"].shape == (64,)
        mom = jax.tree.map(lambda m, g: 0.9 * m + g, mom, grads)
        params = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(lambda p, m: p - lr * m, params, mom))
        out = {
            "loss": loss,
            "aux_loss": aux["loss"],
            "metric": aux[metric],
            "t4": aux["t"][:4],
            "gmax": jax.tree.map(lambda g: jnp.max(jnp.abs(g)), grads),
        }
        return (nnx.state(model), mom), out

    @jax.jit
    def run(state):
        mom = jax.tree.map(jnp.zeros_like, nnx.state(nnx.merge(graphdef, state), nnx.Param))
        keys = jax.random.split(jax.random.key(0), steps)
        (state, _), outs = jax.lax.scan(body, (state, mom), keys)
        return state, outs

    state, outs = run(state)
    nnx.update(itf, state)
    return outs


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_jit_grad_aux_and_tiny_mlp_training(name):
    # MeanFlow's adaptive loss is ≈ 1 by design, so its unweighted `mse` is tracked instead.
    outs = _train(MAKERS[name](), metric="mse" if name == "meanflow" else "loss")
    assert bool(jnp.all(jnp.isfinite(outs["loss"])))
    np.testing.assert_allclose(outs["aux_loss"], outs["loss"])
    # Every trainable parameter gets a gradient (the null-label row may be untouched).
    for path, g in jax.tree_util.tree_leaves_with_path(outs["gmax"]):
        if "embedding_table" not in jax.tree_util.keystr(path):
            assert float(g[0]) > 0, jax.tree_util.keystr(path)
    # Keys come from the streams: consecutive steps draw different times.
    t4 = np.asarray(outs["t4"])
    assert not np.any(np.all(t4[1:] == t4[:-1], axis=1))
    # The error falls (first vs last 40 steps, averaged to beat minibatch noise).
    history = np.asarray(outs["metric"])
    first, last = history[:40].mean(), history[-40:].mean()
    assert last < 0.85 * first, (first, last)
