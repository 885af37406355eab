"""Schedules, EMAs and EDM2's post-hoc EMA against closed forms and direct tracking."""

import jax.numpy as jnp
import numpy as np
import pytest

from nnx_train import ema, optim, posthoc_ema


def test_lr_schedules_closed_form():
    warm = optim.lr_schedule(2.0, "constant", warmup_steps=10)
    assert float(warm(5)) == pytest.approx(1.0) and float(warm(50)) == pytest.approx(2.0)
    cos = optim.lr_schedule(2.0, "cosine", warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert float(cos(60)) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5), rel=1e-5)  # half-way
    assert float(cos(110)) == pytest.approx(0.2, rel=1e-5)
    inv = optim.lr_schedule(2.0, "inverse_sqrt", warmup_steps=10, ref_steps=100)
    assert float(inv(50)) == pytest.approx(2.0)
    assert float(inv(400)) == pytest.approx(1.0, rel=1e-5)  # η·sqrt(100/400)


def test_ema_matches_closed_form_and_starts_from_params():
    beta, T = 0.9, 20
    seq = [jnp.full((3,), float(t)) for t in range(T + 1)]  # θ_0 … θ_T
    emas = ema.init_emas(seq[0], [beta])
    for t in range(1, T + 1):
        emas = ema.update_emas(emas, seq[t], jnp.asarray(t), warmup=False)
    # θ̄_T = β^T θ_0 + Σ_{t=1..T} (1 − β) β^{T−t} θ_t
    expect = beta**T * 0 + sum((1 - beta) * beta ** (T - t) * t for t in range(1, T + 1))
    np.testing.assert_allclose(emas[ema.ema_name(beta)], expect, rtol=1e-5)


def test_ema_warmup_decay():
    assert float(ema.ema_decay(0.999, 1, True)) == pytest.approx(2 / 11)
    assert float(ema.ema_decay(0.999, 10**6, True)) == pytest.approx(0.999)


def test_sigma_rel_gamma_round_trip_and_paper_values():
    # Equation 4 inverted: γ(σ_rel) maps back to σ_rel.
    for std in (0.05, 0.10, 0.2):
        g = posthoc_ema.std_to_exp(std)
        assert np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))) == pytest.approx(std, rel=1e-10)


def test_discrete_power_ema_has_power_function_profile():
    # Weights (γ+1) s^γ / T^{γ+1}: the EMA of θ_s = s is ((γ+1)/(γ+2))·T.
    std, T = 0.1, 2000
    gamma = float(posthoc_ema.std_to_exp(std))
    w = np.asarray(posthoc_ema.power_weight(std, jnp.arange(1, T + 1), 1.0), np.float64)
    assert w[0] == 1.0  # β = 0 at the first step: the EMA starts from the parameters
    avg = 0.0
    for t in range(1, T + 1):
        avg += w[t - 1] * (t - avg)
    assert avg == pytest.approx((gamma + 1) / (gamma + 2) * T, rel=2e-3)
    # The pytree update agrees with the scalar recursion.
    tree = posthoc_ema.update_power_emas({"0.1": jnp.ones(2)}, jnp.full(2, 5.0), 10, 1.0)
    np.testing.assert_allclose(tree["0.1"], 1.0 + float(w[9]) * 4.0, rtol=1e-6)


def _track(T, every, stds, theta):
    emas = {s: np.zeros(theta.shape[1]) for s in stds}
    snaps = []
    for t in range(1, T + 1):
        for s in stds:
            w = float(posthoc_ema.power_weight(s, t, 1.0))
            emas[s] = emas[s] + w * (theta[t - 1] - emas[s])
        if t % every == 0:
            snaps.append([(float(t), s, emas[s].copy()) for s in stds])
    return emas, snaps


def test_posthoc_reconstruction_matches_directly_tracked_power_ema():
    rng = np.random.default_rng(0)
    T, every = 400, 20
    steps = np.arange(1, T + 1)
    theta = np.cumsum(rng.normal(size=(T, 4)), 0) + 5 * np.sin(steps / 40)[:, None]
    tracked = (0.05, 0.10)
    target = 0.07
    emas, snaps = _track(T, every, (*tracked, target), theta)
    inputs = [(t, s, p) for group in snaps for (t, s, p) in group if s in tracked]
    rec = posthoc_ema.reconstruct(inputs, target)
    spread = np.abs(emas[0.05] - emas[0.10]).max()
    assert np.abs(rec - emas[target]).max() < 0.01 * spread
    # Reconstructing a tracked σ_rel at the last snapshot time returns that snapshot.
    rec_tracked = posthoc_ema.reconstruct(inputs, 0.05)
    np.testing.assert_allclose(rec_tracked, emas[0.05], rtol=1e-6, atol=1e-6)
