"""EDM (Karras et al. 2022): σ-parameterised diffusion with EDM preconditioning and loss weight,
trained with the EDM2 recipe (Karras et al. 2024: Adam, inverse-sqrt decay, post-hoc EMA).

    nnx-imagenet train --config=edm:b2 --workdir=gs://BUCKET/edm_b2 \
        --config.data.kwargs.root=/data/imagenet256_sdvae_latents

Presets: `b2` (default: DiT-B/2 on 256² SD-VAE latents), `xl2`, `edm2_s` / `edm2_m` (the
EDM2 UNet on 512² latents, 64 × 64 × 4), `smoke`.
Hyper-parameters: σ ~ lognormal(P_mean = −0.4, P_std = 1.0) (EDM2's latent values; EDM's
pixel-space ones are −1.2 / 1.2), σ_data = 0.5, σ ∈ [0.002, 80]; Adam (β = 0.9, 0.99), batch
2048, lr_ref 0.0100 (EDM2-S; 0.0090 M) with inverse-sqrt decay after t_ref = 70k iterations,
after a 10M-image ramp-up (DiT backbones: lr 1e-4 as DiT); post-hoc EMA σ_rel ∈ {0.05, 0.10}
with snapshots every 8M images; 2nd-order EDM sampler with 32 steps (63 NFE).
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/edm"
    c.total_steps = 1_048_576  # 2147M images at batch 2048
    common.imagenet_latents(c)
    c.data.global_batch_size = 2048

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "edm"
    c.interface.train_time_dist_type = "lognormal"
    c.interface.t_mu = -0.4
    c.interface.t_sigma = 1.0
    c.interface.x_sigma = 0.5
    c.interface.sigma_min = 0.002
    c.interface.sigma_max = 80.0

    c.optimizer.name = "adam"
    c.optimizer.b1, c.optimizer.b2 = 0.9, 0.99
    c.optimizer.grad_clip = 0.0
    c.optimizer.weight_decay = 0.0
    c.ema.decays = ()
    c.posthoc_ema.stds = (0.05, 0.10)
    c.posthoc_ema.snapshot_every = 4096  # 8M images at batch 2048

    c.sample.ema = ""
    c.sample.guidance = 0.0
    c.sample.sampler = ml_collections.ConfigDict({"name": "edm", "num_steps": 32})
    c.eval.num_images = 50_000

    def dit(size: str):
        def apply(c):
            c.model = common.dit_model(size, 2)
            c.optimizer.lr = 1e-4
            c.optimizer.schedule = "constant"

        return apply

    def edm2(size: str, lr: float):
        def apply(c):
            common.imagenet_latents(c, size=64, channels=4)
            c.model = ml_collections.ConfigDict()
            c.model.name = "imagenet.edm2_unet"
            c.model.size = size  # EDM2 paper channels and dropout for this size
            c.model.img_resolution = 64
            c.model.img_channels = 4
            c.model.num_classes = 1000
            c.model.label_dropout = 0.0
            c.optimizer.lr = lr
            c.optimizer.schedule = "inverse_sqrt"
            c.optimizer.ref_steps = 70_000
            c.optimizer.warmup_steps = 4_883  # EDM2's 10M-image lr ramp-up at batch 2048

        return apply

    presets = {
        "b2": dit("B"),
        "xl2": dit("XL"),
        "edm2_s": edm2("s", 0.0100),
        "edm2_m": edm2("m", 0.0090),
    }
    return common.apply_preset(c, arg, presets, default="b2")
