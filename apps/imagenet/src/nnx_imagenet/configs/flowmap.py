"""A flow-map objective: Lagrangian self-distillation (LSD, Boffi et al. 2025, "How to build a
consistency model: learning flow maps via self-distillation") on SD-VAE latents.

    nnx-imagenet train --config=flowmap:b2 --workdir=gs://BUCKET/lsd_b2 \
        --config.data.kwargs.root=/data/imagenet256_sdvae_latents

Presets: `b2` (default), `xl2`, `smoke`.
Φ(x, s, t) = x + (t − s)·f(x, s, t) on a DiT with a second time input; the loss is flow matching
on the diagonal f(x, t, t) plus the Lagrangian self-distillation residual ∂_tΦ(x, s, t) − b_t(Φ)
(weight 1), (s, t) uniform with a δ curriculum; linear interpolant (noise at 0, data at 1).
Optimiser as SiT (AdamW 1e-4, batch 256, EMA 0.9999); few-step sampling by flow-map jumps.
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/flowmap_lsd"
    c.total_steps = 400_000
    common.imagenet_latents(c)
    c.data.global_batch_size = 256

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "imagenet.lsd"
    c.interface.interpolant = "linear"
    c.interface.distill_weight = 1.0
    c.interface.time_dist = "uniform"
    c.interface.delta_t_span = 100_000
    c.interface.delta_t_start = 0.0
    c.interface.norm = "l2"

    c.optimizer.lr = 1e-4
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 1.0
    c.ema.decays = (0.9999,)

    c.sample.ema = "0.9999"
    c.sample.guidance = 0.0
    c.sample.sampler = ml_collections.ConfigDict({"name": "jump", "num_steps": 4})
    c.eval.ema = "0.9999"
    c.eval.num_images = 50_000

    def size(name: str):
        def apply(c):
            c.model = common.dit_model(name, 2)
            c.model.use_r = True

        return apply

    return common.apply_preset(c, arg, {"b2": size("B"), "xl2": size("XL")}, default="b2")
