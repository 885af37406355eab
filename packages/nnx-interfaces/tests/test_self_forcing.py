"""Self Forcing (`nnx_interfaces.self_forcing`): the KV-cache rollout against references written
here with the causal full-sequence forward (value and gradient, gradient truncation), the
distribution-matching gradient on the rollout against the closed-form DMD direction with Gaussian
scores, the exit-step draws, the critic loss and the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones import VideoDiT
from nnx_interfaces import InterfaceConfigError
from nnx_interfaces.edm import EDMInterface
from nnx_interfaces.forcing import DiffusionForcing
from nnx_interfaces.gaussian_models import GaussianScore
from nnx_interfaces.self_forcing import SelfForcing
from nnx_interfaces.sit import SiTInterface

KW = dict(input_size=4, patch_size=2, in_channels=2, hidden_size=32, depth=1, num_heads=2)
B, T, K = 2, 3, 2
SHAPE = (B, T, 4, 4, 2)
Y = jnp.asarray([0, 2])


def _randomise(net, seed=0):
    """Perturb every parameter (adaLN-Zero starts as the identity, which would hide bugs)."""
    state = nnx.state(net, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [a + 0.2 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    nnx.update(net, jax.tree.unflatten(tree, leaves))
    return net


def video_sf(kind="sit", patch=1, frames=T, **kw) -> SelfForcing:
    net = VideoDiT(num_frames=frames, temporal_patch=patch, num_classes=3, rngs=nnx.Rngs(0), **KW)
    net = _randomise(net)
    rngs = lambda i: nnx.Rngs(0, time=10 * i + 1, noise=10 * i + 2)  # noqa: E731
    if kind == "sit":
        base = lambda n, i: SiTInterface(n, "uniform", t_shift_base=None, rngs=rngs(i))  # noqa: E731
    else:
        base = lambda n, i: EDMInterface(n, "lognormal", x_sigma=0.5, rngs=rngs(i))  # noqa: E731
    gen = DiffusionForcing(base(net, 0), frames_per_level=patch)
    fake = DiffusionForcing(base(nnx.clone(net), 1), noise_levels="shared")
    teacher = DiffusionForcing(base(nnx.clone(net), 2), frames_per_level=patch)
    kw.setdefault("generator_steps", K)
    return SelfForcing(gen, fake, teacher, **kw)


def reference_rollout(sf, noise, exit_index, *, context=None, stop=True):
    """The rollout written out with the causal full forward (no cache): frame (chunk of c
    frames) f is denoised as the last frame (chunk) of [pushed context at t_ctx; x_k at t_k].
    `stop`: earlier steps and the pushed frames under stop_gradient (their keys/values still
    depend on θ here)."""
    sg = jax.lax.stop_gradient if stop else (lambda a: a)
    times = sf.generator_times()
    t_ctx = sf.grid_time(jnp.float32(sf.context_noise))
    alpha_sigma = sf.teacher.alpha_sigma
    c, frames = sf.generator.network.temporal_patch, noise.shape[2]
    pushed, outs = [], []
    for f in range(0, frames, c):

        def G(x, t):
            video = jnp.concatenate([*pushed, x], 1)
            tt = jnp.broadcast_to(jnp.broadcast_to(t, (B,))[:, None], (B, c))
            tt = jnp.concatenate([jnp.full((B, f), t_ctx), tt], 1)
            return sf.generator.denoise(video, tt, y=Y, window=sf.window)[:, -c:]

        bc = (exit_index[:, f] >= 1)[:, None, None, None, None].shape
        x = alpha_sigma(times[0])[1] * noise[0, :, f : f + c]
        state, t_state = x, jnp.full((B,), times[0])
        for k in range(1, K):
            x_hat = sg(G(x, jnp.full((B,), times[k - 1])))
            a, s = alpha_sigma(times[k])
            x = a * x_hat + s * noise[k, :, f : f + c]
            state = jnp.where((exit_index[:, f] >= k).reshape(bc), x, state)
            t_state = jnp.where(exit_index[:, f] >= k, times[k], t_state)
        out = G(state, t_state)
        outs.append(out)
        push = sg(out)
        if context is not None:
            a, s = alpha_sigma(t_ctx)
            push = a * push + s * context[:, f : f + c]
        pushed.append(push)
    return jnp.concatenate(outs, 1)


def cached_reference(sf, noise, exit_index):
    """The rollout as a Python loop over `network.step` with the cache and earlier steps under
    stop_gradient explicitly (what the paper's no_grad blocks do)."""
    sg = jax.lax.stop_gradient
    times = sf.generator_times()
    cache = sf.generator.network.init_cache(B)
    outs, exits = [], np.asarray(exit_index)[0]  # both examples share the exits here
    for f in range(T):
        x = sf.teacher.alpha_sigma(times[0])[1] * noise[0, :, f]
        for k in range(int(exits[f])):
            x_hat = sg(sf.step_denoise(x, jnp.full((B,), times[k]), cache, y=Y)[0])
            a, s = sf.teacher.alpha_sigma(times[k + 1])
            x = a * x_hat + s * noise[k + 1, :, f]
        out, _ = sf.step_denoise(x, jnp.full((B,), times[int(exits[f])]), cache, y=Y)
        _, cache = sf.step_denoise(sg(out), jnp.zeros((B,)), cache, y=Y)
        cache = sg(cache)
        outs.append(out)
    return jnp.stack(outs, 1)


def _draws(seed=3):
    kn, kc, kw = jax.random.split(jax.random.key(seed), 3)
    noise = jax.random.normal(kn, (K, *SHAPE))
    return noise, jax.random.normal(kc, SHAPE), jax.random.normal(kw, SHAPE)


@pytest.mark.parametrize(
    "kind, context_noise, window", [("sit", 0.0, None), ("sit", 0.3, None), ("edm", 0.0, None),
                                    ("sit", 0.0, 1)]
)  # fmt: skip
def test_cached_rollout_equals_the_causal_full_forward(kind, context_noise, window):
    """Also with a 1-frame rolling cache: the full forward with a 1-frame sliding window."""
    sf = video_sf(kind, context_noise=context_noise, window=window)
    noise, context, _ = _draws()
    exit_index = jnp.asarray([[0, 1, 1], [1, 0, 1]])  # both branches in a frame and a batch
    ctx = context if context_noise > 0 else None
    got = nnx.jit(lambda m: m.rollout(noise, exit_index, y=Y, context=ctx))(sf)
    want = reference_rollout(sf, noise, exit_index, context=ctx)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # sampling exits every frame at the last step
    got = nnx.jit(lambda m: m.generate(noise, y=Y))(sf) if kind == "edm" else None
    if got is not None:
        last = jnp.full((B, T), K - 1)
        np.testing.assert_allclose(got, reference_rollout(sf, noise, last), atol=1e-5, rtol=1e-5)


def test_cached_rollout_of_two_frame_chunks_equals_the_causal_full_forward():
    """temporal_patch = 2: the rollout steps 2-frame chunks (one exit step per chunk)."""
    sf = video_sf(patch=2, frames=4, exit_step="frame")
    noise = jax.random.normal(jax.random.key(5), (K, B, 4, 4, 4, 2))
    exit_index = jnp.asarray([[0, 0, 1, 1], [1, 1, 0, 0]])
    got = nnx.jit(lambda m: m.rollout(noise, exit_index, y=Y))(sf)
    np.testing.assert_allclose(got, reference_rollout(sf, noise, exit_index), atol=1e-5)
    m = nnx.clone(sf)  # training draws: one exit per chunk
    noise = jax.random.normal(m.rngs.noise(), (K, B, 4, 4, 4, 2))
    exits = jnp.repeat(jax.random.randint(m.rngs.time(), (B, 2), 0, K), 2, axis=1)
    want = m.rollout(noise, exits, y=Y)
    got = nnx.clone(sf).generate_train((B, 4, 4, 4, 2), y=Y)
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="whole number of chunks"):
        sf.generate_train((B, 3, 4, 4, 2), y=Y)


