"""FD-DINOv2 plumbing with a tiny random DINOv2 (the real ViT-L/14 is tested in nnx-backbones)."""

from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_backbones.dinov2 import DINOv2, DINOv2Config, dinov2_config
from nnx_eval.dinov2 import (
    FD_DINOV2_INTERPOLATION,
    dinov2_accumulator,
    dinov2_feature_fn,
    preprocess_for_dinov2,
)
from nnx_eval.fid import fid_from_stats


def test_cls_features_and_fd_dinov2_of_a_set_against_itself():
    cfg = DINOv2Config(hidden_size=32, depth=1, num_heads=2, image_size=28)
    # Random weights filled on the host (no eager random init): N(0, 0.1²), LayerNorm scales 1.
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: DINOv2(cfg, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)

    def fill(path, x):
        if "norm" in str(path[-2]) and str(path[-1]) == "scale":
            return np.ones(x.shape, np.float32)
        return (0.1 * rng.standard_normal(x.shape)).astype(np.float32)

    tiny = nnx.merge(graphdef, jax.tree.map_with_path(fill, abstract))
    images = np.random.default_rng(1).integers(0, 256, (40, 28, 28, 3), dtype=np.uint8)
    acc = dinov2_accumulator(dinov2_feature_fn(tiny, size=28), keep=8)
    for i in range(0, 40, 8):
        acc.update(images[i : i + 8])
    # Kept features = CLS token of ImageNet-normalised pixels.
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = jnp.asarray((images[:8] / 255.0 - mean) / std, jnp.float32)
    ref = jax.jit(lambda m, x: m(x, input_range=None).cls_token)(tiny, x)
    np.testing.assert_allclose(acc.kept_features(), np.asarray(ref), rtol=1e-4, atol=1e-4)
    stats = acc.stats()["dinov2"]
    assert stats.dim == 32 and stats.n == 40
    assert abs(fid_from_stats(stats, stats)) < 1e-9


def test_resize_is_antialiased_bicubic_in_0_255():
    images = np.full((1, 56, 56, 3), 200, np.uint8)
    images[0, ::2] = 0  # 1-pixel stripes: antialiased 2× shrink averages them, 100 ± ε
    out = np.asarray(preprocess_for_dinov2(jnp.asarray(images), 28))
    assert out.shape == (1, 28, 28, 3) and abs(out[0, 10:18, 10:18].mean() - 100.0) < 1.0


FD_FIXTURES = Path(__file__).parent / "fixtures" / "fd_dinov2"


def test_matches_edm2_detector_around_the_hub_dinov2():
    """Golden fixture (tools/fixtures/gen_dinov2.py): EDM2's `DINOv2Detector` ("torch" resize)
    around a width-16 hub ViT with the 37×37 grid, on 64² (upsampled) and 128×96 (shrunk)
    uint8 images; our loader path is the hub layout + `interpolation="original"`."""
    from nnx_backbones.convert.dinov2 import load_dinov2
    from nnx_backbones.convert.sd_vae import materialize
    from nnx_backbones.weights.io import read_state_dict

    cfg = dinov2_config("s", interpolation=FD_DINOV2_INTERPOLATION)
    cfg = replace(cfg, hidden_size=16, depth=1, num_heads=2)
    model = nnx.eval_shape(lambda: DINOv2(cfg, rngs=nnx.Rngs(0)))
    materialize(model)
    load_dinov2(model, read_state_dict(FD_FIXTURES / "hub.safetensors"))
    io = np.load(FD_FIXTURES / "io.npz")
    features = dinov2_feature_fn(model)
    for tag in ("up", "down"):
        want = io[f"{tag}_features"]
        got = features(io[f"{tag}_images"])["dinov2"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
