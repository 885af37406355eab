"""Video folder reader and clip sampling: `root/<split>/<class>/<id>.{npy,gif}`, labels from the
sorted class folder names (as `ImageFolderSource`).

A file is one video: `.npy` uint8 `[T, H, W]` (grey) or `[T, H, W, C]` (C = 1 or 3), or an
animated `.gif` (every frame, via Pillow). `VideoFolderSource[i]` → `{"video": uint8 [T, res,
res, C], "label": int32}`: frames converted to `channels` and, when their size differs from
`res`, ADM centre-cropped per frame (`adm_crop.center_crop_arr`). The whole video is returned;
`RandomClip` (a grain random map in `pipeline.make_dataset(kind="video")`) picks the clip

    x = video[s : s + (F − 1)·stride + 1 : stride]        F = num_frames frames, temporal stride
    s ~ U{0, …, T − (F − 1)·stride − 1}   (random_start), else s = 0

so a video needs at least (F − 1)·stride + 1 frames; shorter ones raise `DataError` naming the
file, its length and the settings to change.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from nnx_imagenet.data.adm_crop import center_crop_arr
from nnx_imagenet.data.image_folder import ImageFolderSource, scan_image_folder
from nnx_imagenet.errors import DataError

VIDEO_EXTENSIONS = (".npy", ".gif")


def clip_span(num_frames: int, stride: int) -> int:
    """Frames a clip of `num_frames` at temporal `stride` covers: (F − 1)·stride + 1."""
    return (num_frames - 1) * stride + 1


def _read_npy(path: str) -> np.ndarray:
    try:
        video = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"Could not read {path} as a .npy array ({e}).") from e
    if video.dtype != np.uint8:
        raise DataError(
            f"{path} holds {video.dtype} frames; expected uint8 pixels in [0, 255] "
            f"(convert with np.clip(x, 0, 255).astype(np.uint8))."
        )
    if video.ndim == 3:
        video = video[..., None]
    if video.ndim != 4 or video.shape[-1] not in (1, 3):
        raise DataError(
            f"{path} has shape {video.shape}; expected a video [T, H, W] (grey) or [T, H, W, C] "
            f"with C = 1 or 3."
        )
    return video


def _read_gif(path: str) -> list[Image.Image]:
    try:
        with Image.open(path) as img:
            return [frame.convert("RGB") for frame in ImageSequence.Iterator(img)]
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"Could not decode {path} as an animated GIF ({e}).") from e


def _to_frame(frame: Image.Image, resolution: int, channels: int) -> np.ndarray:
    frame = frame.convert("RGB" if channels == 3 else "L")
    if frame.size != (resolution, resolution):
        arr = center_crop_arr(frame, resolution)
    else:
        arr = np.asarray(frame)
    return arr if arr.ndim == 3 else arr[..., None]


class VideoFolderSource(ImageFolderSource):
    """Random-access source over `root/<split>/<class>/*.{npy,gif}` (module docstring); classes,
    `num_classes` and `len` as `ImageFolderSource`.

    Args:
      root: dataset root holding `<split>/<class>/<id>.npy|.gif`.
      split: sub-folder, e.g. "train" or "val".
      resolution: output frame side (ADM centre crop when a frame has another size).
      channels: 1 (grey) or 3 (RGB).
      min_frames: the shortest video accepted (a clip's span, `clip_span`); shorter ones raise.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        resolution: int,
        *,
        channels: int = 3,
        min_frames: int = 1,
    ):
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3; got {channels}.")
        self.root, self.split = Path(root), split
        self.resolution, self.channels, self.min_frames = int(resolution), channels, min_frames
        self.classes, self.samples = scan_image_folder(
            self.root / split, VIDEO_EXTENSIONS, "videos", "<class>/<id>.npy (or .gif)"
        )

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        path, label = self.samples[index]
        if path.lower().endswith(".npy"):
            video = _read_npy(path)
            size, c = video.shape[1:3], video.shape[-1]
            if size != (self.resolution, self.resolution) or c != self.channels:
                mode = "L" if c == 1 else "RGB"
                frames = [Image.fromarray(f.squeeze(-1) if c == 1 else f, mode) for f in video]
                video = np.stack([_to_frame(f, self.resolution, self.channels) for f in frames])
        else:
            frames = _read_gif(path)
            video = np.stack([_to_frame(f, self.resolution, self.channels) for f in frames])
        if len(video) < self.min_frames:
            raise DataError(
                f"{path} has {len(video)} frames but a clip needs {self.min_frames} "
                f"((num_frames − 1)·stride + 1); lower data.kwargs.num_frames or "
                f"data.kwargs.stride, or remove the short video."
            )
        return {"video": np.ascontiguousarray(video), "label": np.int32(label)}

    def __repr__(self) -> str:
        return (
            f"VideoFolderSource({str(self.root)!r}, split={self.split!r}, {len(self)} videos, "
            f"{self.num_classes} classes, resolution={self.resolution})"
        )


class RandomClip:
    """Grain random map: `{"video": [T, H, W, C], "label"}` → `{"x": [F, H, W, C], "y"}`, the
    clip of `num_frames` frames at `stride` from a random (or the first) start, mirrored
    left-right with probability 1/2 when `flip`."""

    def __init__(
        self, num_frames: int, stride: int = 1, *, random_start: bool = True, flip: bool = False
    ):
        if num_frames < 1 or stride < 1:
            raise DataError(f"num_frames and stride must be ≥ 1; got {num_frames}, {stride}.")
        self.num_frames, self.stride = num_frames, stride
        self.random_start, self.flip = random_start, flip
        self.span = clip_span(num_frames, stride)

    def __call__(self, element: dict, rng: np.random.Generator) -> dict:
        video = element["video"]
        if len(video) < self.span:
            raise DataError(
                f"A video of {len(video)} frames is shorter than a clip's {self.span} frames "
                f"(num_frames {self.num_frames}, stride {self.stride})."
            )
        start = int(rng.integers(0, len(video) - self.span + 1)) if self.random_start else 0
        clip = video[start : start + self.span : self.stride]
        if self.flip and rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        return {"x": np.ascontiguousarray(clip), "y": element["label"]}
