"""Shared test helpers for nnx-interfaces: an oracle backbone (fixture `oracle_net`).

`OracleNet` honours the backbone contract and returns `f_star(x_in, t_in, r, y) + delta`, where
`f_star` is the exact optimal network output written in closed form *in the test* (inverting the
interface's c_in and c_noise by hand), and `delta` a trainable offset used to perturb it.
"""

import jax.numpy as jnp
import pytest
from flax import nnx


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


@pytest.fixture
def oracle_net():
    return OracleNet
