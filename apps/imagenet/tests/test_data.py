"""Data pipeline tests: ADM crop against an independent NumPy reference, ImageFolder layout and
errors, latent shards round trip, digits tree, host sharding and exact resume from grain state."""

import json

import numpy as np
import pytest
from PIL import Image

from nnx_imagenet.data.adm_crop import center_crop_arr
from nnx_imagenet.data.digits import load_digits_split, write_digits_tree
from nnx_imagenet.data.image_folder import ImageFolderSource
from nnx_imagenet.data.latent_shards import LatentShardSource, LatentShardWriter
from nnx_imagenet.data.pipeline import HostShard, make_dataset
from nnx_imagenet.errors import DataError


def block_mean2(a: np.ndarray) -> np.ndarray:
    """Exact 2×2 box average (the BOX filter at an exact factor 2), in float."""
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    a = a[:h, :w].astype(np.float64)
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) / 4


def test_adm_crop_box_steps_then_centre_crop_match_numpy():
    # 256 × 128 (W × H) at res 32: BOX halves twice (128 ≥ 64, 64 ≥ 64) to 64 × 32, then the
    # short side is already 32 (identity resize), then the centre 32 columns: x ∈ [16, 48).
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, size=(128, 256)).astype(np.float32)
    out = center_crop_arr(Image.fromarray(a, mode="F"), 32)
    ref = block_mean2(block_mean2(a))[:, 16:48]
    assert out.shape == (32, 32)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-3)


def test_adm_crop_bicubic_resize_sizes_and_constant_image():
    # 500 × 375 at res 64: BOX to 250 × 187, then to 125 × 93 (stop: 93 < 128);
    # bicubic to round(125·64/93) = 86 × 64, then crop x ∈ [11, 75). A constant stays constant.
    img = Image.new("RGB", (500, 375), (10, 200, 30))
    out = center_crop_arr(img, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.broadcast_to([10, 200, 30], (64, 64, 3)))
    # A left/right split image: the crop window [11, 75) of 86 columns keeps the boundary at 43-11.
    a = np.zeros((375, 500), np.float32)
    a[:, 250:] = 100.0
    out = center_crop_arr(Image.fromarray(a, mode="F"), 64)
    assert out[:, :28].max() < 1 and out[:, 36:].min() > 99


def make_tree(root, counts, size=(20, 12)):
    for name, n in counts.items():
        (root / "train" / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, (i, 0, 0)).save(root / "train" / name / f"{i}.JPEG")


def test_image_folder_labels_from_sorted_synsets(tmp_path):
    make_tree(tmp_path, {"n02": 2, "n01": 3})
    src = ImageFolderSource(tmp_path, "train", 8)
    assert src.classes == ["n01", "n02"] and len(src) == 5
    labels = [int(src[i]["label"]) for i in range(5)]
    assert labels == [0, 0, 0, 1, 1]
    assert src[0]["image"].shape == (8, 8, 3)


def test_image_folder_errors_say_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderSource(tmp_path, "train", 8)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"No class folders under .*train; expected"):
        ImageFolderSource(tmp_path, "train", 8)
    (tmp_path / "train" / "n01").mkdir()
    (tmp_path / "train" / "n01" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="hold no images"):
        ImageFolderSource(tmp_path, "train", 8)
    (tmp_path / "train" / "n01" / "bad.JPEG").write_bytes(b"not a jpeg")
    src = ImageFolderSource(tmp_path, "train", 8)
    with pytest.raises(DataError, match=r"Could not decode image .*bad.JPEG"):
        src[0]


def test_latent_shards_round_trip_scaled_with_flipped_copy(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(10, 2, 2, 4)).astype(np.float32)
    y = np.arange(10) % 3
    lat = tmp_path / "lat"
    with LatentShardWriter(lat, shard_size=4, scale=0.5, shift=1.0, num_classes=3) as w:
        w.add(z[:7], z[:7, :, ::-1], y[:7])
        w.add(z[7:], z[7:, :, ::-1], y[7:])
    meta = json.loads((tmp_path / "lat" / "manifest.json").read_text())
    assert [s["count"] for s in meta["shards"]] == [4, 4, 2] and meta["count"] == 10
    src = LatentShardSource(tmp_path / "lat")
    assert len(src) == 10 and src.shape == (2, 2, 4) and src.num_classes == 3
    for i in (0, 5, 9):
        np.testing.assert_allclose(src[i]["latents"][0], (z[i] - 1.0) * 0.5, rtol=1e-6)
        np.testing.assert_allclose(src[i]["latents"][1], (z[i, :, ::-1] - 1.0) * 0.5, rtol=1e-6)
        assert int(src[i]["label"]) == y[i]
    with pytest.raises(DataError, match="not empty"):
        LatentShardWriter(tmp_path / "lat", num_classes=3)
    (tmp_path / "lat" / "shard-00001.labels.npy").unlink()
    with pytest.raises(DataError, match="missing; re-run `prepare`"):
        LatentShardSource(tmp_path / "lat")
    with pytest.raises(DataError, match=r"No manifest\.json"):
        LatentShardSource(tmp_path)


