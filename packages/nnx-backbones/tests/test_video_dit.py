"""VideoDiT: frame-causality, KV-cache generation, the T = 1 reduction to DiT, per-frame time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones import DiT, ShapeError, VideoDiT
from nnx_backbones.layers.attention import multi_head_attention

KW = dict(input_size=8, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=4)


def _randomise(net, seed=0):
    """Perturb every parameter (adaLN-Zero starts as the identity, which would hide bugs)."""
    state = nnx.state(net, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noise = [jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)]
    leaves = [a + 0.2 * n for a, n in zip(leaves, noise, strict=True)]
    nnx.update(net, jax.tree.unflatten(tree, leaves))
    return net


@pytest.fixture(scope="module")
def net():
    return _randomise(VideoDiT(num_frames=4, num_classes=5, rngs=nnx.Rngs(0), **KW))


def _inputs(frames=4, b=2, seed=1):
    kx, kt = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (b, frames, 8, 8, 3))
    t = jax.random.uniform(kt, (b, frames))
    return x, t, jnp.array([1, 3])


def test_causal_mask_frame_k_ignores_later_frames(net):
    x, t, y = _inputs()
    out = net(x, t, y=y)
    x2 = x.at[:, 2:].set(jax.random.normal(jax.random.key(9), x[:, 2:].shape))
    t2 = t.at[:, 3].set(0.9)
    out2 = net(x2, t2, y=y)
    np.testing.assert_array_equal(np.asarray(out[:, :2]), np.asarray(out2[:, :2]))
    assert not np.allclose(out[:, 2:], out2[:, 2:])
    # Without the mask, earlier frames do see later ones.
    full = nnx.merge(*nnx.split(net))
    full.causal = False
    assert not np.allclose(full(x, t, y=y)[:, :2], full(x2, t2, y=y)[:, :2])


@pytest.mark.parametrize("impl", [None, "xla"])
def test_kv_cache_generation_equals_causal_forward(net, impl):
    x, t, y = _inputs()
    want = net(x, t, y=y)
    net = nnx.merge(*nnx.split(net))
    for block in net.blocks:
        block.attn.implementation = impl

    @nnx.jit
    def roll(net, x, t, y):
        def body(cache, xt):
            out, cache = net.step(xt[0], xt[1], cache, y=y)
            return cache, out

        xs = (jnp.moveaxis(x, 1, 0), jnp.moveaxis(t, 1, 0))
        _, outs = jax.lax.scan(body, net.init_cache(x.shape[0]), xs)
        return jnp.moveaxis(outs, 0, 1)

    np.testing.assert_allclose(roll(net, x, t, y), want, atol=1e-5)


def test_rolling_window_equals_the_sliding_window_forward(net):
    x, t, y = _inputs(frames=6)
    step = nnx.jit(lambda net, x, t, cache: net.step(x, t, cache, y=y))
    cache, outs = net.init_cache(2, window=2), []
    for k in range(6):
        out, cache = step(net, x[:, k], t[:, k], cache)
        outs.append(out)
    assert int(cache.pos) == 6
    # Frame k sees frames k-2..k at every layer (RoPE is relative: indices past 4 are fine).
    np.testing.assert_allclose(jnp.stack(outs, 1), net(x, t, y=y, window=2), atol=1e-5)
    assert not np.allclose(outs[5], net(x, t, y=y)[:, 5], atol=1e-3)  # the window matters


def test_single_frame_is_the_image_dit():
    video = _randomise(VideoDiT(num_frames=1, num_classes=5, rngs=nnx.Rngs(0), **KW), seed=3)
    image = DiT(num_classes=5, rngs=nnx.Rngs(1), **KW)
    nnx.update(image, nnx.state(video, nnx.Param))  # the same parameter tree
    x, t, y = _inputs(frames=1)
    np.testing.assert_allclose(
        video(x, t, y=y)[:, 0], image(x[:, 0], t[:, 0], y=y), atol=1e-5, rtol=1e-5
    )


def test_per_frame_time_modulates_only_its_frame():
    net = _randomise(VideoDiT(num_frames=3, causal=False, num_classes=5, rngs=nnx.Rngs(0), **KW))
    x, t, y = _inputs(frames=3)
    out = net(x, t, y=y)
    # [B] broadcasts to every frame.
    np.testing.assert_allclose(net(x, t[:, 0], y=y), net(x, jnp.repeat(t[:, :1], 3, 1), y=y))
    # With attention dropped (full attention mixes frames), t_1 only changes frame 1.
    for block in net.blocks:
        block.attn.proj.kernel[...] = jnp.zeros_like(block.attn.proj.kernel[...])
        block.attn.proj.bias[...] = jnp.zeros_like(block.attn.proj.bias[...])
    a = net(x, t, y=y)
    b = net(x, t.at[:, 1].set(0.99), y=y)
    np.testing.assert_array_equal(np.asarray(a[:, [0, 2]]), np.asarray(b[:, [0, 2]]))
    assert not np.allclose(a[:, 1], b[:, 1])
    assert not np.allclose(out, a)


def test_bad_inputs_raise_clear_errors(net):
    x, t, y = _inputs()
    with pytest.raises(ShapeError, match=r"\[B, T\]"):
        net(x, t[:, :2], y=y)
    with pytest.raises(ShapeError, match="channels-last frames"):
        net(x[:, 0], t[:, 0], y=y)
    with pytest.raises(ShapeError, match="init_cache"):
        net.step(x[:, 0], t[:, 0], net.init_cache(3), y=y)
    with pytest.raises(ValueError, match="needs causal=True"):
        VideoDiT(num_frames=2, causal=False, num_classes=None, rngs=nnx.Rngs(0), **KW)(
            x, t, window=1
        )
    q = jnp.zeros((1, 4, 2, 8))
    with pytest.raises(ValueError, match="context-parallel"):
        multi_head_attention(q, q, q, "ring", causal_block=2, causal_window=1)
    nc = VideoDiT(num_frames=2, causal=False, num_classes=None, rngs=nnx.Rngs(0), **KW)
    with pytest.raises(ValueError, match="causal=True"):
        nc.step(x[:, 0], t[:, 0], nc.init_cache(2))


def test_ring_attention_over_context_devices_equals_one_device(net):
    """The causal video DiT with its 16 tokens (4 frames × 4 patches) split over 4 context
    devices (ring attention, frame-causal block mask) gives the single-device output."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    x, t, y = _inputs()
    want = net(x, t, y=y)
    graph, state = nnx.split(net)
    ring = nnx.merge(graph, state)
    for block in ring.blocks:
        block.attn.implementation = "ring"
    devices = np.asarray(jax.devices()[:8]).reshape(2, 1, 1, 4)
    mesh = Mesh(devices, ("data", "fsdp", "tensor", "context"))
    with jax.set_mesh(mesh):
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        got = nnx.jit(lambda n, x, t, y: n(x, t, y=y))(ring, xs, t, y)
    np.testing.assert_allclose(got, want, atol=1e-5)


