"""SiT (Ma et al. 2024): flow matching on the linear path, on SD-VAE latents of ImageNet 256².

    nnx-imagenet train --config=sit:xl2 --workdir=gs://BUCKET/sit_xl2 \
        --config.data.kwargs.root=/data/imagenet256_sdvae_latents

Presets: `b2` (SiT-B/2), `xl2` (SiT-XL/2, default), `smoke` (CPU, synthetic data).
Paper hyper-parameters: AdamW, lr 1e-4 constant, no weight decay, batch 256, EMA 0.9999,
400K steps for the model comparisons (XL/2 to 7M), uniform t, velocity prediction, class dropout
0.1; samples with Heun (SDE Euler–Maruyama 250 in the paper's best numbers), CFG 1.5.
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/sit"
    c.total_steps = 400_000
    common.imagenet_latents(c)
    c.data.global_batch_size = 256
    c.model = common.dit_model("XL", 2)

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "sit"
    c.interface.train_time_dist_type = "uniform"  # SiT: t ~ U[0, 1]
    c.interface.t_mu = 0.0
    c.interface.t_sigma = 1.0
    c.interface.t_shift_base = 4096  # 32·32·4 = 4096 entries → shift 1 (no shift at 256²)

    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-4
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 0.0  # SiT/DiT train without clipping
    c.ema.decays = (0.9999,)

    c.sample.ema = "0.9999"
    c.sample.guidance = 1.5
    c.sample.sampler = ml_collections.ConfigDict({"name": "heun", "num_steps": 32})
    c.eval.ema = "0.9999"
    c.eval.num_images = 50_000

    presets = {
        "b2": lambda c: c.model.update(common.dit_model("B", 2)),
        "xl2": lambda c: c.model.update(common.dit_model("XL", 2)),
    }
    return common.apply_preset(c, arg, presets, default="xl2")
