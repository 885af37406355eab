"""The `sample`, `eval` and `prepare` commands (the `train` command is `run.run_train`)."""

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
from tqdm import tqdm

from nnx_imagenet.checkpoints import load_state
from nnx_imagenet.data.image_folder import ImageFolderSource
from nnx_imagenet.data.latent_shards import LatentShardWriter
from nnx_imagenet.errors import AppError
from nnx_imagenet.sampling import sample_fn_from_state


class _Collect:
    """A `generate` consumer keeping every uint8 image and its label."""

    def __init__(self):
        self.images, self.labels = [], []

    def update(self, images, labels=None, indices=None) -> None:
        self.images.append(np.asarray(images))
        if labels is not None:
            self.labels.append(np.asarray(labels))


def _decode_fn(config: ml_collections.ConfigDict):
    """Latents → images for latent datasets (SD-VAE named by data.kwargs) and REPA runs that
    encode with an SD-VAE on the fly (`interface.latent_encoder`), else None."""
    if config.interface.get("name", "") == "imagenet.repa":
        if not config.interface.latent_encoder:
            return None
        from nnx_backbones.convert.sd_vae import pretrained_sd_vae

        vae = pretrained_sd_vae(config.interface.latent_encoder)
        return lambda z: vae.decode_latents(z)
    if config.data.name not in ("latents", "synthetic") or len(config.data.shape) != 3:
        return None
    if config.data.name == "synthetic":
        return None
    from nnx_backbones.convert.sd_vae import pretrained_sd_vae

    vae = pretrained_sd_vae("sd-vae-ft-ema")
    return lambda z: vae.decode_latents(z)


def _decode_fn_is_none(config: ml_collections.ConfigDict) -> bool:
    """True when samples are kept as the model's arrays (no VAE decode), without loading a VAE."""
    if config.interface.get("name", "") == "imagenet.repa":
        return not config.interface.latent_encoder
    return config.data.name != "latents" or len(config.data.shape) != 3


class _Grey2RGB:
    """Consumer adapter: grey `[b, H, W, 1]` uint8 → `[b, H, W, 3]` (Inception takes RGB)."""

    def __init__(self, inner):
        self.inner = inner

    def update(self, images, labels=None, indices=None) -> None:
        self.inner.update(np.repeat(np.asarray(images), 3, axis=-1), labels, indices)

    def sync(self) -> None:
        if hasattr(self.inner, "sync"):
            self.inner.sync()


class _MapLabels:
    """Consumer adapter: generate's labels 0..k−1 → the `--classes` labels they stand for."""

    def __init__(self, inner, classes: np.ndarray):
        self.inner, self.classes = inner, classes

    def update(self, images, labels=None, indices=None) -> None:
        self.inner.update(images, None if labels is None else self.classes[labels], indices)

    def sync(self) -> None:
        if hasattr(self.inner, "sync"):
            self.inner.sync()


def _generate(config, flags, ema: str, consumers) -> int:
    """Restore `--step` (default: the newest readable checkpoint) and feed `--num_samples`
    samples (classes in turn: all, or `--classes`) to `consumers`; returns the step."""
    from nnx_eval.generate import generate
    from nnx_imagenet.cli_checks import parse_classes

    step_flag = getattr(flags, "step", -1)
    step, state = load_state(config, None if step_flag < 0 else step_flag)
    print(f"sampling from step {step} ({'EMA ' + ema if ema else 'raw weights'}, "
          f"{config.sample.sampler.name}, guidance {config.sample.guidance})")  # fmt: skip
    fn = sample_fn_from_state(config, state, ema=ema)
    classes = np.asarray(parse_classes(getattr(flags, "classes", ""), config.data.num_classes))
    n_cls = (len(classes) or config.data.num_classes) or None
    if len(classes):
        table = jnp.asarray(classes, jnp.int32)
        consumers = [_MapLabels(c, classes) for c in consumers]
        sample_fn = lambda key, labels: fn(key, table[labels], flags.batch_size)  # noqa: E731
    else:
        sample_fn = lambda key, labels: fn(key, labels, flags.batch_size)  # noqa: E731
    generate(
        sample_fn,
        flags.num_samples,
        batch_size=flags.batch_size,
        seed=flags.seed,
        num_classes=n_cls,
        equal_per_class=n_cls is not None,
        decode_fn=_decode_fn(config),
        consumers=consumers,
    )
    return step


