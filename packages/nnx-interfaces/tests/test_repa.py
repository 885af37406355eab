"""REPA wrapper: one forward pass, loss = diffusion + λ·(−cos), exact alignment limits, gradients
to projector and backbone, and sampling delegated to the wrapped interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.mlp import MLP
from nnx_interfaces import InterfaceConfigError
from nnx_interfaces.meanflow import MeanFlowInterface
from nnx_interfaces.repa import REPA
from nnx_interfaces.sit import SiTInterface


class CountingMLP(MLP):
    calls = 0

    def __call__(self, *args, **kwargs):
        CountingMLP.calls += 1
        return super().__call__(*args, **kwargs)


def _repa(kind=SiTInterface, seed=0, weight=0.5, **kw):
    net = CountingMLP(
        (2,),
        width=16,
        depth=2,
        use_r=kind is MeanFlowInterface,
        rngs=nnx.Rngs(seed, time=1, noise=2, label_dropout=3),
    )
    itf = kind(net, t_shift_base=None, **kw)
    return REPA(
        itf,
        feature_dim=5,
        repa_loss_weight=weight,
        repa_depth=1,
        proj_dim=32,
        hidden_size=16,
        rngs=nnx.Rngs(7),
    )


def test_total_is_diffusion_plus_weighted_negative_cosine_in_one_forward_pass_with_grads():
    x = jax.random.normal(jax.random.key(0), (8, 2))
    feats = jax.random.normal(jax.random.key(1), (8, 5))
    repa = _repa(weight=0.7)
    CountingMLP.calls = 0
    (total, aux), grads = nnx.jit(
        nnx.value_and_grad(lambda m: m.loss(x, feats, return_aux=True), has_aux=True)
    )(repa)
    assert CountingMLP.calls == 1
    # Gradients reach both the projector and the backbone.
    proj = grads["projector"]["layers"][0]["kernel"][...]
    block = grads["interface"]["network"]["blocks"][0]["fc_in"]["kernel"][...]
    assert float(jnp.abs(proj).max()) > 0 and float(jnp.abs(block).max()) > 0
    assert {"loss", "diffusion_loss", "repa_loss", "mse", "t"} <= set(aux)
    np.testing.assert_allclose(total, aux["diffusion_loss"] + 0.7 * aux["repa_loss"], rtol=1e-6)
    # Independent numpy cosine of the projected hidden tokens.
    z = np.asarray(repa.projector(aux["hidden"]))
    f = np.asarray(feats)
    cos = (z * f).sum(-1) / np.linalg.norm(z, axis=-1) / np.linalg.norm(f, axis=-1)
    np.testing.assert_allclose(aux["repa_loss"], -cos.mean(), rtol=1e-5)
    # The diffusion part is the wrapped interface's loss with the same keys.
    np.testing.assert_allclose(aux["diffusion_loss"], _repa().interface.loss(x), rtol=1e-6)


def test_alignment_limits_are_minus_one_and_plus_one():
    x = jax.random.normal(jax.random.key(0), (8, 2))
    _, aux = _repa().loss(x, jnp.ones((8, 5)), return_aux=True)
    target = _repa().projector(aux["hidden"])  # same seeds: same t, n, hidden
    np.testing.assert_allclose(
        _repa().loss(x, 3.0 * target, return_aux=True)[1]["repa_loss"], -1.0, atol=1e-5
    )
    np.testing.assert_allclose(
        _repa().loss(x, -target, return_aux=True)[1]["repa_loss"], 1.0, atol=1e-5
    )


def test_meanflow_hidden_tokens_come_from_the_jvp_primal(oracle_net):
    # The oracle net's "hidden tokens" are its input x_t: REPA must see exactly x_t.
    net = oracle_net(lambda x, c, h, y: jnp.zeros_like(x), rngs=nnx.Rngs(0))
    itf = MeanFlowInterface(net, "uniform", t_shift_base=None, rngs=nnx.Rngs(0, time=1, noise=2))
    repa = REPA(itf, feature_dim=5, repa_depth=1, proj_dim=8, hidden_size=2, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (8, 2))
    _, aux = repa.loss(x, jnp.ones((8, 5)), return_aux=True)
    itf.rngs = nnx.Rngs(0, time=1, noise=2)
    t, _ = itf.sample_t_r((8,))
    x_t = (1 - t[:, None]) * x + t[:, None] * itf.sample_n((8, 2))
    np.testing.assert_allclose(aux["hidden"], x_t, rtol=1e-6)


def test_sampling_is_delegated_and_bad_features_raise():
    repa = _repa()
    x_t, t = jnp.ones((4, 2)), jnp.full((4,), 0.5)
    np.testing.assert_allclose(repa.pred(x_t, t), repa.interface.pred(x_t, t))
    assert repa.time_domain == repa.interface.time_domain and not repa.two_time
    with pytest.raises(InterfaceConfigError, match="x_feature"):
        repa.loss(x_t, jnp.ones((4, 3, 5)))
    with pytest.raises(InterfaceConfigError, match="hidden_size"):
        REPA(SiTInterface(MLP((2,), width=16, depth=2, rngs=nnx.Rngs(0))), feature_dim=4)
