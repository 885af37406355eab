"""Video runs in the trainer: the `diffusion_forcing` interface entry builds the named base with
its kwargs (and rejects unknown ones), a 5-D batch trains, and sample grids draw videos."""

import numpy as np
import pytest
from PIL import Image

from nnx_train import callbacks, registry
from nnx_train import config as config_lib
from nnx_train.errors import ConfigError
from nnx_train.trainer import build_interface


def video_config(tmp_path, base="sit", **iface):
    c = config_lib.default_config()
    c.workdir = str(tmp_path)
    c.data.shape = (3, 8, 8, 1)
    c.data.num_classes = 4
    c.data.global_batch_size = 8
    c.model = config_lib.ml_collections.ConfigDict(dict(
        name="video_dit", input_size=8, num_frames=3, patch_size=4, in_channels=1,
        hidden_size=32, depth=1, num_heads=2, num_classes=4,
    ))  # fmt: skip
    c.interface = config_lib.ml_collections.ConfigDict(dict(name="diffusion_forcing", base=base,
                                                            **iface))  # fmt: skip
    return c


def test_diffusion_forcing_entry_builds_the_named_base_with_its_kwargs(tmp_path):
    from nnx_interfaces.edm import EDMInterface
    from nnx_interfaces.forcing import DiffusionForcing
    from nnx_interfaces.sit import SiTInterface

    sit = build_interface(video_config(tmp_path, t_shift_base=None, noise_levels="shared"))
    assert isinstance(sit, DiffusionForcing) and isinstance(sit.base, SiTInterface)
    assert sit.noise_levels == "shared" and sit.base.t_shift_base is None
    edm = build_interface(video_config(tmp_path, base="edm", sigma_max=20.0))
    assert isinstance(edm.base, EDMInterface) and edm.base.sigma_max == 20.0
    assert edm.noise_levels == "independent"
    config_lib.validate_config(video_config(tmp_path, t_shift_base=None))  # **kwargs: accepted
    with pytest.raises(ConfigError, match=r"t_shift_bse \(did you mean t_shift_base"):
        build_interface(video_config(tmp_path, t_shift_bse=None))
    assert registry.resolve("interface", "diffusion_forcing").__name__ == "diffusion_forcing"


def test_video_batches_train_and_sample_grids_draw_videos(tmp_path):
    from nnx_train.trainer import train

    c = video_config(tmp_path, t_shift_base=None)
    c.total_steps, c.log.every_steps, c.log.progress_bar = 2, 1, False
    c.checkpoint.every_steps, c.checkpoint.async_save = 2, False
    c.sample.every_steps, c.sample.num_images = 2, 4
    c.sample.sampler.num_steps = 2
    rng = np.random.default_rng(0)

    def make_data(index, count, batch):
        while True:
            yield {"x": rng.uniform(-1, 1, (batch, 3, 8, 8, 1)).astype(np.float32),
                   "y": rng.integers(0, 4, batch).astype(np.int32)}  # fmt: skip

    result = train(c, make_data)
    assert result.step == 2 and np.isfinite(result.metrics["loss"])
    grid = Image.open(tmp_path / "samples" / "00000002.png")
    # 4 videos, one row each: 3 frames of 8·8 pixels (cell 64) and a 12-pixel caption strip.
    assert grid.size == (3 * 64, 4 * (64 + 12))


def test_save_grid_lays_out_one_video_per_row_captioned_once(tmp_path):
    videos = -np.ones((2, 3, 4, 4, 1), np.float32)
    videos[1, 2] = 1.0  # last frame of the second video white
    path = str(tmp_path / "g.png")
    callbacks.save_grid(videos, np.array([7, 9]), path, cell=16)  # frames drawn 4× (16 px)
    img = np.asarray(Image.open(path).convert("L"))
    assert img.shape == (2 * (16 + 12), 3 * 16)
    assert img[40:, 32:].min() == 255 and img[40:, :32].max() == 0  # video 2: last frame white
    assert img[12:28].max() == 0  # video 1: every frame black
    caption = img[28:40]  # video 2's caption strip: its label over the first frame only
    assert caption[:, :16].min() < 255 and caption[:, 16:].min() == 255