def sample(config: ml_collections.ConfigDict, flags: Any) -> None:
    """Generate `--num_samples` images from the newest checkpoint into an .npz or a folder."""
    ema = config.sample.ema if flags.ema is None else flags.ema
    sink = _Collect()
    step = _generate(config, flags, ema, [sink])
    images = np.concatenate(sink.images)[: flags.num_samples]
    labels = np.concatenate(sink.labels)[: flags.num_samples] if sink.labels else None
    out = Path(flags.out or Path(config.workdir) / f"samples_{step:08d}.npz")
    if out.suffix == ".npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        extra = {} if labels is None else {"labels": labels}
        np.savez(out, arr_0=images, **extra)  # ADM evaluator layout
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            name = f"{i:06d}" + ("" if labels is None else f"_class{int(labels[i]):04d}")
            if img.ndim == 4:  # a video [T, H, W, C]: an animated GIF
                from nnx_imagenet.demo.plots import save_gif

                save_gif(img, out / f"{name}.gif", scale=1)
                continue
            Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(
                out / f"{name}.png"
            )
    print(f"wrote {len(images)} samples (step {step}) to {out}")
    if flags.grid and labels is not None and images.ndim == 5:  # videos: a row of frames each
        from nnx_train.callbacks import save_grid

        path = out.with_suffix(".png") if out.suffix == ".npz" else out / "grid.png"
        shown = images[:16].astype(np.float32) / 127.5 - 1.0
        save_grid(shown, labels[:16], str(path), cell=max(32, images.shape[2]))
        print(f"wrote grid {path}")
    elif flags.grid and labels is not None:
        from nnx_imagenet.demo.plots import save_class_grid

        classes = sorted(set(labels.tolist()))[:16]
        k = min(int(np.sum(labels == c)) for c in classes)
        k = min(k, 16)
        if k:
            grid = np.stack([images[labels == c][:k] for c in classes]).astype(np.float32)
            path = out.with_suffix(".png") if out.suffix == ".npz" else out / "grid.png"
            save_class_grid(grid / 127.5 - 1.0, path, scale=max(1, 64 // images.shape[1]))
            print(f"wrote grid {path}")


def evaluate(config: ml_collections.ConfigDict, flags: Any) -> None:
    """FID / sFID / IS against `--ref` reference statistics, from `--num_samples` samples."""
    from nnx_eval.accumulate import inception_accumulator, inception_metrics
    from nnx_eval.features import inception_feature_fn
    from nnx_eval.reference import load_reference_stats

    if not flags.ref:
        raise AppError(
            "eval needs --ref=REFERENCE.npz (ADM `VIRTUAL_imagenet256_labeled.npz` or stats "
            "written by `nnx-imagenet prepare --what=ref_stats`)."
        )
    if len(config.data.shape) != 3:
        raise AppError(
            f"eval computes Inception metrics on images; data.shape = {config.data.shape}."
        )
    channels = config.data.shape[-1] if _decode_fn_is_none(config) else 3
    if channels not in (1, 3):
        raise AppError(
            f"eval feeds RGB (or grey) images to Inception but this run samples {channels}-channel "
            f"arrays (data.shape = {tuple(config.data.shape)}, no VAE decoder for data.name = "
            f"{config.data.name!r}); evaluate a run on real latents or images."
        )
    reference = load_reference_stats(flags.ref)
    inception = _load_inception(getattr(flags, "inception_path", "") or None)
    size = getattr(flags, "inception_size", 299)
    # IS over 10 splits (ADM) needs ≥ 10 samples; fewer (quick checks) use one split each.
    splits = min(10, flags.num_samples)
    feature_fn = inception_feature_fn(inception, size)
    acc = inception_accumulator(feature_fn, flags.num_samples, is_splits=splits)
    ema = config.eval.ema if flags.ema is None else flags.ema
    step = _generate(config, flags, ema, [_Grey2RGB(acc) if channels == 1 else acc])
    metrics = inception_metrics(acc, reference)
    out = Path(config.workdir) / f"eval_{step:08d}.json"
    out.write_text(
        json.dumps({"step": step, "num_samples": flags.num_samples, **metrics}, indent=1)
    )
    print(json.dumps(metrics, indent=1))
    print(f"wrote {out}")


def _load_inception(path: str | None):
    """The FID Inception network; offline without a cached copy, an error naming the flag."""
    from nnx_backbones.errors import WeightsNotFoundError
    from nnx_eval.inception_weights import load_inception

    try:
        return load_inception(path)
    except WeightsNotFoundError as e:
        raise AppError(
            f"{e} Offline, pass the weights with --inception_path=FILE: pytorch-fid's "
            f"pt_inception-2015-12-05-6726825d.pth (reading a .pth needs torch once: `pip "
            f"install torch --index-url https://download.pytorch.org/whl/cpu`) or a "
            f".safetensors written by nnx_eval.inception_weights.save_inception_weights."
        ) from e


def prepare(flags: Any) -> None:
    """`--what=latents`: SD-VAE latent shards (+ flipped copies); `--what=ref_stats`: FID stats."""
    if not flags.src:
        raise AppError("prepare needs --src=DATASET_ROOT (holding <split>/<synset>/*.JPEG).")
    source = ImageFolderSource(flags.src, flags.split, flags.resolution)
    if flags.what == "ref_stats":
        _prepare_ref_stats(source, flags)
    elif flags.what == "latents":
        _prepare_latents(source, flags)
    else:
        raise AppError(f"--what must be 'latents' or 'ref_stats'; got {flags.what!r}.")


def _batches(source, batch_size: int):
    for start in range(0, len(source), batch_size):
        items = [source[i] for i in range(start, min(start + batch_size, len(source)))]
        yield (
            np.stack([it["image"] for it in items]),
            np.asarray([it["label"] for it in items], np.int32),
        )


def encode_to_shards(source, encode, out_dir, *, batch_size, shard_size, scale, shift, encoder):
    """Encode every image of `source` and its mirror with `encode` (uint8 → float latents `[B,
    h, w, c]`) into latent shards under `out_dir`; returns the manifest path."""
    writer = LatentShardWriter(
        out_dir, shard_size=shard_size, scale=scale, shift=shift,
        num_classes=getattr(source, "num_classes", 0), encoder=encoder,
    )  # fmt: skip
    with writer, tqdm(total=len(source), unit="img", desc="encode") as bar:
        for images, labels in _batches(source, batch_size):
            writer.add(encode(images), encode(images[:, :, ::-1]), labels)
            bar.update(len(labels))
    return Path(out_dir) / "manifest.json"


def _prepare_latents(source, flags) -> None:
    from nnx_backbones.convert.sd_vae import pretrained_sd_vae

    if not flags.out:
        raise AppError("prepare --what=latents needs --out=FOLDER for the shards.")
    vae = pretrained_sd_vae(flags.vae, path=flags.vae_path or None)
    encode_mean = jax.jit(lambda x: vae.encode(x)[0])  # posterior mean, unscaled

    def encode(images: np.ndarray) -> np.ndarray:
        x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
        return np.asarray(encode_mean(x))

    s = vae.scaling
    path = encode_to_shards(
        source, encode, flags.out, batch_size=flags.batch_size, shard_size=flags.shard_size,
        scale=s.scale, shift=s.shift, encoder=f"{flags.vae} posterior mean",
    )  # fmt: skip
    print(f"wrote latent shards of {len(source)} images (+ flipped copies): {path}")


def _prepare_ref_stats(source, flags) -> None:
    from nnx_eval.accumulate import inception_accumulator
    from nnx_eval.features import inception_feature_fn
    from nnx_eval.reference import compute_reference_stats, save_adm_stats, save_edm_stats

    if not flags.out.endswith(".npz"):
        raise AppError("prepare --what=ref_stats needs --out=FILE.npz.")
    acc = inception_accumulator(
        inception_feature_fn(_load_inception(flags.inception_path or None)), len(source)
    )
    stats = compute_reference_stats(
        (imgs for imgs, _ in _batches(source, flags.batch_size)), acc, total=len(source)
    )
    if "spatial" in stats:
        save_adm_stats(flags.out, stats["pool"], stats["spatial"])
    else:
        save_edm_stats(flags.out, stats["pool"])
    print(f"wrote reference statistics of {len(source)} images to {flags.out}")
