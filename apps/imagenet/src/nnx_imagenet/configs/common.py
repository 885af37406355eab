"""Shared pieces of the app's configs: the trainer schema plus the app's `data` section.

Every config starts from `nnx_train.config.default_config()` (the schema the trainer validates)
and fills in the sections below. Sizes of the transformer families are tables, so a preset is one
line. The app adds the dataset by name (`data.name`, with its options under `data.kwargs`):

    digits        scikit-learn's bundled 8×8 digits, written as an ImageFolder tree (the demo)
    image_folder  ImageNet-style tree root/<split>/<synset>/*.JPEG, ADM centre crop
    latents       SD-VAE / RAE latent shards written by `nnx-imagenet prepare`
    tfds          TFDS imagenet2012 (needs the `tf` extra)
    synthetic     seeded Gaussian data of `data.shape` with random labels (smoke runs, no data)
    video         videos root/<split>/<class>/<id>.{npy,gif}, clips of num_frames at a temporal
                  stride from a random start (data.shape = (num_frames, res, res, channels))
    moving_digits the digits bouncing on a 32×32 canvas, written once as such a video tree (the
                  video demo)
"""

from collections.abc import Callable

import ml_collections

from nnx_imagenet.errors import ConfigError

# DiT / SiT sizes (Peebles & Xie 2023, Table 1): hidden size, depth, heads.
DIT_SIZES = {
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}

# Options of each dataset under data.kwargs, with defaults.
DATA_KWARGS = {
    "digits": {"root": "", "split": "train", "held_out": 0.2, "num_threads": 4},
    "image_folder": {
        "root": "",
        "split": "train",
        "resolution": 256,
        "flip": True,
        "num_threads": 16,
    },
    "latents": {"root": "", "flip": True, "num_threads": 16},
    "tfds": {
        "name": "imagenet2012",
        "split": "train",
        "data_dir": "",
        "resolution": 256,
        "flip": True,
        "num_threads": 16,
    },
    "synthetic": {"num_examples": 1024},
    "video": {
        "root": "",
        "split": "train",
        "num_frames": 16,  # clip length F
        "stride": 1,  # temporal stride between clip frames
        "random_start": True,  # clip start uniform over the video (else its first frame)
        "resolution": 64,
        "channels": 3,
        "flip": False,
        "num_threads": 8,
    },
    "moving_digits": {
        "root": "",
        "split": "train",
        "held_out": 0.2,
        "video_frames": 16,  # frames per written video
        "videos_per_digit": 2,  # motions per real digit
        "num_frames": 16,
        "stride": 1,
        "random_start": True,
        "num_threads": 4,
    },
}


def base_config() -> ml_collections.ConfigDict:
    """The trainer's defaults with ImageNet-scale logging/checkpoint intervals."""
    from nnx_train.config import default_config

    c = default_config()
    c.checkpoint.every_steps = 10_000
    c.checkpoint.keep_last = 2
    c.checkpoint.keep_every = 100_000
    c.log.every_steps = 100
    c.sample.every_steps = 10_000
    c.sample.num_images = 32
    return c


def set_data(c: ml_collections.ConfigDict, name: str, **kwargs) -> None:
    """Select dataset `name` (a key of DATA_KWARGS) with its default options, updated by kwargs."""
    if name not in DATA_KWARGS:
        raise ConfigError(f"Unknown dataset {name!r}; expected one of {', '.join(DATA_KWARGS)}.")
    c.data.name = name
    c.data.kwargs = ml_collections.ConfigDict(dict(DATA_KWARGS[name], **kwargs))


def imagenet_latents(c: ml_collections.ConfigDict, *, size: int = 32, channels: int = 4) -> None:
    """ImageNet as SD-VAE latents (256² → 32×32×4 by default), 1000 classes."""
    set_data(c, "latents")
    c.data.shape = (size, size, channels)
    c.data.num_classes = 1000


def dit_model(
    size: str, patch: int, *, input_size: int = 32, in_channels: int = 4, name: str = "dit"
) -> ml_collections.ConfigDict:
    """A DiT-family backbone section: `size` in DIT_SIZES, patch size `patch`."""
    if size not in DIT_SIZES:
        raise ConfigError(f"Unknown DiT size {size!r}; expected one of {', '.join(DIT_SIZES)}.")
    hidden, depth, heads = DIT_SIZES[size]
    m = ml_collections.ConfigDict()
    m.name = name
    m.input_size = input_size
    m.patch_size = patch
    m.in_channels = in_channels
    m.hidden_size = hidden
    m.depth = depth
    m.num_heads = heads
    m.mlp_ratio = 4.0
    m.num_classes = 1000
    m.class_dropout_prob = 0.1  # classifier-free guidance training (DiT, SiT)
    m.learn_sigma = False
    m.use_r = False
    m.remat = False
    m.attn_implementation = None
    m.dtype = "bfloat16"  # compute dtype; params stay float32
    m.param_dtype = "float32"
    return m


