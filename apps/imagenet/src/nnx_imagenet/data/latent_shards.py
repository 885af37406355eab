"""Pre-computed latent shards (written by `nnx-imagenet prepare`) and their grain source.

Layout of a latent folder (as in the latent-diffusion recipes, each image is stored twice: the
latent of the image and the latent of its horizontal mirror, so a random flip is a random choice):

    manifest.json                 {"format", "shape": [h, w, c], "dtype", "scale", "shift",
                                   "count", "num_classes", "shards": [{"name", "count"}], "encoder"}
    shard-00000.latents.npy       [N, 2, h, w, c]   (index 1 = latent of the flipped image)
    shard-00000.labels.npy        [N] int32

The reader memory-maps the shards and returns *scaled* latents z = (latent − shift)·scale, the
network's input scale (e.g. SD-VAE: scale 0.18215, shift 0).
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnx_imagenet.errors import DataError

FORMAT = "nnx-imagenet-latents/1"
MANIFEST = "manifest.json"


class LatentShardWriter:
    """Append `(latents, flipped latents, labels)` batches; writes fixed-size `.npy` shards.

    Use as a context manager (or call `close()`), which flushes the last shard and writes the
    manifest.

    Args:
      out_dir: folder to create (must be empty or absent).
      shard_size: examples per shard.
      scale, shift: per-channel (or scalar) latent normalisation stored in the manifest.
      num_classes: number of labels (the null label is `num_classes`).
      encoder: free-text description of the encoder (e.g. "sd-vae-ft-ema").
      dtype: storage dtype ("float32" or "float16").
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        shard_size: int = 4096,
        scale: float | Sequence[float] = 1.0,
        shift: float | Sequence[float] = 0.0,
        num_classes: int,
        encoder: str = "",
        dtype: str = "float32",
    ):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and any(self.out_dir.iterdir()):
            raise DataError(
                f"Latent output folder {self.out_dir} is not empty; choose a new folder or "
                f"delete it first."
            )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = int(shard_size)
        self.meta = {
            "format": FORMAT,
            "scale": np.asarray(scale, np.float64).tolist(),
            "shift": np.asarray(shift, np.float64).tolist(),
            "num_classes": int(num_classes),
            "encoder": encoder,
            "dtype": dtype,
        }
        self._buf_z: list[np.ndarray] = []
        self._buf_y: list[np.ndarray] = []
        self._shards: list[dict] = []
        self._shape: tuple[int, ...] | None = None

    def add(self, latents: np.ndarray, latents_flipped: np.ndarray, labels: np.ndarray) -> None:
        """latents, latents_flipped: `[B, h, w, c]` (unscaled); labels: `[B]` ints."""
        latents, latents_flipped = np.asarray(latents), np.asarray(latents_flipped)
        labels = np.asarray(labels).astype(np.int32).reshape(-1)
        if latents.shape != latents_flipped.shape or latents.ndim != 4:
            raise DataError(
                f"latents and latents_flipped must both be [B, h, w, c]; got {latents.shape} "
                f"and {latents_flipped.shape}."
            )
        if labels.shape[0] != latents.shape[0]:
            raise DataError(f"{labels.shape[0]} labels for {latents.shape[0]} latents.")
        if self._shape is None:
            self._shape = latents.shape[1:]
        elif latents.shape[1:] != self._shape:
            raise DataError(f"latent shape changed from {self._shape} to {latents.shape[1:]}.")
        self._buf_z.append(np.stack([latents, latents_flipped], axis=1).astype(self.meta["dtype"]))
        self._buf_y.append(labels)
        while sum(len(y) for y in self._buf_y) >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int) -> None:
        z, y = np.concatenate(self._buf_z), np.concatenate(self._buf_y)
        name = f"shard-{len(self._shards):05d}"
        np.save(self.out_dir / f"{name}.latents.npy", z[:n])
        np.save(self.out_dir / f"{name}.labels.npy", y[:n])
        self._shards.append({"name": name, "count": int(n)})
        self._buf_z, self._buf_y = ([z[n:]], [y[n:]]) if len(y) > n else ([], [])

    def close(self) -> Path:
        """Write the remaining examples and the manifest; return the manifest path."""
        rest = sum(len(y) for y in self._buf_y)
        if rest:
            self._flush(rest)
        if not self._shards:
            raise DataError(f"No latents were added to {self.out_dir}; nothing to write.")
        meta = dict(self.meta, shape=list(self._shape), shards=self._shards)
        meta["count"] = sum(s["count"] for s in self._shards)
        path = self.out_dir / MANIFEST
        path.write_text(json.dumps(meta, indent=1))
        return path

    def __enter__(self) -> "LatentShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


class LatentShardSource:
    """Random-access source over a latent folder: `source[i]` → `{"latents": [2, h, w, c] scaled,
    "label": int32}` (index 1 along the first axis is the flipped copy)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise DataError(
                f"No {MANIFEST} in {self.root}; expected a latent folder written by "
                f"`nnx-imagenet prepare` (manifest.json, shard-*.latents.npy, shard-*.labels.npy)."
            )
        try:
            self.meta = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON ({e}); re-run `prepare`.") from e
        if self.meta.get("format") != FORMAT:
            raise DataError(f"{path} has format {self.meta.get('format')!r}; expected {FORMAT!r}.")
        self._z, self._y = [], []
        for shard in self.meta["shards"]:
            zp = self.root / f"{shard['name']}.latents.npy"
            yp = self.root / f"{shard['name']}.labels.npy"
            for p in (zp, yp):
                if not p.is_file():
                    raise DataError(
                        f"Shard file {p} listed in {path} is missing; re-run `prepare`."
                    )
            z = np.load(zp, mmap_mode="r")
            y = np.load(yp, mmap_mode="r")
            want = (shard["count"], 2, *self.meta["shape"])
            if z.shape != want or y.shape != (shard["count"],):
                raise DataError(
                    f"Shard {zp} has shape {z.shape} (labels {y.shape}); the manifest says "
                    f"{want}. The folder is corrupt: re-run `prepare`."
                )
            self._z.append(z)
            self._y.append(y)
        self._offsets = np.cumsum([0] + [s["count"] for s in self.meta["shards"]])
        self._scale = np.asarray(self.meta["scale"], np.float32)
        self._shift = np.asarray(self.meta["shift"], np.float32)

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["shape"])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} latents")
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        i = index - int(self._offsets[k])
        z = (np.asarray(self._z[k][i], np.float32) - self._shift) * self._scale
        return {"latents": z, "label": np.int32(self._y[k][i])}

    def __repr__(self) -> str:
        return f"LatentShardSource({str(self.root)!r}, {len(self)} latents, shape={self.shape})"
