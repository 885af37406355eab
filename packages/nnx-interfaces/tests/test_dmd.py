"""DMD / DMD2 (`nnx_interfaces.dmd`) against closed forms, with a Gaussian teacher and an affine
generator G(z) = a·z + b (`nnx_interfaces.gaussian_models`).

The KL identity. Data N(μ, diag s²), generator N(b, diag a²), path x_t = α x + σ n. Both diffused
distributions are Gaussian: p_t = N(αμ, α²s² + σ²), p_θ,t = N(αb, α²a² + σ²), so per dimension

    KL_t = ½·[log(v_d / v_g) + (v_g + α²(b − μ)²) / v_d − 1],  v_g = α²a² + σ², v_d = α²s² + σ².

With exact scores, x̂_fake − x̂_real = (σ²/α)(s_fake − s_real) (Tweedie), and
∇_θ KL_t = α·E[(s_fake − s_real)(x_t)·∂G/∂θ] (DMD Eq. 7), so the un-normalised DMD step
E[g·∂G/∂θ]/D with g = x̂_fake − x̂_real equals (1/D)·E_t[(σ_t²/α_t²)·∇_θ KL_t]. Both sides are
evaluated exactly: Gauss–Hermite nodes for z and n (the integrand is quadratic in them) and the
same Gauss–Legendre nodes for t ~ U[t_min, t_max].
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_interfaces.dmd import DMD, dm_direction
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.gaussian_models import AffineGenerator, GaussianScore

MU, S = np.array([1.5, -0.5]), np.array([0.5, 1.2])
A, B = np.array([0.8, 1.4]), np.array([0.3, 0.2])


def make_dmd(dim: int, *, normalize=True, steps=1, t_min=0.1, t_max=0.9, seed=0) -> DMD:
    """Teacher N(μ, s²), generator (a, b), fake exact for the generator: N(b, a²)."""
    r = lambda i: nnx.Rngs(time=seed + 10 * i, noise=seed + 10 * i + 1)  # noqa: E731
    return DMD(
        AffineGenerator(A[:dim], B[:dim], rngs=r(0)),
        GaussianScore(B[:dim], np.abs(A[:dim]), rngs=r(1)),
        GaussianScore(MU[:dim], S[:dim], rngs=r(2)),
        generator_steps=steps,
        normalize=normalize,
        t_min=t_min,
        t_max=t_max,
    )


def generator_grad(dmd: DMD, fn) -> tuple[np.ndarray, np.ndarray]:
    """(∂/∂a, ∂/∂b) of fn(dmd), the generator's parameters only."""
    only = nnx.All(nnx.Param, nnx.PathContains("generator"))
    grads = nnx.grad(fn, argnums=nnx.DiffState(0, only))(dmd)
    net = grads["generator"]["network"]
    return np.asarray(net["a"][...]), np.asarray(net["b"][...])


def gaussian_kl(a, b, alpha, sigma) -> jax.Array:
    """Σ_d KL(N(αb, α²a² + σ²) ‖ N(αμ, α²s² + σ²)) (module docstring)."""
    d = a.shape[0]
    v_g = alpha**2 * a**2 + sigma**2
    v_d = alpha**2 * S[:d] ** 2 + sigma**2
    return jnp.sum(0.5 * (jnp.log(v_d / v_g) + (v_g + alpha**2 * (b - MU[:d]) ** 2) / v_d - 1))


