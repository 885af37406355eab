"""REPA trains end to end: `dit_repa:smoke` (8×8×3 synthetic pixels, random tiny DINOv2 tokens
computed per batch by the app's batch encoder) runs 4 steps through the real trainer; the REPA
loss is logged, finite, a cosine (|L_repa| ≤ 1) and the total is L_diff + λ·L_repa. The batch
encoder forwards the grain iterator state, and mismatched token counts are refused clearly."""

import json

import numpy as np
import pytest

from nnx_imagenet.config_loading import load_config
from nnx_imagenet.data.builder import build_train_dataset
from nnx_imagenet.errors import ConfigError
from nnx_imagenet.repa_features import EncodedIterator, make_batch_encoder
from nnx_imagenet.run import run_train
from nnx_train import trainer


def test_dit_repa_smoke_trains_and_logs_repa_loss(tmp_path):
    config = load_config("dit_repa:smoke", [f"workdir={tmp_path}", "log.progress_bar=False"])
    out = run_train(config)
    assert out["step"] == 4 and not out["preempted"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 4
    lam = config.interface.repa_loss_weight
    for r in steps:
        repa, diff = r["aux/repa_loss"], r["aux/diffusion_loss"]
        assert np.isfinite(repa) and np.isfinite(diff) and r["finite"]
        assert -1.0 <= repa <= 1.0 and repa != 0.0  # a mean negative cosine, of real features
        assert r["loss"] == pytest.approx(diff + lam * repa, rel=1e-5)


def test_batch_encoder_adds_tokens_and_keeps_iterator_state():
    config = load_config("dit_repa:smoke", [])
    encode = make_batch_encoder(config)
    it = EncodedIterator(iter(build_train_dataset(config)), encode)
    first = next(it)
    assert first["x"].shape == (8, 8, 8, 3)  # pixels pass through (smoke: no VAE)
    assert first["x_feature"].shape == (8, 16, 32)  # (56 / 14)² tokens × 32 channels
    state = it.get_state()
    a = next(it)
    next(it)
    it.set_state(state)
    b = next(it)
    for k in ("x", "y", "x_feature"):
        np.testing.assert_array_equal(a[k], b[k])


def test_token_count_mismatch_is_a_clear_error():
    config = load_config("dit_repa:smoke", ["interface.encoder_resolution=42"])
    with pytest.raises(ConfigError, match="9 tokens"):
        trainer.build_interface(config)
    config = load_config("dit_repa:smoke", ["interface.feature_dim=768"])
    with pytest.raises(ConfigError, match="feature_dim=32"):
        trainer.build_interface(config)


def test_latent_path_encodes_images_with_the_vae(monkeypatch):
    """With `latent_encoder` set, x = `vae.encode_latents(images)` of the 8×-larger images. A
    stand-in "VAE" (8×8 average pool, then a fixed 3→4 matrix) replaces the registry's weights
    (building even a tiny real AutoencoderKL takes ~9 s on CPU); NumPy computes the same map."""
    import jax.numpy as jnp
    from flax import nnx

    from nnx_backbones.convert import sd_vae as sd_vae_convert
    from nnx_imagenet.repa_features import source_shape

    mix = np.arange(12, dtype=np.float32).reshape(3, 4) / 10

    class PoolVAE(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.asarray(mix))

        def encode_latents(self, x):
            b, h, w, c = x.shape
            pooled = x.reshape(b, h // 8, 8, w // 8, 8, c).mean(axis=(2, 4))
            return pooled @ self.w[...]

    monkeypatch.setattr(sd_vae_convert, "pretrained_sd_vae", lambda name: PoolVAE())
    config = load_config("dit_repa:smoke", ["interface.latent_encoder=sd-vae-ft-ema"])
    config.data.shape = (8, 8, 4)
    assert source_shape(config) == (64, 64, 3)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    encode = make_batch_encoder(config)
    out = encode({"x": images, "y": np.zeros(2, np.int32)})
    want = images.reshape(2, 2, 8, 2, 8, 3).mean(axis=(2, 4)) @ mix
    assert out["x"].shape == (2, 2, 2, 4) and out["x_feature"].shape == (2, 16, 32)
    np.testing.assert_allclose(out["x"], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match=r"RGB image batches"):
        encode({"x": want, "y": np.zeros(2, np.int32)})
