"""Classifier-free guidance (scale, interval, one batched call) and autoguidance, checked on a
velocity field with a closed-form Euler step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnx_interfaces.base import TimeDomain
from nnx_samplers import (
    Autoguidance,
    ClassifierFreeGuidance,
    Euler,
    FunctionModel,
    SamplerConfigError,
)
from nnx_samplers.guidance import cfg_batching, chunked_call, default_eval_batch

SIT = TimeDomain(1.0, 0.0)
NUM_CLASSES = 3
SHIFT = jnp.array([[1.0, -1.0], [2.0, 0.5], [-3.0, 1.0], [0.0, 0.0]])  # row 3: the null label
SEEN_BATCHES: list[int] = []


def velocity(x, t, y=None):
    SEEN_BATCHES.append(x.shape[0])  # at trace time: the batch of every network call
    return -x * t[:, None] + SHIFT[y]


MODEL = FunctionModel(SIT, velocity=velocity)
X0 = jax.random.normal(jax.random.key(0), (4, 2))
Y = jnp.array([0, 1, 2, 1])
NULL = jnp.full((4,), NUM_CLASSES)


def _run(n, **kw):
    return Euler(n).sample(0, MODEL, X0, y=Y, **kw).x


def test_scale_one_is_conditional_and_scale_zero_is_unconditional():
    cond, uncond = _run(4), Euler(4).sample(0, MODEL, X0, y=NULL).x
    SEEN_BATCHES.clear()
    np.testing.assert_allclose(
        _run(4, guidance=ClassifierFreeGuidance(1.0, null_label=3, batching="concat")),
        cond, rtol=1e-6, atol=1e-6,
    )  # fmt: skip
    assert SEEN_BATCHES and set(SEEN_BATCHES) == {8}  # cond + null branch: ONE call on 2B
    np.testing.assert_allclose(
        _run(4, guidance=ClassifierFreeGuidance(0.0, null_label=3)), uncond, rtol=1e-6, atol=1e-6
    )


def test_guided_step_is_uncond_plus_w_times_difference_inside_the_interval_only():
    w = 3.0
    # one Euler step from t = 1 to 0: x1 = x0 − (u + w·(c − u)), u/c at t = 1
    got = _run(1, guidance=ClassifierFreeGuidance(w, null_label=3))
    c, u = -X0 + SHIFT[Y], -X0 + SHIFT[NULL]
    np.testing.assert_allclose(got, X0 - (u + w * (c - u)), rtol=1e-6)
    # outside the interval: unguided conditional
    outside = _run(4, guidance=ClassifierFreeGuidance(w, interval=(0.1, 0.2), null_label=3))
    np.testing.assert_allclose(outside, _run(4), rtol=1e-6)
    # two steps (t = 1, then 0.5), interval [0.4, 0.6]: only the second step is guided
    got = _run(2, guidance=ClassifierFreeGuidance(w, interval=(0.4, 0.6), null_label=3))
    x1 = X0 - 0.5 * (-X0 + SHIFT[Y])
    c, u = -0.5 * x1 + SHIFT[Y], -0.5 * x1 + SHIFT[NULL]
    np.testing.assert_allclose(got, x1 - 0.5 * (u + w * (c - u)), rtol=1e-6)


def test_autoguidance_mixes_with_the_guide_model():
    guide = FunctionModel(SIT, velocity=lambda x, t, y=None: -0.5 * x + 0.3 * SHIFT[y])
    w = 2.0
    res = Euler(1).sample(0, MODEL, X0, y=Y, guidance=Autoguidance(guide, w))
    g, c = -0.5 * X0 + 0.3 * SHIFT[Y], -X0 + SHIFT[Y]
    np.testing.assert_allclose(res.x, X0 - (g + w * (c - g)), rtol=1e-6)
    assert res.nfe == 2  # main + guide
    zero = Euler(3).sample(0, MODEL, X0, y=Y, guidance=Autoguidance(guide, 0.0)).x
    np.testing.assert_allclose(zero, Euler(3).sample(0, guide, X0, y=Y).x, rtol=1e-6)


def test_guidance_errors_say_what_to_pass():
    with pytest.raises(SamplerConfigError, match="labels"):
        Euler(2).sample(0, MODEL, X0, guidance=ClassifierFreeGuidance(2.0, null_label=3))
    with pytest.raises(SamplerConfigError, match="null_label"):
        Euler(2).sample(0, MODEL, X0, y=Y, guidance=ClassifierFreeGuidance(2.0))
    with pytest.raises(SamplerConfigError, match="t_lo <= t_hi"):
        ClassifierFreeGuidance(2.0, interval=(0.6, 0.2))
    other = FunctionModel(TimeDomain(80.0, 0.0, "sigma"), velocity=velocity)
    with pytest.raises(SamplerConfigError, match="time domain"):
        Euler(2).sample(0, MODEL, X0, y=Y, guidance=Autoguidance(other, 2.0))


@pytest.mark.parametrize("batching", ["concat", "split"])
def test_cfg_batching_concat_and_split_give_the_same_samples(batching):
    """`batching="split"` runs the two branches as two batch-B calls, `"concat"` as one 2B call;
    the samples agree (the network is per-sample) and the guided step is the closed form."""
    w = 2.75  # a scale no other test uses: the first call traces (records the batch sizes)
    SEEN_BATCHES.clear()
    got = _run(1, guidance=ClassifierFreeGuidance(w, null_label=3, batching=batching))
    assert set(SEEN_BATCHES) == ({8} if batching == "concat" else {4})
    c, u = -X0 + SHIFT[Y], -X0 + SHIFT[NULL]
    np.testing.assert_allclose(got, X0 - (u + w * (c - u)), rtol=1e-6)
    four = _run(4, guidance=ClassifierFreeGuidance(w, null_label=3, batching=batching))
    np.testing.assert_allclose(
        four, _run(4, guidance=ClassifierFreeGuidance(w, null_label=3)), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(SamplerConfigError, match="batching"):
        ClassifierFreeGuidance(w, batching="twice")


def test_chunked_call_equals_one_call_with_a_remainder_and_unbatched_arguments():
    seen = []

    def fn(x, t, scale, *, y=None):
        seen.append(x.shape[0])
        return {"out": x * t[:, None] * scale + SHIFT[y]}

    x = jax.random.normal(jax.random.key(1), (11, 2))
    t = jnp.linspace(0.1, 1.0, 11)
    y = jnp.arange(11) % 4
    scale = jnp.asarray(2.0)  # 0-d: passed whole, not split
    want = fn(x, t, scale, y=y)["out"]
    seen.clear()
    got = jax.jit(lambda x, t, y: chunked_call(fn, 11, 4, x, t, scale, y=y))(x, t, y)["out"]
    assert seen == [4, 3]  # two chunks of 4 under lax.map, then the remainder of 3
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("eval_batch", [0, 2, 3])
def test_sampler_eval_batch_does_not_change_samples(eval_batch):
    guidance = ClassifierFreeGuidance(1.5, null_label=3)
    want = Euler(3, eval_batch=0).sample(0, MODEL, X0, y=Y, guidance=guidance).x
    got = Euler(3, eval_batch=eval_batch).sample(0, MODEL, X0, y=Y, guidance=guidance).x
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    cpu = jax.default_backend() == "cpu"
    assert default_eval_batch() == (8 if cpu else 0)
    assert cfg_batching(None) == ("split" if cpu else "concat")
    assert cfg_batching("concat") == "concat"
    with pytest.raises(SamplerConfigError, match="eval_batch"):
        Euler(3, eval_batch=-1)