def smoke_model(m: ml_collections.ConfigDict) -> None:
    """Shrink a transformer section to a CPU-sized one (hidden 64, depth 2, 2 heads, float32)."""
    if isinstance(m.hidden_size, tuple):  # two-part networks (LightningDDT: trunk, head)
        m.hidden_size, m.depth, m.num_heads = (64, 64), (2, 1), (2, 2)
    else:
        m.hidden_size, m.depth, m.num_heads = 64, 2, 2
    m.dtype = "float32"


def smoke(c: ml_collections.ConfigDict) -> None:
    """CPU smoke size: synthetic data of the same shape (or 8×8), a few steps, tiny batch."""
    shape = tuple(c.data.shape)
    if len(shape) == 3:  # shrink images / latents to 8×8 keeping channels
        shape = (8, 8, shape[-1])
        if "input_size" in c.model:
            c.model.input_size = 8
        if "img_resolution" in c.model:  # EDM2 UNet: 8×8 input, narrow channels
            c.model.img_resolution = 8
            c.model.model_channels = 32
    c.data.shape = shape
    c.data.num_classes = min(c.data.num_classes, 10) if c.data.num_classes else 0
    if "num_classes" in c.model and c.model.num_classes:
        c.model.num_classes = c.data.num_classes
    set_data(c, "synthetic", num_examples=64)
    c.data.global_batch_size = 8
    c.total_steps = 4
    c.checkpoint.every_steps = 2
    c.checkpoint.keep_every = 0
    c.checkpoint.async_save = False
    c.log.every_steps = 1
    c.log.progress_bar = False
    c.sample.every_steps = 0
    c.sample.num_images = 4
    c.eval.every_steps = 0
    c.posthoc_ema.snapshot_every = 0
    c.posthoc_ema.stds = ()
    c.mesh.data = -1
    c.mesh.fsdp = 1


def apply_preset(
    c: ml_collections.ConfigDict,
    arg: str | None,
    presets: dict[str, Callable[[ml_collections.ConfigDict], None]],
    default: str,
    smoke_fn: Callable[[ml_collections.ConfigDict], None] | None = None,
) -> ml_collections.ConfigDict:
    """Apply `arg` (e.g. "xl2", or "xl2,smoke"; None = `default`) from `presets`; "smoke" shrinks
    (with `smoke_fn`, default `smoke` + `smoke_model`).

    Raises:
      ConfigError: naming the unknown preset and the valid ones.
    """
    if _PRESET_LOG is not None:
        _PRESET_LOG.append((sorted(presets), default))
    parts = [p for p in (arg or default).split(",") if p]
    if parts == ["smoke"]:
        parts = [default, "smoke"]
    for part in parts:
        if part == "smoke":
            continue
        if part not in presets:
            raise ConfigError(
                f"Unknown preset {part!r}; this config has: {', '.join(sorted(presets))} "
                f"(and 'smoke', combinable as 'PRESET,smoke')."
            )
        presets[part](c)
    if "smoke" in parts:
        if smoke_fn is not None:
            smoke_fn(c)
        else:
            smoke(c)
            if "hidden_size" in c.model:
                smoke_model(c.model)
    return c


_PRESET_LOG: list | None = None


def list_presets(get_config: Callable[[str | None], ml_collections.ConfigDict]) -> tuple:
    """(preset names, default preset) of a config file's `get_config`, read by calling it once
    with its default preset; ((), None) for a config that does not use `apply_preset`."""
    global _PRESET_LOG
    _PRESET_LOG = []
    try:
        get_config(None)
        return _PRESET_LOG[0] if _PRESET_LOG else ((), None)
    finally:
        _PRESET_LOG = None


def validate(
    c: ml_collections.ConfigDict, *, check_constructors: bool = True
) -> ml_collections.ConfigDict:
    """Check `c` against the trainer schema and the app's data section; return it unchanged.

    `check_constructors=False` skips checking `model` / `interface` / `sample.sampler` keys
    against their constructors' signatures (which imports them, and so jax); the CLI checks
    everything else first, so that a typo is reported in well under a second.

    Raises:
      ConfigError: listing every unknown key (with the closest valid names), wrong type or bad
        value, before anything is built or compiled.
    """
    from nnx_imagenet.plugin_names import register_plugins
    from nnx_train.config import validate_config
    from nnx_train.errors import ConfigError as TrainConfigError

    register_plugins()
    errors = []
    try:
        validate_config(c, check_constructors=check_constructors)
    except TrainConfigError as e:
        errors.append(str(e))
    errors += _data_errors(c)
    if c.eval.get("every_steps", 0):
        errors.append(
            f"eval.every_steps = {c.eval.every_steps}: nnx-imagenet train runs no evaluation "
            f"during training; set --config.eval.every_steps=0 and score checkpoints with "
            f"`nnx-imagenet eval --step=N` (sample grids during training: sample.every_steps)."
        )
    if errors:
        raise ConfigError("\n".join(errors))
    return c


