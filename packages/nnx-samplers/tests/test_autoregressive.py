"""Autoregressive KV-cache rollout and Diffusion-Forcing noise-matrix sampling.

A tiny random causal VideoDiT: the cached rollout equals the full-sequence forward on the
"autoregressive" noise matrix (and the full forward with `window=` past the training length).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones import VideoDiT
from nnx_interfaces import DiffusionForcing, SiTInterface
from nnx_samplers import (
    Autoregressive,
    ClassifierFreeGuidance,
    DiffusionForcingSampler,
    Euler,
    Heun,
)

KW = dict(input_size=8, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=4)


def _randomise(net, seed=0):
    """Perturb every parameter (adaLN-Zero starts as the identity, which would hide bugs)."""
    state = nnx.state(net, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        a + 0.2 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)
    ]
    nnx.update(net, jax.tree.unflatten(tree, leaves))
    return net


@pytest.fixture(scope="module")
def net():
    return _randomise(VideoDiT(num_frames=4, num_classes=5, rngs=nnx.Rngs(0), **KW))


@pytest.fixture(scope="module")
def sit(net):
    return DiffusionForcing(SiTInterface(net, rngs=nnx.Rngs(0)))


def _noise(frames=4, b=2, seed=1):
    return jax.random.normal(jax.random.key(seed), (b, frames, 8, 8, 3))


Y = jnp.array([1, 3])


@pytest.mark.parametrize("per_frame", [Euler(4), Heun(3)], ids=["euler", "heun"])
@pytest.mark.parametrize("cfg", [None, ClassifierFreeGuidance(2.5)], ids=["plain", "cfg"])
def test_cached_rollout_equals_the_autoregressive_noise_matrix(sit, per_frame, cfg):
    x0 = _noise()
    ar = Autoregressive(per_frame).sample(0, sit, x0, y=Y, guidance=cfg)
    update = type(per_frame).__name__.lower()
    full = DiffusionForcingSampler(per_frame.num_steps, matrix="autoregressive", update=update)
    ref = full.sample(0, sit, x0, y=Y, guidance=cfg)
    assert ar.x.shape == x0.shape
    np.testing.assert_allclose(ar.x, ref.x, atol=1e-5, rtol=0)
    n = per_frame.nfe(sit)
    assert ar.nfe == 4 * n + 4  # per frame: the sampler's evaluations + one push
    assert ref.nfe == 4 * n  # one (Heun: two) full-sequence calls per matrix row, 4·N rows
