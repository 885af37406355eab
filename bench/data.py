"""Data benchmark: grain pipeline images/s (ImageFolder JPEG reader, latent-shard reader) against
the images/s a train step consumes, measured in the same run on the same machine.

    uv run --frozen --no-sync python bench/data.py [--quick]

- ImageFolder: synthetic 400×300 JPEGs (ImageNet-like size and entropy) → ADM centre crop to 256,
  random flip, batches of 32, with the app's grain pipeline (`nnx_imagenet.data.pipeline`).
- Latent shards: 32×32×4 float32 SD-VAE-shaped latents with flipped copies, batches of 256.
- Train step: SiT loss + AdamW on a DiT-S/2 over 32×32×4 latents (one jitted step, batch 8 on CPU).
The ratio pipeline images/s ÷ train-step images/s says whether the reader keeps up (≥ 1).
Writes bench/results/data.json with the device, jax version and date.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import tempfile
import time

import jax
import numpy as np
from PIL import Image

from nnx_imagenet.data.image_folder import ImageFolderSource
from nnx_imagenet.data.latent_shards import LatentShardSource, LatentShardWriter
from nnx_imagenet.data.pipeline import HostShard, make_dataset

RESULTS = pathlib.Path(__file__).parent / "results" / "data.json"


def pipeline_rate(source, *, batch: int, kind: str, batches: int) -> float:
    """Images/s of the grain stream after one warm-up batch."""
    it = iter(make_dataset(source, batch_size=batch, seed=0, kind=kind, shard=HostShard()))
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batch * batches / (time.perf_counter() - t0)


def write_jpegs(root: pathlib.Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / "train" / f"n{i % 8:08d}"
        d.mkdir(parents=True, exist_ok=True)
        # Smooth noise: blurred random field, so JPEG sizes (~60–120 kB) resemble photographs.
        small = rng.integers(0, 256, size=(38, 50, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((400, 300), Image.BICUBIC)
        noise = rng.integers(-12, 13, size=(300, 400, 3))
        arr = np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{i:06d}.JPEG", quality=90)


def train_step_rate(batch: int, steps: int) -> tuple[float, str]:
    """Images/s of one jitted SiT + AdamW step on DiT-S/2 at 32×32×4 latents."""
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from nnx_backbones.dit import DiT
    from nnx_interfaces.sit import SiTInterface

    rngs = nnx.Rngs(0, time=1, noise=2, label_dropout=3, dropout=4)
    net = DiT(
        input_size=32, patch_size=2, in_channels=4, hidden_size=384, depth=12, num_heads=6,
        mlp_ratio=4.0, num_classes=1000, class_dropout_prob=0.1, learn_sigma=False, use_r=False,
        remat=False, attn_implementation=None, dtype=jnp.float32, param_dtype=jnp.float32,
        rngs=rngs,
    )  # fmt: skip
    model = SiTInterface(net, "uniform")
    opt = nnx.Optimizer(model, optax.adamw(1e-4), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        loss, grads = nnx.value_and_grad(lambda m: m.loss(x, y=y))(model)
        opt.update(model, grads)
        return loss

    x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 32, 32, 4)), jnp.float32)
    y = jnp.arange(batch, dtype=jnp.int32)
    for _ in range(2):  # the first update can change the optimizer state's structure: warm up twice
        step(model, opt, x, y).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(model, opt, x, y)
    loss.block_until_ready()
    return batch * steps / (time.perf_counter() - t0), "SiT + AdamW, DiT-S/2, 32x32x4, float32"


def main(quick: bool = False) -> dict:
    n_jpeg, n_lat = (160, 1024) if quick else (1024, 8192)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        write_jpegs(tmp / "imagenet", n_jpeg)
        folder = ImageFolderSource(tmp / "imagenet", "train", 256)
        jpeg_kb = np.mean([os.path.getsize(p) for p, _ in folder.samples]) / 1024
        folder_ips = pipeline_rate(folder, batch=32, kind="image", batches=(4 if quick else 24))
        rng = np.random.default_rng(0)
        with LatentShardWriter(tmp / "latents", shard_size=1024, scale=0.18215, num_classes=8) as w:
            for _ in range(n_lat // 512):
                z = rng.normal(size=(512, 32, 32, 4)).astype(np.float32)
                w.add(z, z[:, :, ::-1], rng.integers(0, 8, 512))
        latents = LatentShardSource(tmp / "latents")
        latent_ips = pipeline_rate(latents, batch=256, kind="latents", batches=(6 if quick else 24))
    train_batch = 8
    train_ips, step_desc = train_step_rate(train_batch, 2 if quick else 10)
    result = {
        "benchmark": "data",
        "metric": "grain pipeline images/s ÷ train-step images/s (≥ 1: the reader keeps up)",
        "quick": quick,
        "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind} "
        f"(x{jax.device_count()})",
        "cpu_count": os.cpu_count(),
        "host": platform.node() or "unknown",
        "jax_version": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "train_step": step_desc,
        "cases": {
            "imagefolder_jpeg_256": {
                "images_per_s": folder_ips,
                "batch": 32,
                "mean_jpeg_kB": float(jpeg_kb),
                "ratio_to_train_step": folder_ips / train_ips,
            },
            "latent_shards_32x32x4": {
                "images_per_s": latent_ips,
                "batch": 256,
                "ratio_to_train_step": latent_ips / train_ips,
            },
            "train_step_dit_s2": {"images_per_s": train_ips, "batch": train_batch},
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and batches (< 2 min)")
    print(json.dumps(main(parser.parse_args().quick), indent=2))