def _data_errors(c: ml_collections.ConfigDict) -> list[str]:
    """The app's `data` section: a known `data.name`, its `data.kwargs`, labels and shapes."""
    import difflib

    errors = []
    name = c.data.get("name", "")
    if name not in DATA_KWARGS:
        close = difflib.get_close_matches(str(name), DATA_KWARGS, n=2)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        return [f"data.name = {name!r} is not one of {', '.join(DATA_KWARGS)}.{hint}"]
    allowed = DATA_KWARGS[name]
    for key, value in c.data.kwargs.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(f'data.kwargs.{k}' for k in close)}?" if close else ""
            if name == "synthetic" and key == "root":  # a smoke preset given a real dataset
                hint = (
                    " Smoke presets train on synthetic data; to train the smoke-size model on "
                    "real data add --config.data.name=latents (or image_folder, ...)."
                )
            errors.append(
                f"unknown field data.kwargs.{key!r} for data.name={name!r}.{hint} Valid: "
                f"{', '.join(sorted(allowed))}."
            )
        elif not isinstance(value, type(allowed[key])) and not (
            isinstance(allowed[key], float) and isinstance(value, int)
        ):
            errors.append(
                f"data.kwargs.{key} must be {type(allowed[key]).__name__}; got {value!r}."
            )
    kw = c.data.kwargs
    for key, low in (("resolution", 8), ("num_threads", 1), ("num_examples", 1),
                     ("num_frames", 1), ("stride", 1), ("video_frames", 1),
                     ("videos_per_digit", 1)):  # fmt: skip
        if isinstance(kw.get(key), int) and kw[key] < low:
            errors.append(f"data.kwargs.{key} must be ≥ {low}; got {kw[key]}.")
    held_out = kw.get("held_out")
    if isinstance(held_out, int | float) and not 0.0 < held_out < 1.0:
        errors.append(f"data.kwargs.held_out (the held-out fraction) must lie in (0, 1); got "
                      f"{held_out}.")  # fmt: skip
    missing = sorted(set(allowed) - set(c.data.kwargs))
    if missing:
        errors.append(
            f"data.kwargs lacks {', '.join(missing)} for data.name={name!r}; set them with "
            f"--config.data.kwargs.KEY=VALUE (defaults: "
            f"{', '.join(f'{k}={allowed[k]!r}' for k in missing)})."
        )
    if isinstance(kw.get("channels"), int) and kw.channels not in (1, 3):
        errors.append(f"data.kwargs.channels must be 1 (grey) or 3 (RGB); got {kw.channels}.")
    errors += _video_errors(c)
    n_data = c.data.num_classes
    n_model = c.model.get("num_classes", None)
    if isinstance(n_model, int) and n_model and isinstance(n_data, int) and n_data > n_model:
        errors.append(
            f"data.num_classes = {n_data} but model.num_classes = {n_model}: labels ≥ "
            f"{n_model} have no embedding; set --config.model.num_classes={n_data}."
        )
    resolution = c.data.kwargs.get("resolution", None)
    shape = tuple(c.data.shape)
    repa = c.interface.get("name", "") == "imagenet.repa"  # REPA encodes raw images per batch
    pixels = name in ("image_folder", "tfds") and not repa and isinstance(resolution, int)
    if pixels and shape != (resolution, resolution, 3):
        errors.append(
            f"data.name = {name!r} makes {resolution}×{resolution} RGB images (data.kwargs."
            f"resolution) but data.shape = {shape}; for pixel-space training set "
            f"--config.data.shape='({resolution}, {resolution}, 3)' and the model's input "
            f"to match (e.g. --config.model.input_size={resolution} "
            f"--config.model.in_channels=3), or use --config.data.name=latents."
        )
    return errors


def _video_errors(c: ml_collections.ConfigDict) -> list[str]:
    """Video datasets: data.shape = (num_frames, H, W, C) matching the clip settings."""
    name, kw, shape = c.data.name, c.data.kwargs, tuple(c.data.shape)
    if name not in ("video", "moving_digits"):
        return []
    if not all(isinstance(kw.get(k), int) for k in ("num_frames", "stride")):
        return []  # type errors are reported already
    if name == "video":
        want = (kw.num_frames, kw.resolution, kw.resolution, kw.channels)
    else:
        want = (kw.num_frames, 32, 32, 1)
    errors = []
    if shape != want:
        errors.append(
            f"data.name = {name!r} makes clips of shape {want} (num_frames, resolution, "
            f"resolution, channels) but data.shape = {shape}; set --config.data.shape="
            f"'{want}' (and the model's num_frames / input_size / in_channels to match)."
        )
    span = (kw.num_frames - 1) * kw.stride + 1
    if (
        name == "moving_digits"
        and isinstance(kw.get("video_frames"), int)
        and (span > kw.video_frames)
    ):
        errors.append(
            f"a clip of data.kwargs.num_frames = {kw.num_frames} at stride {kw.stride} spans "
            f"{span} frames but the moving-digits videos have data.kwargs.video_frames = "
            f"{kw.video_frames}; lower num_frames / stride or raise video_frames."
        )
    return errors