def _grads(sf, fn, w):
    """∂/∂θ_generator of Σ w·fn(sf) as a flat dict of arrays."""
    only = nnx.All(nnx.Param, nnx.PathContains("generator"))
    g = nnx.jit(nnx.grad(lambda m: jnp.sum(w * fn(m)), argnums=nnx.DiffState(0, only)))(sf)
    return {str(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(g)[0]}


def test_rollout_gradient_is_truncated_as_in_the_paper():
    sf = video_sf()
    noise, _, w = _draws()
    exit_index = jnp.asarray([[0, 1, 1], [0, 1, 1]])
    got = _grads(sf, lambda m: m.rollout(noise, exit_index, y=Y), w)
    # 1) every parameter: the Python-loop reference with sg(earlier steps) and sg(cache)
    want = _grads(sf, lambda m: cached_reference(m, noise, exit_index), w)
    assert got.keys() == want.keys()
    for k in got:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5, rtol=1e-4, err_msg=k)
    # 2) the final layer (which feeds no key/value): the full-forward reference with earlier
    # steps and context frames under stop_gradient, exactly
    full = _grads(sf, lambda m: reference_rollout(m, noise, exit_index), w)
    final = [k for k in got if "final_layer" in k]
    assert final
    for k in final:
        np.testing.assert_allclose(got[k], full[k], atol=1e-5, rtol=1e-4, err_msg=k)
    # ... while the blocks' gradient differs from it: the cache is detached in the rollout
    blocks = [k for k in got if "blocks" in k and "qkv" in k]
    assert blocks and any(not np.allclose(got[k], full[k], atol=1e-4) for k in blocks)
    # 3) and the untruncated rollout (gradient through earlier steps and the context) differs
    untrunc = _grads(sf, lambda m: reference_rollout(m, noise, exit_index, stop=False), w)
    assert any(not np.allclose(got[k], untrunc[k], atol=1e-4, rtol=1e-3) for k in final)


