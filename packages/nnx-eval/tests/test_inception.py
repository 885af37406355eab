"""FID Inception: layout of the released weights, strict loading, shapes, TF-style pooling."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.errors import WeightsError, WeightsNotFoundError
from nnx_backbones.weights.io import write_state_dict
from nnx_backbones.weights.registry import WeightsSpec, get_spec, sha256_file
from nnx_eval.accumulate import inception_accumulator
from nnx_eval.conv import ROW_PATCH_MIN_SIZE, conv2d
from nnx_eval.errors import InputError
from nnx_eval.features import inception_feature_fn
from nnx_eval.inception_blocks import FoldedConv2d, Fused1x1, avg_pool_3x3_same, max_pool_3x3
from nnx_eval.inception_fold import fold_inception, is_folded
from nnx_eval.inception_score import inception_score
from nnx_eval.inception_weights import (
    INCEPTION_SPEC,
    inception_from_state_dict,
    inception_mapping,
    load_inception,
    save_inception_weights,
)
from nnx_eval.preprocess import preprocess_for_inception


@pytest.fixture(scope="module")
def state_dict(fid_state_dict):
    return fid_state_dict


@pytest.fixture(scope="module")
def model(state_dict):
    return inception_from_state_dict(state_dict)


def test_layout_has_472_tensors_and_23_9m_floats(fid_layout):
    lay = fid_layout
    assert len(lay) == 94 * 5 + 2
    n = sum(int(np.prod(s)) for s in lay.values())
    # 95,628,359-byte released file = 4 bytes × n + pickle overhead (< 0.2 %).
    assert 0.998 < 4 * n / 95_628_359 < 1.0


def test_mapping_covers_exactly_the_released_keys(model, fid_layout):
    mapping = inception_mapping(model)
    real = {k for k in mapping if not k.endswith("num_batches_tracked")}
    assert real == set(fid_layout)


def test_every_key_consumed_and_values_land_transposed(model, state_dict):
    # Spot-check transposition conventions against the raw arrays.
    w = state_dict["Mixed_6d.branch7x7_2.conv.weight"]  # [O, I, 1, 7]
    k = np.asarray(model.Mixed_6d.branch7x7_2.conv.kernel[...])  # [1, 7, I, O]
    np.testing.assert_array_equal(k, w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(np.asarray(model.fc.kernel[...]), state_dict["fc.weight"].T)
    np.testing.assert_array_equal(
        np.asarray(model.Conv2d_1a_3x3.bn.var[...]), state_dict["Conv2d_1a_3x3.bn.running_var"]
    )
    # No variable is left abstract (every one was filled from the file).
    leaves = jax.tree.leaves(nnx.state(model))
    assert len(leaves) == 472 and all(isinstance(x, np.ndarray | jax.Array) for x in leaves)


def test_shapes_at_299_via_eval_shape(model):
    out = nnx.eval_shape(
        lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32)
    )
    assert out["pool"].shape == (2, 2048)
    assert out["spatial"].shape == (2, 17 * 17 * 7) == (2, 2023)
    assert out["logits"].shape == out["logits_unbiased"].shape == (2, 1008)


@pytest.fixture(scope="module")
def feature_fn_75(model):
    """The jitted uint8 → preprocess → network path, resizing to the minimum size 75."""
    return inception_feature_fn(model, size=75)


@pytest.fixture(scope="module")
def images_75():
    return np.random.default_rng(1).integers(0, 256, (8, 75, 75, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def features_75(feature_fn_75, images_75):
    return feature_fn_75(images_75[:2])


def test_real_forward_at_minimum_size(model, state_dict, features_75, images_75):
    out = features_75
    # The jitted feature function equals the eager model on the preprocessed batch.
    x = (
        2.0
        * jax.image.resize(
            jnp.asarray(images_75[:2], jnp.float32) / 255.0, (2, 75, 75, 3), "bilinear"
        )
        - 1.0
    )
    np.testing.assert_allclose(out["pool"], np.asarray(model(x)["pool"]), rtol=1e-4, atol=1e-5)
    assert out["pool"].shape == (2, 2048) and out["spatial"].shape == (2, 3 * 3 * 7)
    pool = np.asarray(out["pool"], np.float64)
    assert np.all(np.isfinite(pool)) and np.all(pool >= 0)  # mean of ReLU outputs
    # logits = pool @ Wᵀ + b and logits_unbiased = pool @ Wᵀ.
    w, b = state_dict["fc.weight"].astype(np.float64), state_dict["fc.bias"].astype(np.float64)
    np.testing.assert_allclose(np.asarray(out["logits_unbiased"]), pool @ w.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out["logits"]), pool @ w.T + b, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="75"):
        model(jnp.zeros((1, 74, 74, 3)))


def test_matches_independent_numpy_forward_of_pytorch_fid(
    state_dict, features_75, images_75, numpy_inception
):
    """Parity with a float64 NumPy transcription of pytorch-fid's network (NCHW, torch layout):
    checks the block wiring, concat orders, paddings, pooling variants and the sFID slice."""
    x = (2.0 * images_75[:2].astype(np.float64) / 255.0 - 1.0).transpose(0, 3, 1, 2)
    ref = numpy_inception(state_dict, x)
    for key in ("pool", "spatial", "logits"):
        scale = np.abs(ref[key]).max()
        np.testing.assert_allclose(features_75[key], ref[key], rtol=1e-3, atol=1e-4 * scale)


def test_inception_accumulator_collects_the_three_feature_kinds(feature_fn_75, images_75):
    acc = inception_accumulator(feature_fn_75, num_samples=8, keep=5, is_splits=2)
    for i in range(0, 8, 2):
        acc.update(images_75[i : i + 2], indices=np.arange(i, i + 2))
    direct = {
        k: np.concatenate([feature_fn_75(images_75[i : i + 2])[k] for i in (0, 2, 4, 6)])
        for k in ("pool", "spatial", "logits_unbiased")
    }
    with pytest.warns(UserWarning, match="only 8 samples"):
        stats = acc.stats()
    assert stats["pool"].dim == 2048 and stats["spatial"].dim == 63
    np.testing.assert_allclose(stats["spatial"].mu, direct["spatial"].mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["pool"].mu, direct["pool"].mean(0), rtol=1e-6)
    np.testing.assert_allclose(acc.kept_features(), direct["pool"][:5], rtol=1e-6)
    assert acc.inception_score.result() == pytest.approx(
        inception_score(direct["logits_unbiased"], 2), rel=1e-6
    )


def test_tf_average_pool_excludes_padding_and_e2_uses_max():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    avg = np.asarray(avg_pool_3x3_same(jnp.asarray(x)))[0, :, :, 0]
    # Corner (0, 0): mean of the 4 real pixels {0, 1, 4, 5}, not their sum / 9.
    assert avg[0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert avg[0, 1] == pytest.approx((0 + 1 + 2 + 4 + 5 + 6) / 6)
    assert avg[1, 1] == pytest.approx(x[0, 0:3, 0:3, 0].mean())
    mx = np.asarray(max_pool_3x3(jnp.asarray(-x), 1, 1))[0, :, :, 0]
    assert mx[0, 0] == -0.0 and mx[3, 3] == -10.0  # padding never wins, even for negatives


def test_strict_loading_lists_unknown_missing_and_misshaped(state_dict):
    bad = dict(state_dict)
    del bad["Mixed_7c.branch_pool.bn.running_var"]
    bad["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
    bad["fc.bias"] = np.zeros((1000,), np.float32)
    with pytest.raises(WeightsError) as e:
        inception_from_state_dict(bad)
    msg = str(e.value)
    assert "AuxLogits.fc.weight" in msg
    assert "Mixed_7c.branch_pool.bn.running_var" in msg
    assert "fc.bias" in msg and "1000" in msg


def test_num_batches_tracked_is_accepted(state_dict):
    extra = dict(state_dict)
    extra["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0, np.int64)
    inception_from_state_dict(extra)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_converted_file_round_trip(tmp_path, model, state_dict, suffix):
    path = tmp_path / f"inception{suffix}"
    save_inception_weights(model, path)
    loaded = load_inception(path)
    np.testing.assert_array_equal(
        np.asarray(loaded.Mixed_6e.branch7x7dbl_5.conv.kernel[...]),
        np.asarray(model.Mixed_6e.branch7x7dbl_5.conv.kernel[...]),
    )


def test_torch_pth_in_released_layout(tmp_path, state_dict):
    torch = pytest.importorskip("torch")
    path = tmp_path / "pt_inception-random.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
    loaded = load_inception(path)
    np.testing.assert_array_equal(np.asarray(loaded.fc.bias[...]), state_dict["fc.bias"])


def test_registry_entry_and_offline_error(tmp_path):
    load_inception  # noqa: B018 - importing the module must not register anything by itself
    from nnx_eval.inception_weights import register_inception_weights

    spec = register_inception_weights()
    assert spec == INCEPTION_SPEC == get_spec("inception-2015-12-05-fid")
    assert spec.sha256.startswith("6726825d")  # torch.hub names carry the sha256 prefix
    assert spec.url.endswith("pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(WeightsNotFoundError) as e:
        load_inception(cache_dir=tmp_path, download=False)
    assert spec.url in str(e.value) and spec.sha256 in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_registry_path_converts_once_to_safetensors(tmp_path, state_dict):
    # A spec for a local "release" (the real one cannot be downloaded in tests): raw file in the
    # cache with its sha256, converted once to safetensors on first load, reused afterwards.
    raw = tmp_path / "random-inception.npz"
    extra = {**state_dict, "Conv2d_1a_3x3.bn.num_batches_tracked": np.array(3, np.int64)}
    write_state_dict(raw, extra)
    spec = WeightsSpec(
        name="test-random-inception",
        url="https://example.invalid/x.npz",
        sha256=sha256_file(raw),
        filename=raw.name,
        layout="pytorch-fid-inception",
    )
    model = load_inception(cache_dir=tmp_path, download=False, spec=spec)
    converted = sorted(tmp_path.glob("test-random-inception.*.pytorch-fid-keys.safetensors"))
    assert len(converted) == 1
    np.testing.assert_array_equal(np.asarray(model.fc.bias[...]), state_dict["fc.bias"])
    mtime = converted[0].stat().st_mtime_ns
    load_inception(cache_dir=tmp_path, download=False, spec=spec)
    assert converted[0].stat().st_mtime_ns == mtime


@pytest.mark.parametrize("fold", [False, True], ids=["as-loaded", "folded"])
def test_matches_pytorch_fid_golden_fixture_on_non_299_inputs(model, fid_state_dict_sha256, fold):
    """The loaded model and its folded inference form (`fold_inception`: BN folded, fused 1×1
    heads, CPU dot / patch lowerings), each against the golden fixture
    (tools/fixtures/gen_inception.py): pytorch-fid's own InceptionV3 with
    these seeded weights, on 32² and 64×96 uint8 images (so its bilinear resize to 299 is
    pinned too): pool3, the 1008 logits and ADM's sFID slice of Mixed_6d.branch1x1."""
    fixtures = Path(__file__).parent / "fixtures" / "fid_inception"
    meta = json.loads((fixtures / "meta.json").read_text())
    assert fid_state_dict_sha256 == meta["weights_sha256"], "weights recipe drifted"
    io = np.load(fixtures / "io.npz")
    tags = ("small", "wide")
    x = jnp.concatenate([preprocess_for_inception(io[f"{t}_images"]) for t in tags])
    net = fold_inception(model) if fold else model
    out = jax.jit(lambda m, x: m(x))(net, x)  # one compile at 299² for both sizes
    for key in ("pool", "spatial", "logits"):
        want = np.concatenate([io[f"{t}_{key}"] for t in tags])
        got = np.asarray(out[key])
        np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=key
        )


