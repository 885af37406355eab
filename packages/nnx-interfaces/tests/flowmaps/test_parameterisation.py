"""Φ(x, s, t) = x + (t − s)·f: identity on the diagonal, composition at the exact map, JVPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.mlp import MLP
from nnx_interfaces.flowmaps import ProgressiveSelfDistillation
from nnx_interfaces.flowmaps.oracle_nets import ExactNet
from nnx_interfaces.flowmaps.parameterisation import module_jvp
from nnx_interfaces.interpolants import get_interpolant
from nnx_interfaces.oracles import GaussianOracle

MEAN, STD = jnp.array([0.7, -1.3]), 0.6


def _mlp(label_dropout=0.0):
    return MLP(
        (2,), width=16, depth=1, use_r=True, num_classes=3, label_dropout=label_dropout,
        rngs=nnx.Rngs(0, time=1, noise=2, label_dropout=3),
    )  # fmt: skip


def _exact(name):
    interp = get_interpolant(name)
    oracle = GaussianOracle(MEAN, STD, interp.alpha_sigma)
    return ProgressiveSelfDistillation(ExactNet(oracle, "end", rngs=nnx.Rngs(0)), interp), oracle


def test_identity_on_the_diagonal_is_exact():
    itf = ProgressiveSelfDistillation(_mlp())
    x = jax.random.normal(jax.random.key(0), (5, 2))
    t = jnp.array([0.0, 0.2, 0.5, 0.9, 1.0])
    assert bool(jnp.all(itf.flow_map(x, t, t, y=jnp.zeros(5, int)) == x))


@pytest.mark.parametrize("name", ["linear", "trig", "vp"])
def test_exact_map_composes_and_matches_the_oracle(name):
    itf, oracle = _exact(name)
    x = jax.random.normal(jax.random.key(1), (6, 2))
    s, u, t = jnp.full(6, 0.1), jnp.full(6, 0.45), jnp.full(6, 0.9)
    two = itf.flow_map(itf.flow_map(x, s, u), u, t)
    np.testing.assert_allclose(two, itf.flow_map(x, s, t), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(itf.flow_map(x, s, t), oracle.ode_map(x, s, t), rtol=1e-5, atol=1e-5)
    # pred(x, s, t) is the average velocity, pred(x, t) the oracle velocity.
    np.testing.assert_allclose(itf.pred(x, t), oracle.velocity(x, t), rtol=1e-5, atol=1e-6)
    # Φ(·, s, t) transports the marginal at s to the marginal at t (Gaussian: mean and std).
    z = oracle.sample_marginal(jax.random.key(2), jnp.array([0.1]), (20_000, 2))
    out = itf.flow_map(z, jnp.full(20_000, 0.1), jnp.full(20_000, 0.9))
    a9, _ = oracle.alpha_sigma(jnp.array(0.9))
    np.testing.assert_allclose(out.mean(0), a9 * MEAN, atol=0.03)
    np.testing.assert_allclose(
        out.std(0), jnp.sqrt(oracle.marginal_variance(jnp.array([0.9]))).repeat(2), rtol=0.02
    )


def test_exact_map_solves_the_lagrangian_equation():
    itf, oracle = _exact("trig")
    x = jax.random.normal(jax.random.key(3), (4, 2))
    s, t = jnp.full(4, 0.2), jnp.full(4, 0.7)
    phi, dphi = jax.jvp(lambda tt: itf.flow_map(x, s, tt), (t,), (jnp.ones(4),))
    np.testing.assert_allclose(dphi, oracle.velocity(phi, t), rtol=1e-3, atol=1e-4)


def test_module_jvp_matches_central_differences_and_keeps_state():
    itf = ProgressiveSelfDistillation(_mlp(label_dropout=0.5))
    x = jax.random.normal(jax.random.key(4), (3, 2))
    s, t = jnp.array([0.1, 0.3, 0.5]), jnp.array([0.6, 0.7, 0.95])
    tx = jax.random.normal(jax.random.key(5), (3, 2))
    ts = jnp.array([1.0, -0.5, 2.0])

    def phi(m, xx, ss):
        return m.flow_map(xx, ss, t)

    out, tangent = module_jvp(itf, phi, (x, s), (tx, ts))
    h = 3e-4  # time features use frequencies up to 1000 (see nnx_backbones.embeddings)
    fd = (phi(itf, x + h * tx, s + h * ts) - phi(itf, x - h * tx, s - h * ts)) / (2 * h)
    np.testing.assert_allclose(out, phi(itf, x, s), rtol=1e-6)
    np.testing.assert_allclose(tangent, fd, rtol=2e-2, atol=2e-2)

    # With train=True the backbone drops labels inside the jvp: the stream advances outside.
    y = jnp.arange(3) % 3
    before = int(itf.rngs.label_dropout.count[...])
    module_jvp(itf, lambda m, tt: m.flow_map(x, s, tt, y=y, train=True), (t,), (jnp.ones(3),))
    assert int(itf.rngs.label_dropout.count[...]) == before + 1