# --- distribution matching with Gaussian scores -------------------------------------------------
D = 2
MU = np.array([[1.5, -0.5], [0.5, 0.0], [-1.0, 1.0]])  # data N(μ_f, s_f²) per frame
S = np.array([[0.5, 1.2], [0.8, 0.6], [1.0, 0.4]])
FM, FS = np.array([[0.2, 0.1]] * T), np.array([[0.9, 1.1]] * T)  # the fake score's Gaussian


class ToyCausalNet(nnx.Module):
    """A causal "video network" with a closed-form cache: x̂ = a·x + b + c·mean(context) as a SiT
    velocity F = (x − x̂)/t; the cache holds the sum and count of the pushed frames."""

    causal = True

    def __init__(self, a, b, c, *, rngs: nnx.Rngs):
        self.a, self.b, self.c = (nnx.Param(jnp.asarray(v, jnp.float32)) for v in (a, b, c))
        self.rngs = rngs

    def init_cache(self, batch, window=None):
        return jnp.zeros((batch, D)), jnp.zeros(())

    def step(self, x, t, cache, *, y=None):
        total, count = cache
        x_hat = self.a[...] * x + self.b[...] + self.c[...] * total / jnp.maximum(count, 1.0)
        f = (x - x_hat) / jnp.where(t > 0, t, 1.0)[:, None]
        return f, (total + x, count + 1.0)

    def __call__(self, x, t, **kwargs):
        raise NotImplementedError  # the rollout only steps


