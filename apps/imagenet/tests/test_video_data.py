"""Moving digits (bounce physics, determinism, on-disk format) and the generic video source
(`.npy` / `.gif` layouts, clip length, stride, start, errors) through the grain pipeline."""

import json

import numpy as np
import pytest
from PIL import Image

from nnx_imagenet.config_loading import load_config
from nnx_imagenet.configs.common import validate
from nnx_imagenet.data import moving_digits as md
from nnx_imagenet.data.digits import load_digits_split
from nnx_imagenet.data.pipeline import HostShard, make_dataset
from nnx_imagenet.data.video_folder import RandomClip, VideoFolderSource
from nnx_imagenet.errors import ConfigError, DataError


def test_bounce_path_reflects_at_both_walls():
    # rows: 1 → −1 reflects to 1 (v → +2) → 3 → 5; cols: 22 → 26 reflects to 22 (v → −2) → 20.
    path = md.bounce_path((1, 22), (-2, 2), 5, limit=24)
    np.testing.assert_array_equal(path, [[1, 22], [1, 24], [3, 22], [5, 20], [7, 18]])
    path = md.bounce_path((0, 24), (-1, 1), 3, limit=24)  # speed 1: |step| stays 1 at a wall
    np.testing.assert_array_equal(path, [[0, 24], [1, 23], [2, 22]])
    with pytest.raises(ValueError, match="velocity"):
        md.bounce_path((0, 0), (25, 1), 3, limit=24)


def test_random_motion_is_seeded_in_bounds_and_keeps_its_speed():
    a = md.random_motion(np.random.default_rng(3), 40)
    np.testing.assert_array_equal(a, md.random_motion(np.random.default_rng(3), 40))
    assert not np.array_equal(a, md.random_motion(np.random.default_rng(4), 40))
    for seed in range(20):
        p = md.random_motion(np.random.default_rng(seed), 40)
        assert p.min() >= 0 and p.max() <= 24
        steps = np.abs(np.diff(p, axis=0))
        for axis in range(2):
            speed = steps[0, axis] if steps[0, axis] else steps[1, axis]
            assert speed in md.SPEEDS
            assert set(steps[:, axis]) <= {0, speed}  # 0 only at a bounce of speed 2


def test_tree_on_disk_matches_the_generator_and_is_written_once(tmp_path):
    root = md.write_moving_digits_tree(tmp_path / "md", num_frames=4, videos_per_digit=1)
    marker = json.loads((root / md.MARKER).read_text())
    n_train, n_val = (len(load_digits_split()[s][1]) for s in ("train", "val"))
    assert marker["counts"] == {"train": n_train, "val": n_val}
    assert sorted(p.name for p in (root / "val").iterdir()) == [str(d) for d in range(10)]
    i, j, y, video, path = next(md.moving_digit_videos("val", num_frames=4, videos_per_digit=1))
    on_disk = np.load(root / "val" / str(y) / f"{i:04d}_{j}.npy")
    assert on_disk.dtype == np.uint8 and on_disk.shape == (4, 32, 32)
    np.testing.assert_array_equal(on_disk, video)
    digit = load_digits_split()["val"][0][i]
    np.testing.assert_array_equal(on_disk[2, path[2, 0] : path[2, 0] + 8,
                                          path[2, 1] : path[2, 1] + 8], digit)  # fmt: skip
    assert on_disk[2].sum() == digit.sum()  # nothing else on the canvas
    assert md.write_moving_digits_tree(root, num_frames=4, videos_per_digit=1) == root  # reused
    with pytest.raises(DataError, match="different settings"):
        md.write_moving_digits_tree(root, num_frames=8, videos_per_digit=1)
    src = VideoFolderSource(root, "val", 32, channels=1)
    assert len(src) == n_val and src[0]["video"].shape == (4, 32, 32, 1)


def write_videos(root, videos: dict):
    for rel, video in videos.items():
        path = root / "train" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".npy"):
            np.save(path, video)
        else:
            frames = [Image.fromarray(f) for f in video]
            frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def counting_video(frames: int, size: int = 8) -> np.ndarray:
    """Frame k is the constant 10·k: a clip's values say which frames it took."""
    return np.broadcast_to((10 * np.arange(frames, dtype=np.uint8))[:, None, None],
                           (frames, size, size)).copy()  # fmt: skip


