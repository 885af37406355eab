"""MeanFlow (Geng et al. 2025): one-step generation by learning the average velocity u(z, r, t).

    nnx-imagenet train --config=meanflow:xl2 --workdir=gs://BUCKET/mf_xl2 \
        --config.data.kwargs.root=/data/imagenet256_sdvae_latents

Presets: `b2` (MF-B/2), `xl2` (MF-XL/2, default), `smoke`.
Paper hyper-parameters (Table 4 and appendix): SiT-style DiT with a second time input, AdamW
(β = 0.9, 0.95), lr 1e-4 constant, no weight decay, batch 256, EMA 0.9999, 240 epochs (≈ 1.2M
steps), (t, r) from logit-normal(−0.4, 1.0) with r ≠ t for 25% of the batch (fm_portion 0.75),
adaptive loss weight power p = 1, class dropout 0.1, training-time CFG (B/2: ω = 1.0, κ = 0.5;
XL/2: ω = 0.2, κ = 0.92, on t ∈ [0, 0.75] for XL/2); 1-NFE sampling.
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/meanflow"
    c.total_steps = 1_200_000
    common.imagenet_latents(c)
    c.data.global_batch_size = 256

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "meanflow"
    c.interface.train_time_dist_type = "logitnormal"
    c.interface.t_mu = -0.4
    c.interface.t_sigma = 1.0
    c.interface.t_shift_base = 4096
    c.interface.fm_portion = 0.75
    c.interface.norm_eps = 1e-3
    c.interface.norm_power = 1.0
    c.interface.cond_drop_ratio = 0.1
    c.interface.guidance_scale = 1.0
    c.interface.guidance_mixture_ratio = 0.5
    c.interface.guidance_t_min = 0.0
    c.interface.guidance_t_max = 1.0

    c.optimizer.lr = 1e-4
    c.optimizer.b2 = 0.95
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 0.0
    c.ema.decays = (0.9999,)

    c.sample.ema = "0.9999"
    c.sample.guidance = 0.0  # guidance is learned at training time
    c.sample.sampler = ml_collections.ConfigDict({"name": "jump", "num_steps": 1})
    c.eval.ema = "0.9999"
    c.eval.num_images = 50_000

    def b2(c):
        c.model = common.dit_model("B", 2)
        c.model.use_r = True
        c.model.class_dropout_prob = 0.0  # label dropout is done by the interface
        c.interface.guidance_scale, c.interface.guidance_mixture_ratio = 1.0, 0.5

    def xl2(c):
        c.model = common.dit_model("XL", 2)
        c.model.use_r = True
        c.model.class_dropout_prob = 0.0
        c.interface.guidance_scale, c.interface.guidance_mixture_ratio = 0.2, 0.92
        c.interface.guidance_t_max = 0.75

    return common.apply_preset(c, arg, {"b2": b2, "xl2": xl2}, default="xl2")
