"""The `Interfaces` contract for every interface: jit, gradients to every parameter, aux keys,
labels through `y=`, and a tiny MLP whose loss decreases on 2-D Gaussian data."""

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


def _mlp(**kw):
    return MLP((2,), width=32, depth=2, rngs=nnx.Rngs(0, time=1, noise=2, label_dropout=3), **kw)


MAKERS = {
    "sit": lambda **kw: SiTInterface(_mlp(**kw), "logitnormal", t_shift_base=None),
    "edm": lambda **kw: EDMInterface(_mlp(**kw)),
    "ddpm_eps": lambda **kw: DDPMInterface(_mlp(**kw), beta_schedule="linear"),
    "ddpm_v": lambda **kw: DDPMInterface(_mlp(**kw), beta_schedule="cosine", prediction="v"),
    "meanflow": lambda **kw: MeanFlowInterface(
        _mlp(use_r=True, **kw), "logitnormal", t_mu=-0.4, t_shift_base=None
    ),
}
AUX_KEYS = {"loss", "mse", "per_example", "t"}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_jit_grad_reaches_every_parameter_and_aux_keys(name):
    itf = MAKERS[name](num_classes=3, label_dropout=0.1)
    x = jax.random.normal(jax.random.key(0), (8, 2))
    y = jnp.arange(8) % 3

    @nnx.jit
    def step(itf, x, y):
        return nnx.value_and_grad(lambda m: m.loss(x, y=y, return_aux=True), has_aux=True)(itf)

    (loss, aux), grads = step(itf, x, y)
    assert loss.shape == () and bool(jnp.isfinite(loss))
    assert set(aux) >= AUX_KEYS, set(aux)
    assert aux["per_example"].shape == (8,) and aux["t"].shape == (8,)
    np.testing.assert_allclose(aux["loss"], loss)
    # Every trainable parameter gets a gradient signal (the null-label row may be untouched).
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        if "embedding_table" in jax.tree_util.keystr(path):
            continue
        assert float(jnp.max(jnp.abs(g))) > 0, jax.tree_util.keystr(path)
    # Keys come from the streams: two calls draw different times.
    (_, aux2), _ = step(itf, x, y)
    assert not np.allclose(aux["t"], aux2["t"])


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_tiny_mlp_loss_decreases(name, train, gaussian_data):
    itf = MAKERS[name]()
    # MeanFlow's adaptive loss is ≈ 1 by design; its unweighted error is what must fall.
    metric = "mse" if name == "meanflow" else "loss"
    first, last = train(itf, gaussian_data, steps=300, lr=0.01, metric=metric)
    assert last < 0.85 * first, (first, last)