# --- temporal patch 2: 2-frame chunks -------------------------------------------------------


@pytest.fixture(scope="module")
def net2():
    net = VideoDiT(num_frames=6, temporal_patch=2, num_classes=5, rngs=nnx.Rngs(0), **KW)
    return _randomise(net, seed=4)


def _chunk_times(t):
    """Per-frame times equal within each 2-frame chunk."""
    return jnp.repeat(t[:, ::2], 2, axis=1)


def test_temporal_patch_causal_per_chunk(net2):
    x, t, y = _inputs(frames=6)
    out = net2(x, t, y=y)
    assert out.shape == x.shape
    # chunk 1 (frames 2, 3) changed: chunk 0 exactly unchanged, chunks 1 and 2 change
    x2 = x.at[:, 3].set(jax.random.normal(jax.random.key(7), x[:, 3].shape))
    out2 = net2(x2, t.at[:, 3].set(0.05), y=y)
    np.testing.assert_array_equal(np.asarray(out[:, :2]), np.asarray(out2[:, :2]))
    assert not np.allclose(out[:, 2], out2[:, 2])  # the later frame is seen within its chunk
    assert not np.allclose(out[:, 4:], out2[:, 4:])


def test_temporal_patch_cached_chunks_equal_the_causal_forward(net2):
    x, t, y = _inputs(frames=6)
    t = _chunk_times(t)
    want = net2(x, t, y=y)

    @nnx.jit
    def roll(net, x, t, cache):
        def body(cache, xt):
            out, cache = net.step(xt[0], xt[1], cache, y=y)
            return cache, out

        chunks = x.reshape(2, 3, 2, *x.shape[2:]).swapaxes(0, 1)  # [U, B, 2, H, W, C]
        _, outs = jax.lax.scan(body, cache, (chunks, t[:, ::2].T))
        return outs.swapaxes(0, 1).reshape(x.shape)

    np.testing.assert_allclose(roll(net2, x, t, net2.init_cache(2)), want, atol=1e-5)
    assert net2.init_cache(2).tokens == 2 * net2.tokens_per_frame  # 2 context chunks
    # a one-chunk rolling window is the sliding-window forward over chunks
    got = roll(net2, x, t, net2.init_cache(2, window=1))
    np.testing.assert_allclose(got, net2(x, t, y=y, window=1), atol=1e-5)
    assert not np.allclose(got[:, 4:], want[:, 4:], atol=1e-3)


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_temporal_patch_two_frames_are_the_image_dit_on_the_stacked_pair(learn_sigma):
    """T = 2 (one chunk, both frames at one time): the image DiT with 2·C input channels on the
    frames stacked on channels, the same parameters; output channels (mean | σ, frame, C)."""
    kw = dict(KW, learn_sigma=learn_sigma)
    video = VideoDiT(num_frames=2, temporal_patch=2, num_classes=5, rngs=nnx.Rngs(0), **kw)
    video = _randomise(video, seed=5)
    image = DiT(num_classes=5, rngs=nnx.Rngs(1), **dict(kw, in_channels=2 * KW["in_channels"]))
    nnx.update(image, nnx.state(video, nnx.Param))
    x, t, y = _inputs(frames=2)
    stacked = jnp.concatenate([x[:, 0], x[:, 1]], axis=-1)
    want = image(stacked, t[:, 0], y=y, **({"full_output": True} if learn_sigma else {}))
    want = want.reshape(*want.shape[:3], -1, 2, 3)  # (mean | σ, frame, C)
    got = video(x, t[:, 0], y=y, full_output=learn_sigma)
    for f in range(2):
        np.testing.assert_allclose(
            got[:, f], want[..., f, :].reshape(*want.shape[:3], -1), atol=1e-5, rtol=1e-5
        )
    if learn_sigma:
        np.testing.assert_allclose(video(x, t[:, 0], y=y), got[..., :3])
    # unequal times in a chunk: the mean of the two time embeddings conditions it
    emb = video.t_embedder
    mean_emb = (emb(t[:, 0]) + emb(t[:, 1])) / 2
    video_out = video(x, t, y=y)
    image.t_embedder = _Const(mean_emb)
    direct = image(stacked, t[:, 0], y=y).reshape(*want.shape[:3], 2, 3)
    for f in range(2):
        np.testing.assert_allclose(video_out[:, f], direct[..., f, :], atol=1e-5, rtol=1e-5)


class _Const(nnx.Module):
    """A stand-in time embedder returning fixed embeddings `[B, D]`."""

    def __init__(self, value):
        self.value = value

    def __call__(self, t):
        return self.value


def test_temporal_patch_errors(net2):
    x, t, y = _inputs(frames=6)
    with pytest.raises(ValueError, match="temporal_patch must be 1 or 2"):
        VideoDiT(num_frames=3, temporal_patch=2, rngs=nnx.Rngs(0), **KW)
    with pytest.raises(ShapeError, match="even number of frames"):
        net2(x[:, :5], t[:, :5], y=y)
    with pytest.raises(ShapeError, match=r"one chunk x: \[B, 2"):
        net2.step(x[:, 0], t[:, 0], net2.init_cache(2), y=y)
