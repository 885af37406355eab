"""DiT (Peebles & Xie 2023): DDPM ε-prediction with learned variance, on SD-VAE latents (256²).

    nnx-imagenet train --config=dit:xl2 --workdir=gs://BUCKET/dit_xl2 \
        --config.data.kwargs.root=/data/imagenet256_sdvae_latents

Presets: `s2`, `b2`, `l2`, `xl2` (default), `smoke`.
Paper hyper-parameters: AdamW lr 1e-4 constant, no weight decay, batch 256, EMA 0.9999,
T = 1000 linear β schedule (1e-4 → 0.02), ε-prediction with learned Σ (learn_sigma),
class dropout 0.1, 400K steps (XL/2 to 7M); samples with 250 DDPM steps, CFG 1.5.
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/dit"
    c.total_steps = 400_000
    common.imagenet_latents(c)
    c.data.global_batch_size = 256

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "ddpm"
    c.interface.train_time_dist_type = "uniform"
    c.interface.beta_schedule = "linear"
    c.interface.prediction = "eps"
    c.interface.num_steps = 1000

    c.optimizer.lr = 1e-4
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 0.0
    c.ema.decays = (0.9999,)

    c.sample.ema = "0.9999"
    c.sample.guidance = 1.5
    c.sample.sampler = ml_collections.ConfigDict({"name": "euler", "num_steps": 250})
    c.eval.ema = "0.9999"
    c.eval.num_images = 50_000

    def size(name: str):
        def apply(c):
            c.model = common.dit_model(name, 2)
            c.model.learn_sigma = True  # DiT learns Σ (the interface uses the first C channels)

        return apply

    presets = {"s2": size("S"), "b2": size("B"), "l2": size("L"), "xl2": size("XL")}
    return common.apply_preset(c, arg, presets, default="xl2")
