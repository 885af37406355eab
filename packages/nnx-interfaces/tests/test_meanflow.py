"""MeanFlow against the Gaussian oracle: the MeanFlow identity for the JVP target, the JVP vs a
central finite difference, irreducible loss, (t, r) sampling, guidance mixing and label drops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.mlp import MLP
from nnx_interfaces import InterfaceConfigError
from nnx_interfaces.meanflow import MeanFlowInterface
from nnx_interfaces.oracles import GaussianOracle, linear_path

MEAN, STD = jnp.array([0.3, -0.5]), 0.5
ORACLE = GaussianOracle(MEAN, STD, linear_path)


def _f_star(x_in, c_noise, h, y):
    # The backbone sees (t, t − r) with c_in = 1 and c_noise = t: u* = exact average velocity.
    return ORACLE.average_velocity(x_in, c_noise, c_noise - h)


def _mf(net, **kw):
    kw.setdefault("t_shift_base", None)
    return MeanFlowInterface(
        net, kw.pop("dist", "uniform"), rngs=nnx.Rngs(0, time=1, noise=2, label_dropout=3), **kw
    )


def _times(key, b, gap=0.05):
    k1, k2 = jax.random.split(key)
    t = jax.random.uniform(k1, (b,), minval=0.1, maxval=0.95)
    r = t - jax.random.uniform(k2, (b,), minval=gap, maxval=1.0) * (t - 0.02)
    return t, r


def test_oracle_gives_exact_velocity_score_and_average_velocity(oracle_net):
    itf = _mf(oracle_net(_f_star, rngs=nnx.Rngs(0)))
    k1, k2 = jax.random.split(jax.random.key(0))
    t, r = _times(k1, 64)
    x_t = ORACLE.sample_marginal(k2, t, (64, 2))
    np.testing.assert_allclose(itf.pred(x_t, t), ORACLE.velocity(x_t, t), atol=1e-5)
    np.testing.assert_allclose(itf.pred(x_t, t, t), ORACLE.velocity(x_t, t), atol=1e-5)
    np.testing.assert_allclose(itf.score(x_t, t), ORACLE.score(x_t, t), atol=1e-5, rtol=1e-5)
    u = itf.pred(x_t, t, r)
    np.testing.assert_allclose(u, ORACLE.average_velocity(x_t, t, r), atol=1e-5)
    # One jump with the base convention x + (r − t)·pred lands on the exact ODE map.
    np.testing.assert_allclose(x_t + (r - t)[:, None] * u, ORACLE.ode_map(x_t, t, r), atol=1e-5)
    assert itf.two_time


def test_jvp_target_equals_exact_average_velocity_meanflow_identity(oracle_net):
    # With v the exact marginal velocity, v − (t − r)·du/dt = u exactly (MeanFlow Eq. 6).
    # Choose (x, n) with (1 − t)x + t·n = z and n − x = v(z, t).
    itf = _mf(oracle_net(_f_star, rngs=nnx.Rngs(0)))
    k1, k2 = jax.random.split(jax.random.key(1))
    t, r = _times(k1, 64)
    r = r.at[:8].set(t[:8])  # include r = t rows: the target is then the velocity itself
    z = ORACLE.sample_marginal(k2, t, (64, 2))
    v = ORACLE.velocity(z, t)
    x, n = z - t[:, None] * v, z + (1 - t)[:, None] * v
    np.testing.assert_allclose(
        itf.target(x, n, t, r), ORACLE.average_velocity(z, t, r), atol=2e-5, rtol=1e-4
    )


class SmoothNet(nnx.Module):
    """A smooth nonlinear two-time network (tanh features of x, t and the gap input r)."""

    def __init__(self, rngs):
        k = jax.random.split(rngs.params(), 4)
        self.w = nnx.Param(jax.random.normal(k[0], (2, 16)))
        self.a = nnx.Param(jax.random.normal(k[1], (16,)))
        self.b = nnx.Param(jax.random.normal(k[2], (16,)))
        self.o = nnx.Param(0.3 * jax.random.normal(k[3], (16, 2)))
        self.rngs = rngs

    def __call__(self, x, t, *, r=None, y=None, train=False, return_hidden_at=None):
        h = jnp.tanh(x @ self.w[...] + t[:, None] * self.a[...] + r[:, None] * self.b[...])
        return h @ self.o[...]


def test_jvp_matches_central_finite_difference():
    itf = _mf(SmoothNet(nnx.Rngs(0)))
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    t, r = _times(k1, 16)
    z = jax.random.normal(k2, (16, 2))
    v = jax.random.normal(k3, (16, 2))
    u, du_dt, _ = itf.u_and_dudt(z, t, r, v)
    np.testing.assert_allclose(u, itf.pred(z, t, r), atol=1e-6)
    eps = 1e-3
    fd = (itf.pred(z + eps * v, t + eps, r) - itf.pred(z - eps * v, t - eps, r)) / (2 * eps)
    np.testing.assert_allclose(du_dt, fd, atol=2e-3, rtol=2e-3)


def test_loss_at_oracle_is_irreducible_and_perturbations_cost_more(oracle_net):
    # Plain L2 (norm_power = 0). For the oracle, u_tgt = ρ·v + g(z) with ρ = sqrt(v_r / v_t)
    # (∂u/∂z = (1 − ρ)/(t − r)·I), so E‖u − u_tgt‖² = D·ρ²·Var(n − x | x_t).
    x = ORACLE.sample_data(jax.random.key(3), (20_000, 2))

    def mk(d):
        net = oracle_net(_f_star, rngs=nnx.Rngs(0), delta=d)
        return _mf(net, norm_power=0.0, fm_portion=0.5)

    loss, aux = mk(0.0).loss(x, return_aux=True)
    t, r = aux["t"], aux["r"]
    rho2 = ORACLE.marginal_variance(r) / ORACLE.marginal_variance(t)
    expected = jnp.mean(2 * rho2 * ORACLE.conditional_variance(-1.0, 1.0, t))
    np.testing.assert_allclose(loss, expected, rtol=0.03)
    worse = mk(0.2).loss(x)
    assert float(worse) > float(loss)
    # Adaptive weight: per-example loss is sg(1/(‖e‖² + ε)^p)·‖e‖².
    _, aux = _mf(oracle_net(_f_star, rngs=nnx.Rngs(0)), norm_power=0.75).loss(
        x[:64], return_aux=True
    )
    sq = aux["sq_norm"]
    np.testing.assert_allclose(aux["per_example"], sq / (sq + 1e-3) ** 0.75, rtol=1e-5)


def test_sample_t_r_random_fm_fraction():
    itf = _mf(MLP((2,), width=16, depth=2, use_r=True, rngs=nnx.Rngs(0)), fm_portion=0.75)
    t, r = itf.sample_t_r((4000,))
    assert bool(jnp.all(t >= r))
    same = np.asarray(t == r)
    assert same.sum() == 3000
    assert not same[:3000].all()  # positions are random, not the first rows
    # Uniform draws: t = max of two U(0,1) has mean 2/3, the r ≠ t rows have mean 1/3.
    np.testing.assert_allclose(jnp.mean(t), 2 / 3, atol=0.015)
    np.testing.assert_allclose(np.mean(np.asarray(r)[~same]), 1 / 3, atol=0.03)


def _label_net(oracle_net):
    # Output (y + 1) everywhere: the conditional and null velocities are known constants.
    return oracle_net(
        lambda x, c, h, y: jnp.broadcast_to((y + 1.0)[:, None], x.shape),
        rngs=nnx.Rngs(0),
        num_classes=4,
    )


def test_guidance_mixing_inside_the_time_window(oracle_net):
    itf = _mf(
        _label_net(oracle_net),
        guidance_scale=2.5,
        guidance_mixture_ratio=0.3,
        guidance_t_min=0.2,
        guidance_t_max=0.7,
        cond_drop_ratio=0.0,
    )
    t = jnp.array([0.1, 0.2, 0.5, 0.7, 0.9])
    x, n = jnp.zeros((5, 2)), jnp.ones((5, 2))
    y = jnp.array([0, 1, 2, 3, 1])
    v, y_out, neg_y = itf.insta_velocity(x, n, t, y=y)
    # ṽ = ω·v + κ·u(y) + (1 − ω − κ)·u(∅) inside [0.2, 0.7], v = n − x outside.
    inside = (t >= 0.2) & (t <= 0.7)
    expect = jnp.where(inside, 2.5 * 1.0 + 0.3 * (y + 1.0) + (1 - 2.5 - 0.3) * 5.0, 1.0)
    np.testing.assert_allclose(v, jnp.broadcast_to(expect[:, None], (5, 2)), rtol=1e-6)
    np.testing.assert_array_equal(y_out, y)
    np.testing.assert_array_equal(neg_y, jnp.full(5, 4))


def test_cond_drop_uses_null_label_and_plain_velocity(oracle_net):
    itf = _mf(
        _label_net(oracle_net), guidance_scale=3.0, guidance_mixture_ratio=0.0, cond_drop_ratio=0.25
    )
    b = 4000
    x, n, t = jnp.zeros((b, 2)), jnp.ones((b, 2)), jnp.full((b,), 0.5)
    y = jnp.arange(b) % 4
    v, y_out, _ = itf.insta_velocity(x, n, t, y=y)
    dropped = np.asarray(y_out == 4)
    np.testing.assert_allclose(dropped.mean(), 0.25, atol=0.025)
    np.testing.assert_allclose(np.asarray(v)[dropped], 1.0)  # plain n − x
    kept = np.asarray(v)[~dropped][:, 0]
    np.testing.assert_allclose(kept, 3.0 * 1.0 + (1 - 3.0) * 5.0)  # ω·v + (1 − ω)·u(∅)


def test_network_mode_unchanged_by_loss_with_guidance(oracle_net):
    net = _label_net(oracle_net)
    net.drop = nnx.Dropout(0.1, rngs=nnx.Rngs(dropout=0))
    itf = _mf(net, guidance_scale=2.0, guidance_mixture_ratio=0.2)
    x, y = jnp.ones((8, 2)), jnp.arange(8) % 3
    for mode in ("eval", "train"):
        getattr(net, mode)()
        before = net.drop.deterministic
        assert bool(jnp.isfinite(itf.loss(x, y=y, train=True)))
        assert net.drop.deterministic == before


def test_bad_configuration_raises(oracle_net):
    net = oracle_net(_f_star, rngs=nnx.Rngs(0))
    with pytest.raises(InterfaceConfigError, match="fm_portion"):
        MeanFlowInterface(net, fm_portion=1.5)
    with pytest.raises(InterfaceConfigError, match="guidance_t_min"):
        MeanFlowInterface(net, guidance_t_min=0.8, guidance_t_max=0.2)
    with pytest.raises(InterfaceConfigError, match="null label"):
        MeanFlowInterface(net, t_shift_base=None).loss(jnp.ones((4, 2)), y=jnp.zeros(4, int))