def test_video_source_reads_npy_and_gif_with_labels_channels_and_resize(tmp_path):
    write_videos(tmp_path, {
        "b/0.npy": counting_video(6),
        "a/0.npy": np.zeros((5, 16, 16, 3), np.uint8),
        "a/1.gif": counting_video(7, 16),
    })  # fmt: skip
    src = VideoFolderSource(tmp_path, "train", 8, channels=1)
    assert src.classes == ["a", "b"] and len(src) == 3
    items = [src[i] for i in range(3)]
    assert [int(it["label"]) for it in items] == [0, 0, 1]
    assert [it["video"].shape for it in items] == [(5, 8, 8, 1), (7, 8, 8, 1), (6, 8, 8, 1)]
    np.testing.assert_array_equal(items[1]["video"][:, 3, 3, 0], 10 * np.arange(7))  # GIF frames
    rgb = VideoFolderSource(tmp_path, "train", 8, channels=3)[2]["video"]
    assert rgb.shape == (6, 8, 8, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])


def test_video_source_errors_say_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        VideoFolderSource(tmp_path, "train", 8)
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"hold no videos .*\.npy, \.gif"):
        VideoFolderSource(tmp_path, "train", 8)
    write_videos(tmp_path, {"a/0.npy": np.zeros((8, 8), np.uint8)})
    with pytest.raises(DataError, match=r"shape \(8, 8\); expected a video \[T, H, W\]"):
        VideoFolderSource(tmp_path, "train", 8)[0]
    write_videos(tmp_path, {"a/0.npy": np.zeros((4, 8, 8), np.float32)})
    with pytest.raises(DataError, match="float32 frames; expected uint8"):
        VideoFolderSource(tmp_path, "train", 8)[0]
    write_videos(tmp_path, {"a/0.npy": np.zeros((4, 8, 8), np.uint8)})
    with pytest.raises(DataError, match=r"0.npy has 4 frames but a clip needs 5"):
        VideoFolderSource(tmp_path, "train", 8, min_frames=5)[0]


def test_clips_take_stride_and_start_and_batch_to_five_dims(tmp_path):
    write_videos(tmp_path, {f"c/{i}.npy": counting_video(9) for i in range(4)})
    src = VideoFolderSource(tmp_path, "train", 8, channels=1)
    first = RandomClip(3, 2, random_start=False)(src[0], np.random.default_rng(0))
    np.testing.assert_array_equal(first["x"][:, 0, 0, 0], [0, 20, 40])
    starts = set()
    for seed in range(30):
        x = RandomClip(3, 3)(src[0], np.random.default_rng(seed))["x"][:, 0, 0, 0]
        np.testing.assert_array_equal(np.diff(x.astype(int)), [30, 30])  # stride 3
        starts.add(int(x[0]) // 10)
    assert starts == {0, 1, 2}  # span 7 of 9 frames: every start 0..2 occurs
    ds = make_dataset(src, batch_size=2, seed=0, kind="video", shard=HostShard(),
                      clip=RandomClip(4, 2), num_threads=1)  # fmt: skip
    batch = next(iter(ds))
    assert batch["x"].shape == (2, 4, 8, 8, 1) and batch["x"].dtype == np.float32
    frames = np.round((batch["x"][:, :, 0, 0, 0] + 1) * 127.5) / 10
    np.testing.assert_array_equal(np.diff(frames, axis=1), 2.0)
    with pytest.raises(DataError, match="needs clip"):
        make_dataset(src, batch_size=2, seed=0, kind="video", shard=HostShard())


def test_video_config_sections_are_checked():
    c = load_config("video_demo", [])
    assert c.data.name == "moving_digits" and tuple(c.data.shape) == (4, 32, 32, 1)
    with pytest.raises(ConfigError, match=r"makes clips of shape \(6, 32, 32, 1\)"):
        validate(load_config("video_demo", ["data.kwargs.num_frames=6"]))
    with pytest.raises(ConfigError, match="spans 19 frames but the moving-digits videos have"):
        validate(load_config("video_demo", ["data.kwargs.stride=6"]))
    with pytest.raises(ConfigError, match=r"channels must be 1 \(grey\) or 3"):
        validate(load_config("video_demo", ["data.name=video", "data.kwargs.channels=2"]))
