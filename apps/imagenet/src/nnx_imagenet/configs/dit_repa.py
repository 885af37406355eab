"""REPA (Yu et al. 2025): SiT-XL/2 with representation alignment to DINOv2-B features.

    nnx-imagenet train --config=dit_repa:xl2 --workdir=gs://BUCKET/repa_xl2 \
        --config.data.kwargs.root=/data/imagenet

Presets: `b2`, `xl2` (default), `smoke`.
Paper hyper-parameters: SiT backbone (linear path, velocity), hidden tokens after block 8 aligned
(3-layer MLP projector, width 2048) to DINOv2-B/14 patch features with weight λ = 0.5 (negative
cosine similarity); AdamW lr 1e-4, batch 256, EMA 0.9999, 4M steps (400K for comparisons);
samples with SDE Euler–Maruyama 250 steps, CFG 1.8 on t ∈ [0, 0.7] (guidance interval).

Encoding on the fly, as the paper does (`nnx_imagenet.repa_features`): the data are ImageNet
images at 256² (image_folder); each batch goes through the SD-VAE (`interface.latent_encoder`,
posterior mean, scaled → `x`: 32×32×4 = `data.shape`) and DINOv2-B/14 at 224² (→ `x_feature`:
16×16 = 256 tokens × 768, matching the 256 tokens of a patch-2 DiT on 32×32 latents). Both
encoders' weights come from the nnx-backbones registry (offline without a cached copy: an error
naming the file and URL).

`smoke`: pixels, not latents — synthetic 8×8×3 "images" (x = the images, 16 DiT tokens) and a
tiny DINOv2 with RANDOM weights (`random-tiny`, 32 channels) at 56² (4×4 = 16 tokens), aligned
after block 1; runs offline on CPU in seconds. Its alignment targets mean nothing.
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/dit_repa"
    c.total_steps = 4_000_000
    common.set_data(c, "image_folder", resolution=256)  # raw images, encoded per batch
    c.data.shape = (32, 32, 4)  # what the DiT sees: SD-VAE latents of the 256² images
    c.data.num_classes = 1000
    c.data.global_batch_size = 256
    c.model = common.dit_model("XL", 2)

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "imagenet.repa"
    c.interface.base = "sit"  # the wrapped objective
    c.interface.train_time_dist_type = "uniform"
    c.interface.encoder = "dinov2-vitb14"
    c.interface.encoder_resolution = 224  # (224 / 14)² = 256 tokens = the DiT's 16×16
    c.interface.latent_encoder = "sd-vae-ft-ema"
    c.interface.repa_depth = 8
    c.interface.repa_loss_weight = 0.5
    c.interface.proj_dim = 2048
    c.interface.feature_dim = 768

    c.optimizer.lr = 1e-4
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 0.0
    c.ema.decays = (0.9999,)

    c.sample.ema = "0.9999"
    c.sample.guidance = 1.8
    c.sample.sampler = ml_collections.ConfigDict({"name": "euler_maruyama", "num_steps": 250})
    c.eval.ema = "0.9999"
    c.eval.num_images = 50_000

    def size(name: str, repa_depth: int):
        def apply(c):
            c.model = common.dit_model(name, 2)
            c.interface.repa_depth = repa_depth

        return apply

    presets = {"b2": size("B", 4), "xl2": size("XL", 8)}
    c = common.apply_preset(c, arg, presets, default="xl2")
    if "smoke" in (arg or "").split(","):
        smoke_repa(c)
    return c


def smoke_repa(c: ml_collections.ConfigDict) -> None:
    """Offline CPU REPA: 8×8×3 synthetic pixels, random tiny DINOv2 at 56² (16 = 16 tokens)."""
    c.data.shape = (8, 8, 3)
    c.model.in_channels = 3
    c.interface.encoder = "random-tiny"  # random weights: for smoke runs only
    c.interface.encoder_resolution = 56  # (56 / 14)² = 16 = (8 / 2)² DiT tokens
    c.interface.latent_encoder = ""  # pixels: x = the images
    c.interface.feature_dim = 32
    c.interface.repa_depth = 1
    c.interface.proj_dim = 64