@pytest.mark.parametrize("dim", [1, 2])
def test_dm_gradient_equals_time_weighted_kl_gradient(dim):
    t_min, t_max = 0.1, 0.9
    dmd = make_dmd(dim, normalize=False, t_min=t_min, t_max=t_max)
    gh_x, gh_w = np.polynomial.hermite_e.hermegauss(3)  # E over N(0, 1), exact to degree 5
    gh_w = gh_w / gh_w.sum()
    gl_x, gl_w = np.polynomial.legendre.leggauss(24)
    ts = t_min + (gl_x + 1) / 2 * (t_max - t_min)
    t_w = gl_w / gl_w.sum()
    rows = list(itertools.product(range(3), repeat=2 * dim))
    z = np.array([[gh_x[i] for i in r[:dim]] for r in rows])
    n = np.array([[gh_x[i] for i in r[dim:]] for r in rows])
    w_zn = np.array([np.prod([gh_w[i] for i in r]) for r in rows])
    Z = np.repeat(z, len(ts), 0)
    N = np.repeat(n, len(ts), 0)
    T = np.tile(ts, len(rows))
    W = np.repeat(w_zn, len(ts)) * np.tile(t_w, len(rows))

    def weighted(m: DMD):
        x = m.generator.denoise(jnp.asarray(Z, jnp.float32), jnp.ones(len(Z)))  # G(z)
        per = m.distribution_matching(x, jnp.asarray(T, jnp.float32), jnp.asarray(N, jnp.float32))
        return jnp.sum(jnp.asarray(W, jnp.float32) * per)

    got = generator_grad(dmd, weighted)
    a, b = jnp.asarray(A[:dim], jnp.float64 if jax.config.x64_enabled else jnp.float32), B[:dim]
    kl_grad = jax.grad(gaussian_kl, argnums=(0, 1))
    want = [np.zeros(dim), np.zeros(dim)]
    for t, w in zip(ts, t_w, strict=True):
        ga, gb = kl_grad(a, jnp.asarray(b, a.dtype), 1.0 - t, t)
        lam = t**2 / (1.0 - t) ** 2 / dim
        want[0] += w * lam * np.asarray(ga)
        want[1] += w * lam * np.asarray(gb)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-6)
    assert np.all(np.abs(want[1]) > 1e-2)  # not a vacuous comparison