@pytest.mark.parametrize(
    ("window", "stride", "pad"),
    [((1, 1), 1, 0), ((3, 3), 2, 0), ((3, 3), 2, 1), ((1, 7), 1, 3), ((3, 3), 1, 1)],
)
@pytest.mark.parametrize("size", [9, ROW_PATCH_MIN_SIZE], ids=["small", "row-patch-size"])
def test_conv2d_lowerings_equal_the_xla_convolution(window, stride, pad, size):
    """Each CPU lowering of `conv2d` (1×1 → dot, strided → patches @ W, stride-1 k×k on a large
    grid with few channels → row patches, else conv) is the convolution."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, size, size + 2, 5)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((*window, 5, 4)), jnp.float32)
    padding = ((pad if window[0] > 1 else 0,) * 2, (pad if window[1] > 1 else 0,) * 2)
    want = jax.lax.conv_general_dilated(
        x, k, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision="highest",
    )  # fmt: skip
    got = conv2d(x, k, (stride, stride), padding)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fold_inception_structure_and_equality(model, images_75, features_75):
    """Folding: the original is untouched, BN is folded into every conv, the 1×1 heads are one
    matmul (avg-pool branch included, except Mixed_7c's max pool), and the features of
    `inception_feature_fn` (folded by default) equal the as-loaded network's."""
    folded = fold_inception(model)
    assert is_folded(folded) and not is_folded(model)
    assert isinstance(model.Mixed_5b.branch1x1.conv, nnx.Conv)  # original unchanged
    assert isinstance(folded.Mixed_5b.heads, Fused1x1) and folded.Mixed_5b.heads.pool_last
    assert folded.Mixed_5b.heads.sizes == (64, 48, 64, 32)
    assert not folded.Mixed_7c.heads.pool_last and folded.Mixed_7c.heads.sizes == (320, 384, 448)
    assert isinstance(folded.Mixed_7c.branch_pool, FoldedConv2d)
    assert not hasattr(folded.Mixed_6d, "branch1x1")
    with pytest.raises(ValueError, match="already folded"):
        fold_inception(folded)
    # BN folded: W' = W γ/√(σ²+ε), b' = β − μ γ/√(σ²+ε) on one conv, against the raw variables.
    bc = model.Conv2d_4a_3x3
    inv = np.asarray(bc.bn.scale[...]) / np.sqrt(np.asarray(bc.bn.var[...]) + 1e-3)
    np.testing.assert_allclose(
        folded.Conv2d_4a_3x3.kernel[...], np.asarray(bc.conv.kernel[...]) * inv, rtol=1e-6
    )
    unfolded = inception_feature_fn(model, size=75, fold=False)(images_75[:2])
    for key in ("pool", "spatial", "logits"):
        scale = np.abs(unfolded[key]).max()
        np.testing.assert_allclose(features_75[key], unfolded[key], rtol=1e-4, atol=1e-5 * scale)
