"""DiT (Peebles & Xie 2023): DDPM ε-prediction with learned variance, on SD-VAE latents (256²).

    nnx-imagenet train --config=dit:xl2 --workdir=gs://BUCKET/dit_xl2 \
        --config.data.kwargs.root=/data/imagenet256_sdvae_latents

Presets: `s2`, `b2`, `l2`, `xl2` (default), `smoke`, and `euler` (combinable, e.g. `xl2,euler`).
Paper hyper-parameters: AdamW lr 1e-4 constant, no weight decay, batch 256, EMA 0.9999,
T = 1000 linear β schedule (1e-4 → 0.02), ε-prediction with learned Σ (learn_sigma),
class dropout 0.1, 400K steps (XL/2 to 7M).

Sampling is the paper's path (DiT `sample_ddp.py`, FID 2.27 for DiT-XL/2 at CFG 1.5): ADM's
ancestral DDPM sampler with timestep respacing 1000 → 250 ("250"), the learned-range variance
from the network's extra channels, no clipping (`clip_denoised=False`), and classifier-free
guidance on the first 3 latent channels only (`forward_with_cfg`: `sample.guidance_channels=3`).
This is pinned against DiT's own code by packages/nnx-samplers/tests/test_dit_reference.py.
The preset `euler` instead integrates the probability-flow ODE with 250 Euler steps and guides
all channels.

Caveat: this project's DDPM loss trains the ε half only (L_simple, not ADM's L_simple + L_vlb),
so in a DiT trained here the variance rows of the zero-initialised final layer stay 0: v = 0,
i.e. log Σ halfway between log β̃ and log β. The learned range is exact for the released
checkpoints; for own runs `--config.sample.sampler.variance=fixed_small` (or `fixed_large`) is
the honest choice.
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
    c.sample.guidance_channels = 3  # forward_with_cfg guides ε on channels 0–2 of 4
    c.sample.sampler = ml_collections.ConfigDict(
        {
            "name": "ddpm",  # nnx_samplers.DDPMAncestral
            "num_steps": 250,
            "schedule": "250",  # ADM space_timesteps(1000, "250")
            "variance": "learned_range",
            "clip_denoised": False,
        }
    )
    c.eval.ema = "0.9999"
    c.eval.num_images = 50_000

    def size(name: str):
        def apply(c):
            c.model = common.dit_model(name, 2)
            c.model.learn_sigma = True  # DiT learns Σ (the interface uses the first C channels)

        return apply

    def euler(c):
        c.sample.sampler = ml_collections.ConfigDict({"name": "euler", "num_steps": 250})
        c.sample.guidance_channels = 0

    presets = {
        "s2": size("S"), "b2": size("B"), "l2": size("L"), "xl2": size("XL"), "euler": euler,
    }  # fmt: skip
    return common.apply_preset(c, arg, presets, default="xl2")
