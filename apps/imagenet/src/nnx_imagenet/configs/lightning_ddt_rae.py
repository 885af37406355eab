"""LightningDDT (DiT^DH) on RAE latents (Zheng et al. 2025, "Diffusion Transformers with
Representation Autoencoders"): flow matching on frozen DINOv2-B (with registers) tokens.

    nnx-imagenet train --config=lightning_ddt_rae:xl --workdir=gs://BUCKET/ddt_rae \
        --config.data.kwargs.root=/data/imagenet256_rae_latents

Presets: `b` (DiT^DH-B), `xl` (DiT^DH-XL, default), `smoke`.
Latents: DINOv2-B/14 with registers on 224² crops → 16 × 16 × 768 tokens (patch 1), normalised.
Paper hyper-parameters: a LightningDiT trunk + a wide shallow head (2 blocks of width 2048);
AdamW (β = 0.9, 0.95), lr 2e-4 constant for 40 epochs then linear decay to 2e-5 (the trainer
has no constant-then-linear schedule: approximated here by cosine decay to 0.1× from step 0),
no weight decay, clipping 1.0, batch 1024, EMA 0.9995, 800 epochs (≈ 1M steps at 1024), logit-
normal t with the dimension-dependent shift √(16·16·768 / 4096) ≈ 6.93 (t_shift_base 4096),
class dropout 0.1; samples with Euler-50 (the paper's 1.51 FID uses autoguidance).
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/lightning_ddt_rae"
    c.total_steps = 1_000_000
    common.imagenet_latents(c, size=16, channels=768)
    c.data.kwargs.flip = True
    c.data.global_batch_size = 1024

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "sit"
    c.interface.train_time_dist_type = "logitnormal"
    c.interface.t_mu = 0.0
    c.interface.t_sigma = 1.0
    c.interface.t_shift_base = 4096  # shift = √(196608 / 4096) ≈ 6.93

    c.optimizer.lr = 2e-4
    c.optimizer.b2 = 0.95
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 1.0
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 0
    c.optimizer.min_lr_ratio = 0.1
    c.ema.decays = (0.9995,)

    c.sample.ema = "0.9995"
    c.sample.guidance = 1.0
    c.sample.sampler = ml_collections.ConfigDict({"name": "euler", "num_steps": 50})
    c.eval.ema = "0.9995"
    c.eval.num_images = 50_000

    def size(trunk: str):
        def apply(c):
            hidden, depth, heads = common.DIT_SIZES[trunk]
            m = common.dit_model(trunk, 1, input_size=16, in_channels=768, name="lightning_ddt")
            m = m.to_dict()
            m.update(hidden_size=(hidden, 2048), depth=(depth, 2), num_heads=(heads, 16))
            m.update(use_rmsnorm=True, use_swiglu=True, use_rope=True)
            c.model = ml_collections.ConfigDict(m)

        return apply

    presets = {"b": size("B"), "xl": size("XL")}
    return common.apply_preset(c, arg, presets, default="xl")