@pytest.mark.parametrize("normalize", [True, False])
def test_dm_gradient_on_the_rollout_is_the_closed_form_dmd_direction(normalize):
    """Generator gradient of mean L_DM(rollout) = mean_i Σ (g/D)·∂x/∂θ with g = (x̂_fake −
    x̂_real)/mean|x − x̂_real| from the Gaussian posteriors (NumPy) and the truncated ∂x/∂θ:
    ∂x/∂a = the frame's state at its exit step, ∂x/∂b = 1, ∂x/∂c = the context mean."""
    a, b, c, batch = np.array([0.8, 1.4]), np.array([0.3, 0.2]), 0.5, 64
    gen = DiffusionForcing(
        SiTInterface(ToyCausalNet(a, b, c, rngs=nnx.Rngs(0)), "uniform", t_shift_base=None)
    )
    r = nnx.Rngs(time=1, noise=2)
    fake, teacher = GaussianScore(FM, FS, rngs=r), GaussianScore(MU, S, rngs=r)
    sf = SelfForcing(gen, fake, teacher, normalize=normalize)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(sf.generator_steps, batch, T, D)).astype(np.float32)
    n = rng.normal(size=(batch, T, D)).astype(np.float32)
    t = rng.uniform(0.1, 0.9, size=batch).astype(np.float32)
    exits = rng.integers(0, sf.generator_steps, size=(batch, 1)).repeat(T, 1)

    def surrogate(m):
        x = m.rollout(jnp.asarray(z), jnp.asarray(exits))
        return jnp.mean(m.distribution_matching(x, jnp.asarray(t), jnp.asarray(n)))

    flat = _grads(sf, surrogate, 1.0)
    grads = {name: v for name in "abc" for k, v in flat.items() if f"key='{name}')" in k}
    assert len(grads) == 3, flat.keys()

    # the rollout by hand (times 1, 3/4, 1/2, 1/4 on the SiT grid)
    times = 1.0 - np.arange(4) / 4
    x, state = np.zeros((batch, T, D)), np.zeros((batch, T, D))
    for f in range(T):
        ctx = x[:, :f].mean(1) if f else np.zeros((batch, D))
        xk = z[0, :, f]
        for k in range(4):
            if k:
                xk = (1 - times[k]) * (a * xk + b + c * ctx) + times[k] * z[k, :, f]
            here = (exits[:, f] == k)[:, None]
            state[:, f] = np.where(here, xk, state[:, f])
        x[:, f] = a * state[:, f] + b + c * ctx
    ctx_mean = np.stack([x[:, :f].mean(1) if f else np.zeros((batch, D)) for f in range(T)], 1)
    al, sg = (1 - t)[:, None, None], t[:, None, None]
    x_t = al * x + sg * n

    def post(m, s):
        return m + al * s**2 / (al**2 * s**2 + sg**2) * (x_t - al * m)

    real, fake = post(MU, S), post(FM, FS)
    w = np.mean(np.abs(x - real), axis=(1, 2), keepdims=True) if normalize else 1.0
    g = (fake - real) / w / (T * D)
    np.testing.assert_allclose(x, np.asarray(sf.rollout(jnp.asarray(z), jnp.asarray(exits))),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(grads["a"], np.mean(np.sum(g * state, 1), 0), rtol=1e-4)
    np.testing.assert_allclose(grads["b"], np.mean(np.sum(g, 1), 0), rtol=1e-4)
    np.testing.assert_allclose(grads["c"], np.mean(np.sum(g * ctx_mean, (1, 2))), rtol=1e-4)
    assert len(set(exits[:, 0].tolist())) == 4  # every exit step exercised


@pytest.mark.parametrize("exit_step", ["rollout", "frame"])
def test_training_rollout_draws_and_critic_loss(exit_step):
    sf = video_sf(exit_step=exit_step, generator_steps=3)
    m = nnx.clone(sf)
    noise = jax.random.normal(m.rngs.noise(), (3, *SHAPE))
    n_exit = 1 if exit_step == "rollout" else T
    exits = jax.random.randint(m.rngs.time(), (B, n_exit), 0, 3)
    exits = jnp.repeat(exits, T // n_exit, 1)
    want = m.rollout(noise, exits, y=Y)
    got = nnx.clone(sf).generate_train(SHAPE, y=Y)
    np.testing.assert_allclose(got, want, atol=1e-6)
    if exit_step == "frame":
        return
    # critic: the fake interface's loss on sg(the same rollout)
    m = nnx.clone(sf)
    samples = jax.lax.stop_gradient(m.generate_train(SHAPE, y=Y))
    fake = m.critic.fake.loss(samples, y=Y)
    loss = nnx.clone(sf).critic_loss(jnp.zeros(SHAPE), Y)
    assert float(loss) == pytest.approx(float(fake), rel=1e-6)
    loss, aux = nnx.clone(sf).generator_loss(jnp.zeros(SHAPE), Y, return_aux=True)
    assert np.isfinite(float(loss)) and set(aux) == {"loss", "dm"}


def test_errors():
    sf = video_sf()
    with pytest.raises(InterfaceConfigError, match="DiffusionForcing"):
        SelfForcing(sf.generator.base, sf.critic.fake, sf.teacher)
    nc = VideoDiT(num_frames=T, causal=False, num_classes=3, rngs=nnx.Rngs(0), **KW)
    with pytest.raises(InterfaceConfigError, match="causal"):
        SelfForcing(DiffusionForcing(SiTInterface(nc)), sf.critic.fake, sf.teacher)
    with pytest.raises(InterfaceConfigError, match="exit_step"):
        SelfForcing(sf.generator, sf.critic.fake, sf.teacher, exit_step="last")
    with pytest.raises(InterfaceConfigError, match="context_noise"):
        SelfForcing(sf.generator, sf.critic.fake, sf.teacher, context_noise=2.0)
    with pytest.raises(ValueError, match=r"noise \[K=2"):
        sf.rollout(jnp.zeros((3, *SHAPE)), jnp.zeros((B, T), jnp.int32))
    assert [t.tree for t in sf.trained_trees()] == ["generator", "critic"]
    assert sf.frozen_trees() == ("teacher",)
