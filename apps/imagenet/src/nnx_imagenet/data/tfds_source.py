"""TFDS `imagenet2012` as a grain random-access source (optional: needs the `tf` extra).

`tensorflow_datasets` is imported lazily, only when this source is built, so the app runs without
TensorFlow. Items are ADM centre-cropped exactly like the ImageFolder reader.
"""

import numpy as np
from PIL import Image

from nnx_imagenet.data.adm_crop import center_crop_arr
from nnx_imagenet.errors import DataError


class TfdsSource:
    """`tfds.data_source(name, split=...)` → `{"image": uint8 [res, res, 3], "label": int32}`.

    Args:
      name: TFDS dataset name, e.g. "imagenet2012" (the archive must already be prepared under
        `data_dir`; TFDS cannot download ImageNet).
      split: "train" or "validation".
      resolution: output side length.
      data_dir: TFDS data folder (None: TFDS's default, `~/tensorflow_datasets`).
    """

    def __init__(self, name: str, split: str, resolution: int, *, data_dir: str | None = None):
        try:
            import tensorflow_datasets as tfds
        except ImportError as e:
            raise DataError(
                "data.source='tfds' needs TensorFlow Datasets, which is not installed. Install "
                "the app's `tf` extra (`uv sync --all-packages --extra tf`, or "
                "`pip install 'nnx-imagenet[tf]'`), or use data.source='image_folder'."
            ) from e
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir)
            info = tfds.builder(name, data_dir=data_dir).info
            self.num_classes = int(info.features["label"].num_classes)
        except Exception as e:
            raise DataError(
                f"Could not open TFDS {name!r} split {split!r} in data_dir={data_dir!r} ({e}). "
                f"ImageNet must be downloaded by hand and prepared with `tfds build {name} "
                f"--manual_dir=...` (array_record format) first."
            ) from e
        self.resolution = int(resolution)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        item = self._source[index]
        img = Image.fromarray(np.asarray(item["image"])).convert("RGB")
        return {"image": center_crop_arr(img, self.resolution), "label": np.int32(item["label"])}
