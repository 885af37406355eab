"""REPA (Yu et al. 2025): SiT-XL/2 with representation alignment to DINOv2-B features.

    nnx-imagenet train --config=dit_repa:xl2 --workdir=gs://BUCKET/repa_xl2 \
        --config.data.kwargs.root=/data/imagenet256_sdvae_latents

Presets: `b2`, `xl2` (default), `smoke`.
Paper hyper-parameters: SiT backbone (linear path, velocity), hidden tokens after block 8 aligned
(3-layer MLP projector, width 2048) to DINOv2-B/14 patch features with weight λ = 0.5 (negative
cosine similarity); AdamW lr 1e-4, batch 256, EMA 0.9999, 4M steps (400K for comparisons);
samples with SDE Euler–Maruyama 250 steps, CFG 1.8 on t ∈ [0, 0.7] (guidance interval).
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/dit_repa"
    c.total_steps = 4_000_000
    common.imagenet_latents(c)
    c.data.global_batch_size = 256
    c.model = common.dit_model("XL", 2)

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "imagenet.repa"
    c.interface.base = "sit"  # the wrapped objective
    c.interface.train_time_dist_type = "uniform"
    c.interface.encoder = "dinov2-vitb14"
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
    return common.apply_preset(c, arg, presets, default="xl2")
