"""The sampler API on real interfaces (SiT + MLP, MeanFlow and DDPM with oracle networks), NFE
counted at run time, determinism, a sharded batch on the 8-device mesh, and error messages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nnx_backbones.mlp import MLP
from nnx_interfaces.base import TimeDomain
from nnx_interfaces.ddpm import DDPMInterface
from nnx_interfaces.meanflow import MeanFlowInterface
from nnx_interfaces.oracles import GaussianOracle, linear_path
from nnx_interfaces.sit import SiTInterface
from nnx_samplers import (
    DDIM,
    ClassifierFreeGuidance,
    DPMSolverPP,
    Euler,
    EulerMaruyama,
    FunctionModel,
    Heun,
    Jump,
    SamplerConfigError,
)

SIT = TimeDomain(1.0, 0.0)


def test_sit_interface_with_mlp_matches_a_python_loop_with_cfg():
    net = MLP((4,), width=32, depth=1, num_classes=3, rngs=nnx.Rngs(0, time=1, noise=2))
    sit = SiTInterface(net, "uniform", t_shift_base=None)
    x0 = jax.random.normal(jax.random.key(0), (2, 4))
    y = jnp.array([0, 2])
    w, n = 2.5, 3
    res = Euler(n).sample(0, sit, x0, y=y, guidance=ClassifierFreeGuidance(w))  # null = 3

    @nnx.jit
    def step(sit, x, t, t_next):  # two separate calls here; the sampler batches them into one
        tb = jnp.full((2,), t)
        c, u = sit.pred(x, tb, y=y), sit.pred(x, tb, y=jnp.full((2,), 3))
        return x + (t_next - t) * (u + w * (c - u))

    x = x0
    for t, t_next in zip(res.times[:-1], res.times[1:], strict=True):
        x = step(sit, x, t, t_next)
    np.testing.assert_allclose(res.x, x, rtol=1e-5, atol=1e-5)
    assert res.nfe == n


class _MeanFlowOracle(nnx.Module):
    """A two-time 'network' returning the exact average velocity; receives r_in = t − r."""

    def __init__(self, oracle):
        self.oracle, self.rngs = oracle, nnx.Rngs(0)

    def __call__(self, x, t, *, r=None, y=None, train=False):
        return self.oracle.average_velocity(x, t, t - r)


def test_meanflow_interface_one_step_jump_with_an_oracle_network_is_exact():
    o = GaussianOracle(jnp.array([0.7, -1.3]), 0.4, linear_path)
    mf = MeanFlowInterface(_MeanFlowOracle(o), "uniform", t_shift_base=None)
    x0 = jax.random.normal(jax.random.key(1), (8, 2))
    res = Jump(1).sample(0, mf, x0)
    np.testing.assert_allclose(res.x, o.ode_map(x0, jnp.ones(8), jnp.zeros(8)), atol=1e-5)


class _Zero(nnx.Module):
    def __init__(self):
        self.rngs = nnx.Rngs(0)

    def __call__(self, x, t, *, r=None, y=None, train=False):
        return jnp.zeros_like(x)


def test_ddim_on_the_discrete_ddpm_interface():
    ddpm = DDPMInterface(_Zero(), num_steps=100)
    x0 = jax.random.normal(jax.random.key(2), (4, 3))
    res = DDIM(5).sample(0, ddpm, x0)
    # ε̂ ≡ 0: x̂ = x/α, so each DDIM step is x ← α_{i+1}/α_i·x and x_N = x_0·α(t_N)/α(t_0)
    a, _ = ddpm.alpha_sigma(jnp.asarray(res.times[[0, -1]], jnp.float32))
    np.testing.assert_allclose(res.x, x0 * a[1] / a[0], rtol=1e-4)
    np.testing.assert_allclose(res.times, [1.0, 0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-12)
    assert DDIM(200).grid(ddpm)[-2] == ddpm.time_domain.last_eval  # eps = 1/T honoured


def _counting_model(td, **kw):
    calls = []

    def v(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return -x

    return FunctionModel(td, velocity=v, **kw), calls


@pytest.mark.parametrize(
    ("sampler", "td", "path"),
    [
        (Heun(4), SIT, False),
        (Heun(4), TimeDomain(1.0, 0.0, eps=0.01), False),
        (EulerMaruyama(4), SIT, True),
        (DPMSolverPP(4), SIT, True),
    ],
)
def test_reported_nfe_equals_model_calls_at_run_time(sampler, td, path):
    m, calls = _counting_model(td, alpha_sigma=linear_path if path else None)
    res = sampler.sample(0, m, jnp.ones((2, 2)))
    jax.block_until_ready(res.x)
    jax.effects_barrier()
    assert len(calls) == res.nfe == sampler.nfe(m)


def test_seeded_determinism_sharded_batch_and_trajectory():
    o = GaussianOracle(0.5, 0.4, linear_path)
    m = FunctionModel(SIT, velocity=o.velocity, alpha_sigma=linear_path)
    x0 = jax.random.normal(jax.random.key(3), (8, 4))
    s = EulerMaruyama(6)
    a = s.sample(7, m, x0, return_trajectory=True)
    run = s.bind(m)  # (the same compiled program for every call below)
    np.testing.assert_array_equal(a.x, run(7, x0, return_trajectory=True).x)
    b, b2 = (run(nnx.Rngs(sample=1), x0, return_trajectory=True).x for _ in range(2))
    np.testing.assert_array_equal(b, b2)  # a fresh Rngs(sample=1) draws the same key
    assert not np.allclose(a.x, run(8, x0, return_trajectory=True).x)
    assert a.trajectory.shape == (7, 8, 4)
    np.testing.assert_array_equal(a.trajectory[0], x0)
    np.testing.assert_array_equal(a.trajectory[-1], a.x)
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    x_sharded = jax.device_put(x0, NamedSharding(mesh, PartitionSpec("data")))
    c = s.sample(7, m, x_sharded, return_trajectory=True)
    np.testing.assert_allclose(c.x, a.x, rtol=1e-6, atol=1e-6)
    assert len(c.x.sharding.device_set) == 8


def test_errors_name_what_is_wrong():
    with pytest.raises(SamplerConfigError, match=r"Interfaces or an nnx_samplers\.FunctionModel"):
        Euler(2).sample(0, lambda x, t: x, jnp.ones((1, 1)))
    with pytest.raises(SamplerConfigError, match="alpha_sigma"):
        DPMSolverPP(2).sample(0, FunctionModel(SIT, velocity=lambda x, t: x), jnp.ones((1, 1)))
    with pytest.raises(SamplerConfigError, match="diffusion"):
        EulerMaruyama(2, diffusion="sbdm-ish")
    with pytest.raises(SamplerConfigError, match="num_steps"):
        Heun(0)
    with pytest.raises(SamplerConfigError, match="velocity="):
        FunctionModel(SIT)


@pytest.mark.slow
def test_cfg_split_batching_equals_concat_on_a_dit():
    """The two CFG batchings on a real (tiny) DiT, adaLN-Zero layers given random values so the
    output depends on the label: one 2B call and two B calls sample the same latents."""
    from nnx_backbones.dit import DiT

    net = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4,
              num_classes=10, rngs=nnx.Rngs(0))  # fmt: skip
    graphdef, state = nnx.split(net)

    def fill(v):  # the zero-initialised (adaLN-Zero, final) layers get random values
        if not jnp.issubdtype(v.dtype, jnp.floating) or bool(jnp.any(v)):
            return v
        return 0.1 * jax.random.normal(jax.random.key(1), v.shape)

    state = jax.tree.map(fill, state)
    sit = SiTInterface(nnx.merge(graphdef, state), "uniform", t_shift_base=None)
    x0 = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    y = jnp.array([1, 7])
    out = {
        b: Euler(2).sample(0, sit, x0, y=y, guidance=ClassifierFreeGuidance(4.0, batching=b)).x
        for b in ("concat", "split")
    }
    unguided = Euler(2).sample(0, sit, x0, y=y).x
    assert float(jnp.abs(out["concat"] - unguided).max()) > 1e-3  # guidance changes the samples
    np.testing.assert_allclose(out["split"], out["concat"], rtol=1e-5, atol=1e-5)
