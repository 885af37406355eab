"""Shared test helpers for nnx-interfaces: an oracle backbone and a tiny trainer.

`OracleNet` honours the backbone contract and returns `f_star(x_in, t_in, r, y) + delta`, where
`f_star` is the exact optimal network output written in closed form *in the test* (inverting the
interface's c_in and c_noise by hand), and `delta` a trainable offset used to perturb it.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

MEAN = jnp.array([0.3, -0.5])
STD = 0.5


class OracleNet(nnx.Module):
    """Backbone-contract module computing a fixed function of its inputs plus a learnable offset."""

    def __init__(self, f_star, *, rngs: nnx.Rngs, delta: float = 0.0, num_classes=None):
        self.f_star = f_star
        self.delta = nnx.Param(jnp.asarray(delta, jnp.float32))
        self.rngs = rngs
        self.num_classes = num_classes

    def __call__(self, x, t, *, r=None, y=None, train=False, return_hidden_at=None):
        out = self.f_star(x, t, r, y) + self.delta[...]
        if return_hidden_at is not None:
            return out, x
        return out


def sgd_train(interface, sample_x, *, steps: int, lr: float, metric: str = "loss", **loss_kwargs):
    """SGD with momentum on every nnx.Param of `interface`; returns (loss before, loss after).

    The whole loop runs inside one `jax.jit` (`lax.fori_loop` over split NNX state). The loss is
    measured on a fixed evaluation batch with fixed time/noise keys before and after training,
    so the comparison is not blurred by minibatch noise.
    """
    graphdef, state = nnx.split(interface)

    @jax.jit
    def evaluate(state):
        model = nnx.merge(graphdef, state)
        model.rngs = nnx.Rngs(0, time=1, noise=2, label_dropout=3)
        x = sample_x(jax.random.key(10_000), 1024)
        return model.loss(x, return_aux=True, **loss_kwargs)[1][metric]

    @jax.jit
    def fit(state):
        def body(i, carry):
            state, mom = carry
            model = nnx.merge(graphdef, state)
            x = sample_x(jax.random.fold_in(jax.random.key(0), i), 64)
            _, grads = nnx.value_and_grad(lambda m: m.loss(x, **loss_kwargs))(model)
            mom = jax.tree.map(lambda m, g: 0.9 * m + g, mom, grads)
            params = nnx.state(model, nnx.Param)
            nnx.update(model, jax.tree.map(lambda p, m: p - lr * m, params, mom))
            return nnx.state(model), mom

        mom = jax.tree.map(jnp.zeros_like, nnx.state(nnx.merge(graphdef, state), nnx.Param))
        return jax.lax.fori_loop(0, steps, body, (state, mom))[0]

    first = float(evaluate(state))
    state = fit(state)
    nnx.update(interface, state)
    return first, float(evaluate(state))


@pytest.fixture
def oracle_net():
    return OracleNet


@pytest.fixture
def train():
    return sgd_train


@pytest.fixture
def gaussian_data():
    """`sample(key, batch) -> [batch, 2]` draws of N(MEAN, STD²·I)."""
    return lambda key, b: MEAN + STD * jax.random.normal(key, (b, 2))