def test_normalised_surrogate_gradient_is_the_stated_formula():
    """Autodiff of mean ½‖x − sg(x − g)‖² = mean_i (g_i / D)·∂G(z_i)/∂θ, g from DMD's normaliser
    w = mean|x − x̂_real|, here computed independently in NumPy from the Gaussian posteriors."""
    dim, batch = 2, 64
    dmd = make_dmd(dim)
    rng = np.random.default_rng(0)
    z, n = rng.normal(size=(2, batch, dim)).astype(np.float32)
    t = rng.uniform(0.1, 0.9, size=batch).astype(np.float32)

    def surrogate(m: DMD):
        x = m.generator.denoise(jnp.asarray(z), jnp.ones(batch))
        return jnp.mean(m.distribution_matching(x, jnp.asarray(t), jnp.asarray(n)))

    got_a, got_b = generator_grad(dmd, surrogate)
    x = A * z + B
    al, sg = (1 - t)[:, None], t[:, None]
    x_t = al * x + sg * n

    def post(m, s):
        return m + al * s**2 / (al**2 * s**2 + sg**2) * (x_t - al * m)

    real, fake = post(MU, S), post(B, np.abs(A))
    g = (fake - real) / np.mean(np.abs(x - real), axis=1, keepdims=True)
    np.testing.assert_allclose(got_a, np.mean(g / dim * z, 0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_b, np.mean(g / dim, 0), rtol=1e-4, atol=1e-6)
    # and dm_direction is that g
    np.testing.assert_allclose(dm_direction(x, real, fake), g, rtol=1e-5)


def test_fake_score_loss_is_the_denoising_loss_on_generator_samples():
    dmd = make_dmd(2, steps=2)
    x = jnp.zeros((8, 2))
    loss, aux = nnx.clone(dmd).critic_loss(x, return_aux=True)
    m = nnx.clone(dmd)
    samples = jax.lax.stop_gradient(m.generate_train(x.shape))  # the same draws, in order
    assert float(loss) == float(m.critic.fake.loss(samples)) == float(aux["fake"])
    assert set(aux) == {"loss", "fake"}


def test_k_step_generator_and_backward_simulation():
    """generate: x̂ = G(x_k, t_k), x_{k+1} = α x̂ + σ n; generate_train draws k per example and
    returns G at the state after k steps (checked for each example against the chain)."""
    K, batch = 3, 16
    dmd = make_dmd(1, steps=K)
    times = np.asarray(dmd.generator_times())
    np.testing.assert_allclose(times, [1.0, 2 / 3, 1 / 3], rtol=1e-6)
    noise = np.random.default_rng(1).normal(size=(K, batch, 1)).astype(np.float32)

    def chain(k_stop: int) -> np.ndarray:  # G at the state after k_stop steps, by hand
        x = noise[0]
        for k in range(k_stop):
            x_hat = A[0] * x + B[0]
            x = (1 - times[k + 1]) * x_hat + times[k + 1] * noise[k + 1]
        return A[0] * x + B[0]

    np.testing.assert_allclose(dmd.generate(jnp.asarray(noise)), chain(K - 1), rtol=1e-5)
    m = nnx.clone(dmd)
    keys = (m.rngs.noise(), m.rngs.time())
    noise_t = np.asarray(jax.random.normal(keys[0], (K, batch, 1)))
    k_of = np.asarray(jax.random.randint(keys[1], (batch,), 0, K))
    out = np.asarray(dmd.generate_train((batch, 1)))
    noise = noise_t
    want = np.stack([chain(int(k))[i] for i, k in enumerate(k_of)])
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    assert len(set(k_of.tolist())) == K  # every depth exercised


def test_trees_schedule_and_errors():
    dmd = make_dmd(1)
    trees = dmd.trained_trees()
    assert [(t.tree, t.loss, t.every) for t in trees] == [
        ("generator", "generator_loss", 5),
        ("critic", "critic_loss", 1),
    ]
    assert dmd.frozen_trees() == ("teacher",)
    with pytest.raises(InterfaceConfigError, match="null_label"):
        DMD(dmd.generator, dmd.critic.fake, dmd.teacher, guidance=2.0)
    with pytest.raises(InterfaceConfigError, match="gan_hidden_at"):
        DMD(dmd.generator, dmd.critic.fake, dmd.teacher, gan_weight_critic=0.1)
    with pytest.raises(InterfaceConfigError, match="reg_noise"):
        DMD(dmd.generator, dmd.critic.fake, dmd.teacher, regression_weight=1.0).generator_loss(
            jnp.zeros((4, 1))
        )
    with pytest.raises(InterfaceConfigError, match="nnx_train"):
        dmd.loss(jnp.zeros((4, 1)))


def test_regression_loss_and_guided_real_score():
    """DMD1 regression: mean‖G(z_pair) − x_pair‖²; CFG: x̂_∅ + w(x̂_y − x̂_∅) on a label-aware
    teacher (SiT + tiny MLP)."""
    dmd = make_dmd(1, t_min=0.5, t_max=0.5 + 1e-6)
    m = DMD(dmd.generator, dmd.critic.fake, dmd.teacher, regression_weight=2.0)
    zp = jnp.asarray([[0.5], [-1.0]])
    xp = jnp.asarray([[1.0], [0.0]])
    _, aux = nnx.jit(
        lambda m: m.generator_loss(jnp.zeros((2, 1)), return_aux=True, reg_noise=zp, reg_target=xp)
    )(m)
    want = np.mean((A[0] * np.asarray(zp) + B[0] - np.asarray(xp)) ** 2)
    assert float(aux["regression"]) == pytest.approx(want, rel=1e-6)
    assert float(aux["loss"]) == pytest.approx(float(aux["dm"]) + 2.0 * want, rel=1e-6)

    from nnx_backbones.mlp import MLP
    from nnx_interfaces.sit import SiTInterface

    net = MLP(data_shape=(2,), width=16, depth=1, num_classes=3, rngs=nnx.Rngs(0))
    teacher = SiTInterface(net, "uniform", t_shift_base=None)
    guided = DMD(teacher, teacher, teacher, guidance=3.0, null_label=3)
    x_t, t, y = jnp.ones((4, 2)), jnp.full((4,), 0.4), jnp.asarray([0, 1, 2, 0])
    denoise = nnx.jit(lambda m, yy: m.denoise(x_t, t, y=yy))
    cond, uncond = denoise(teacher, y), denoise(teacher, jnp.full((4,), 3))
    got = nnx.jit(lambda m: m.real_denoise(x_t, t, y=y))(guided)
    np.testing.assert_allclose(got, uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-6)
