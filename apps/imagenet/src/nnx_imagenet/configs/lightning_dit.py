"""LightningDiT (Yao et al. 2025): a modernised DiT (SwiGLU, RMSNorm, 2-D RoPE) trained with
flow matching on SD-VAE latents of ImageNet 256².

    nnx-imagenet train --config=lightning_dit:xl2 --workdir=gs://BUCKET/ldit_xl2 \
        --config.data.kwargs.root=/data/imagenet256_sdvae_latents

Presets: `b2`, `xl2` (default), `smoke`.
Paper hyper-parameters: AdamW (β₂ = 0.95), lr 2e-4 constant, no weight decay, gradient clipping
1.0, batch 1024, EMA 0.9999, logit-normal t (μ = 0, σ = 1), class dropout 0.1; samples with an
ODE sampler (Heun-32 here), CFG with an interval. (The paper's best model uses VA-VAE f16d32
latents and patch 1: set data.shape=(16, 16, 32), model.patch_size=1, model.in_channels=32.)
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/lightning_dit"
    c.total_steps = 400_000
    common.imagenet_latents(c)
    c.data.global_batch_size = 1024

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "sit"
    c.interface.train_time_dist_type = "logitnormal"
    c.interface.t_mu = 0.0
    c.interface.t_sigma = 1.0
    c.interface.t_shift_base = 4096

    c.optimizer.lr = 2e-4
    c.optimizer.b2 = 0.95
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 1.0
    c.ema.decays = (0.9999,)

    c.sample.ema = "0.9999"
    c.sample.guidance = 1.5
    c.sample.sampler = ml_collections.ConfigDict({"name": "heun", "num_steps": 32})
    c.eval.ema = "0.9999"
    c.eval.num_images = 50_000

    def size(name: str):
        def apply(c):
            c.model = common.dit_model(name, 2, name="lightning_dit")
            c.model.use_rmsnorm = True
            c.model.use_swiglu = True
            c.model.use_rope = True
            c.model.qk_norm = "rms"

        return apply

    presets = {"b2": size("B"), "xl2": size("XL")}
    return common.apply_preset(c, arg, presets, default="xl2")