def test_digits_tree_split_is_stratified_and_read_back_exactly(tmp_path):
    root = write_digits_tree(tmp_path / "digits")
    split = load_digits_split()
    (_, ytr), (xva, yva) = split["train"], split["val"]
    assert len(ytr) + len(yva) == 1797
    # Stratified 80/20: each class has round(0.2·n) held-out images; no overlap of images.
    for c in range(10):
        n = np.sum(ytr == c) + np.sum(yva == c)
        assert np.sum(yva == c) == round(0.2 * n)
    src = ImageFolderSource(root, "val", 8, channels=1)
    assert len(src) == len(yva) and src.classes == [str(c) for c in range(10)]
    got = np.stack([src[i]["image"][..., 0] for i in range(len(src))])
    got_y = np.array([int(src[i]["label"]) for i in range(len(src))])
    order = np.lexsort((np.arange(len(yva)), yva))  # the reader sorts by class, then file index
    np.testing.assert_array_equal(got, xva[order])
    np.testing.assert_array_equal(got_y, yva[order])
    assert write_digits_tree(root) == root  # reused, not rewritten


class RangeSource:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        img = np.zeros((2, 2, 1), np.uint8)
        img[0, 0, 0] = i
        img[0, 1, 0] = 255 - i
        return {"image": img, "label": np.int32(i)}


def test_pipeline_hosts_partition_each_epoch_and_flips_are_flips():
    n, b = 24, 4
    seen = []
    for k in range(3):
        it = iter(make_dataset(RangeSource(n), batch_size=b, seed=3, shard=HostShard(k, 3)))
        ys = np.concatenate([next(it)["y"] for _ in range(2)])  # one epoch of 8 per host
        assert sorted(ys % 3) == [k] * 8
        seen.append(ys)
    assert sorted(np.concatenate(seen).tolist()) == list(range(n))
    it = iter(make_dataset(RangeSource(n), batch_size=b, seed=3, shard=HostShard()))
    flips = 0
    for _ in range(12):
        batch = next(it)
        x = np.round((batch["x"][..., 0] + 1) * 127.5).astype(int)
        for xi, yi in zip(x, batch["y"], strict=True):
            if xi[0, 0] == yi:
                assert xi[0, 1] == 255 - yi
            else:
                flips += 1
                assert (xi[0, 1], xi[0, 0]) == (yi, 255 - yi)
    assert 10 < flips < 38  # 48 draws of a fair coin


def test_pipeline_resume_from_state_continues_exact_order():
    ds = make_dataset(RangeSource(20), batch_size=3, seed=0, shard=HostShard())
    it = iter(ds)
    for _ in range(9):  # past the first epoch boundary
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(5)]
    it2 = iter(make_dataset(RangeSource(20), batch_size=3, seed=0, shard=HostShard()))
    it2.set_state(state)
    for a in want:
        b = next(it2)
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["y"], b["y"])


def test_pipeline_rejects_labels_outside_num_classes():
    """Labels 0..19 with num_classes 20 pass; with 10 the first batch holding a label ≥ 10 is a
    DataError naming the labels (not NaN from the embedding, blamed on the lr by the guard)."""
    it = iter(make_dataset(RangeSource(20), batch_size=4, seed=0, shard=HostShard(),
                           num_classes=20))  # fmt: skip
    assert all(next(it)["y"].max() < 20 for _ in range(10))
    it = iter(make_dataset(RangeSource(20), batch_size=4, seed=0, shard=HostShard(),
                           num_classes=10))  # fmt: skip
    with pytest.raises(DataError, match=r"labels outside \[0, 10\).*data.num_classes"):
        for _ in range(5):
            next(it)


def test_pipeline_rejects_batch_larger_than_shard():
    with pytest.raises(DataError, match="use a smaller batch"):
        make_dataset(RangeSource(5), batch_size=4, seed=0, shard=HostShard(0, 2))


def test_tfds_source_without_tensorflow_datasets_says_install_the_tf_extra():
    try:
        import tensorflow_datasets  # noqa: F401

        pytest.skip("tensorflow_datasets is installed; the missing-extra message is not reachable")
    except ImportError:
        pass
    from nnx_imagenet.data.tfds_source import TfdsSource

    with pytest.raises(DataError, match="`tf` extra"):
        TfdsSource("imagenet2012", "train", 256)


def test_prepare_encodes_images_and_mirrors_into_shards(tmp_path):
    from nnx_imagenet.commands import encode_to_shards

    make_tree(tmp_path / "src", {"n01": 3, "n02": 2}, size=(16, 16))
    for i, p in enumerate(sorted((tmp_path / "src" / "train").rglob("*.JPEG"))):
        a = np.zeros((16, 16, 3), np.uint8)
        a[:, : 4 + i] = 200  # left-heavy images: a mirror differs from the original
        Image.fromarray(a).save(p, quality=100)
    source = ImageFolderSource(tmp_path / "src", "train", 16)

    def encode(images):  # a stand-in "VAE": 4×4 average pooling to [B, 4, 4, 3]
        x = images.astype(np.float32) / 127.5 - 1.0
        return x.reshape(len(x), 4, 4, 4, 4, 3).mean(axis=(2, 4))

    encode_to_shards(
        source, encode, tmp_path / "lat", batch_size=2, shard_size=4, scale=2.0, shift=0.0,
        encoder="avgpool",
    )  # fmt: skip
    lat = LatentShardSource(tmp_path / "lat")
    assert len(lat) == 5 and lat.shape == (4, 4, 3) and lat.num_classes == 2
    for i in range(5):
        img = source[i]["image"][None]
        np.testing.assert_allclose(lat[i]["latents"][0], 2.0 * encode(img)[0], atol=1e-6)
        np.testing.assert_allclose(
            lat[i]["latents"][1], 2.0 * encode(img[:, :, ::-1])[0], atol=1e-6
        )
        assert int(lat[i]["label"]) == int(source[i]["label"])
