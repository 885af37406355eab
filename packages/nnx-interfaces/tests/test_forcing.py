"""Diffusion Forcing against Gaussian frames: exact per-frame velocity/score/denoiser for SiT and
EDM, per-frame training levels, the loss equal to the image loss on the frames, and at the oracle
the irreducible per-frame loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_interfaces import InterfaceConfigError
from nnx_interfaces.edm import EDMInterface
from nnx_interfaces.forcing import DiffusionForcing
from nnx_interfaces.meanflow import MeanFlowInterface
from nnx_interfaces.oracles import GaussianOracle, linear_path, ve_path
from nnx_interfaces.sit import SiTInterface

MEAN, STD, SD = jnp.array([0.3, -0.5]), 0.5, 0.5
LINEAR, VE = GaussianOracle(MEAN, STD, linear_path), GaussianOracle(MEAN, STD, ve_path)
B, T = 16, 4


def _edm_f_star(x_in, c_noise, r, y):
    # EDM's preconditioning inverted by hand, per frame: σ = exp(4·c_noise) `[B, T]`.
    sigma = jnp.exp(4.0 * c_noise)
    s = sigma[..., None]
    x_t = x_in * jnp.sqrt(s**2 + SD**2)
    c_skip, c_out = SD**2 / (s**2 + SD**2), s * SD / jnp.sqrt(s**2 + SD**2)
    return (VE.posterior_mean_x(x_t, sigma) - c_skip * x_t) / c_out


def _sit(oracle_net, delta=0.0, **kw):
    net = oracle_net(lambda x, c, r, y: LINEAR.velocity(x, c), rngs=nnx.Rngs(0), delta=delta)
    return SiTInterface(net, "uniform", t_shift_base=None, rngs=nnx.Rngs(0, time=1, noise=2), **kw)


def _edm(oracle_net, delta=0.0):
    net = oracle_net(_edm_f_star, rngs=nnx.Rngs(0), delta=delta)
    return EDMInterface(net, "lognormal", x_sigma=SD, rngs=nnx.Rngs(0, time=1, noise=2))


@pytest.mark.parametrize("kind", ["sit", "edm"])
def test_per_frame_pred_score_denoise_are_exact(oracle_net, kind):
    base, oracle = (_sit(oracle_net), LINEAR) if kind == "sit" else (_edm(oracle_net), VE)
    df = DiffusionForcing(base)
    k1, k2 = jax.random.split(jax.random.key(0))
    u = jax.random.uniform(k1, (B, T), minval=0.05, maxval=0.95)
    t = u if kind == "sit" else jnp.exp(np.log(0.02) + u * (np.log(40.0) - np.log(0.02)))
    x_t = oracle.sample_marginal(k2, t, (B, T, 2))
    np.testing.assert_allclose(df.pred(x_t, t), oracle.velocity(x_t, t), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(df.score(x_t, t), oracle.score(x_t, t), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(df.denoise(x_t, t), oracle.posterior_mean_x(x_t, t), atol=1e-5)
    for k in range(T):  # frame k alone through the image interface at its own level
        np.testing.assert_allclose(df.pred(x_t, t)[:, k], base.pred(x_t[:, k], t[:, k]), atol=1e-6)
    # A [B] time is every frame at that level.
    np.testing.assert_allclose(df.pred(x_t, t[:, 0]), df.pred(x_t, jnp.repeat(t[:, :1], T, 1)))


@pytest.mark.parametrize("kind", ["sit", "edm"])
def test_loss_equals_the_image_loss_on_the_frames(oracle_net, kind):
    make = _sit if kind == "sit" else _edm
    x = LINEAR.sample_data(jax.random.key(3), (B, T, 2))
    # The image objective on the B·T frames, then the video one at the levels it drew.
    image_loss, aux = make(oracle_net, delta=0.2).loss(x.reshape(B * T, 2), return_aux=True)
    df = DiffusionForcing(make(oracle_net, delta=0.2))
    loss, df_aux = df.loss(x, t=aux["t"].reshape(B, T), return_aux=True)
    np.testing.assert_allclose(loss, image_loss, rtol=1e-6)
    np.testing.assert_allclose(df_aux["per_frame"].reshape(-1), aux["per_example"], rtol=1e-6)
    # All frames at one level (the "shared" mode) is the image loss at that level per frame.
    shared = jnp.repeat(aux["t"][:B, None], T, 1)
    loss_shared = DiffusionForcing(make(oracle_net, delta=0.2)).loss(x, t=shared)
    flat = make(oracle_net, delta=0.2)
    n = flat.sample_n((B * T, 2))
    x_t = flat.sample_x_t(x.reshape(B * T, 2), n, shared.reshape(-1))
    d = flat.precondition(x_t, shared.reshape(-1), flat.network_output(x_t, shared.reshape(-1))[0])
    w = getattr(flat, "loss_weight", jnp.ones_like)(shared.reshape(-1))
    err = flat.mean_flat((d - flat.target(x.reshape(B * T, 2), n, shared.reshape(-1))) ** 2)
    np.testing.assert_allclose(loss_shared, jnp.mean(w * err), rtol=1e-6)


def test_training_levels_are_per_frame_or_per_clip(oracle_net):
    x = LINEAR.sample_data(jax.random.key(4), (B, T, 2))
    _, aux = DiffusionForcing(_sit(oracle_net)).loss(x, return_aux=True)
    assert aux["t"].shape == (B, T) and aux["per_frame"].shape == (B, T)
    assert float(jnp.std(aux["t"], axis=1).min()) > 0  # frames at different levels
    _, aux = DiffusionForcing(_sit(oracle_net), noise_levels="shared").loss(x, return_aux=True)
    np.testing.assert_array_equal(aux["t"], jnp.repeat(aux["t"][:, :1], T, 1))
    # SiT's resolution shift uses one frame's size: 2 entries vs base 8 → s = 1/2.
    sit = SiTInterface(_sit(oracle_net).network, "uniform", t_shift_base=8)
    df = DiffusionForcing(sit)
    t = df.sample_t((4096, T), data_shape=(2,))
    u = t / (0.5 + 0.5 * t)  # invert t = s·u / (1 + (s − 1)·u) with s = 1/2
    assert abs(float(jnp.mean(u)) - 0.5) < 0.02


def test_loss_at_the_oracle_is_the_irreducible_per_frame_loss(oracle_net):
    x = LINEAR.sample_data(jax.random.key(5), (5000, T, 2))
    loss, aux = DiffusionForcing(_sit(oracle_net)).loss(x, return_aux=True)
    expected = jnp.mean(LINEAR.conditional_variance(-1.0, 1.0, aux["t"]))
    np.testing.assert_allclose(loss, expected, rtol=0.02)
    worse = DiffusionForcing(_sit(oracle_net, delta=0.2)).loss(x)
    np.testing.assert_allclose(worse - loss, 0.04, rtol=0.15)


def test_bad_configuration_and_shapes_raise(oracle_net):
    net = _sit(oracle_net).network
    with pytest.raises(InterfaceConfigError, match="supports the losses"):
        DiffusionForcing(MeanFlowInterface(net, rngs=nnx.Rngs(0)))
    with pytest.raises(InterfaceConfigError, match="noise_levels"):
        DiffusionForcing(_sit(oracle_net), noise_levels="pyramid")
    df = DiffusionForcing(_sit(oracle_net))
    with pytest.raises(ValueError, match=r"t: \[B, T\]"):
        df.pred(jnp.zeros((B, T, 2)), jnp.zeros((B, T + 1)))
    with pytest.raises(ValueError, match="videos"):
        df.loss(jnp.zeros((B, 2)))


def test_trains_a_causal_video_dit():
    from nnx_backbones import VideoDiT

    net = VideoDiT(
        input_size=4, num_frames=3, patch_size=2, in_channels=1, hidden_size=16, depth=1,
        num_heads=2, num_classes=3, rngs=nnx.Rngs(0, time=1, noise=2, label_dropout=3),
    )  # fmt: skip
    df = DiffusionForcing(SiTInterface(net, t_shift_base=None))
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 4, 1))
    step = nnx.jit(nnx.value_and_grad(lambda d: d.loss(x, y=jnp.array([0, 2]))))
    loss, grads = step(df)
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(float(loss)) and all(np.isfinite(g).all() for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


def test_levels_per_group_of_frames(oracle_net):
    """frames_per_level=2: one level per 2-frame chunk (independent across chunks); per-frame
    training levels for a network with temporal_patch = 2 are refused."""
    x = LINEAR.sample_data(jax.random.key(6), (B, T, 2))
    _, aux = DiffusionForcing(_sit(oracle_net), frames_per_level=2).loss(x, return_aux=True)
    np.testing.assert_array_equal(aux["t"][:, 0::2], aux["t"][:, 1::2])
    assert float(jnp.std(aux["t"][:, ::2], axis=1).min()) > 0  # chunks at different levels
    # frames_per_level=1 draws what it always drew
    a = DiffusionForcing(_sit(oracle_net)).sample_t((B, T))
    b = DiffusionForcing(_sit(oracle_net), frames_per_level=1).sample_t((B, T))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="multiple of 2"):
        DiffusionForcing(_sit(oracle_net), frames_per_level=2).sample_t((B, 3))
    with pytest.raises(InterfaceConfigError, match="positive integer"):
        DiffusionForcing(_sit(oracle_net), frames_per_level=0)
    net = _sit(oracle_net).network
    net.temporal_patch = 2
    sit = SiTInterface(net, "uniform", t_shift_base=None)
    with pytest.raises(InterfaceConfigError, match="frames_per_level=2"):
        DiffusionForcing(sit).loss(x)  # built (a sampler may use it), but not trained per frame
    shared = DiffusionForcing(sit, noise_levels="shared")
    assert shared.sample_t((B, T)).shape == (B, T)
