"""(s, t) sampling, the delta_t curriculum and the loss norms, against their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.flowmaps.st_sampling import STSampling


def test_pairs_are_ordered_inside_the_interval_and_cover_it():
    st = STSampling()
    s, t = st.sample_st(jax.random.key(0), 20_000, step=0, high=0.999)
    assert s.shape == t.shape == (20_000,)
    assert bool(jnp.all((s >= 0) & (s <= t) & (t <= 0.999)))
    # min / max of two uniforms: E[s] = 1/3, E[t] = 2/3 (times high).
    np.testing.assert_allclose([s.mean(), t.mean()], [0.333, 0.666], atol=0.01)


def test_delta_t_curriculum_shrinks_the_gap():
    st = STSampling(delta_t_span=100, delta_t_start=0.1)
    np.testing.assert_allclose(
        [st.delta_t(0), st.delta_t(50), st.delta_t(100), st.delta_t(10_000)], [0.1, 0.55, 1, 1]
    )
    key = jax.random.key(1)
    s0, t0 = STSampling().sample_st(key, 1000)  # no curriculum
    s, t = st.sample_st(key, 1000, step=50)
    np.testing.assert_allclose(s, s0)
    np.testing.assert_allclose(t - s, 0.55 * (t0 - s0), rtol=1e-5, atol=1e-7)
    assert float(STSampling().delta_t(0)) == 1.0


def test_loss_norms():
    r = jnp.array([[0.5, -2.0], [0.0, 3.0]])
    np.testing.assert_allclose(STSampling(norm="l2").norm_fn(r), [(0.25 + 4) / 2, 4.5])
    np.testing.assert_allclose(STSampling(norm="l1").norm_fn(r), [1.25, 1.5])
    huber = STSampling(norm="smooth-l1", huber_c=1.0).norm_fn(r)
    np.testing.assert_allclose(huber, [(0.125 + 1.5) / 2, (0 + 2.5) / 2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(norm="l3"), "loss norm"),
        (dict(delta_t_span=-1), "delta_t"),
        (dict(loss_scale=0.0), "loss_scale"),
        (dict(dist="gamma"), "train_time_dist_type"),
    ],
)
def test_bad_configuration_is_rejected(kwargs, match):
    with pytest.raises(InterfaceConfigError, match=match):
        STSampling(**kwargs)
