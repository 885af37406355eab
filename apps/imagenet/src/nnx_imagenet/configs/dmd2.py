"""DMD2 (Yin et al. 2024, "Improved Distribution Matching Distillation for Fast Image
Synthesis"): a one-step generator distilled from a trained SiT on SD-VAE latents of ImageNet 256².

    nnx-imagenet train --config=dmd2:xl2 --workdir=gs://BUCKET/dmd2_xl2 \
        --config.data.kwargs.root=/data/imagenet256_sdvae_latents \
        --config.interface.teacher_workdir=gs://BUCKET/sit_xl2     # or teacher_path=DiT.pt

Presets: `b2` (default: SiT-B/2 teacher), `xl2`, `smoke` (needs a teacher checkpoint, e.g. of
`sit:smoke`). The teacher is the newest checkpoint of `interface.teacher_workdir` trained with
`interface.teacher_config` (its `sample.ema` weights), or a released DiT-layout checkpoint
`interface.teacher_path` (`nnx_backbones.convert.dit.load_dit`); `model` must be the teacher's
architecture (the generator and the fake score start from its weights).

DMD2's ImageNet-64 hyper-parameters (github.com/tianweiy/DMD2,
experiments/imagenet/imagenet_gan_classifier_genloss3e-3_diffusion1000_lr2e-6_scratch.sh, FID
1.51 after 200k iterations from the EDM ImageNet-64 teacher): generator and guidance (fake score)
lr 2e-6 each, AdamW β = (0.9, 0.999), weight decay 0.01, gradient-norm clipping 10, batch 280
(40 × 7 GPUs), TTUR 5 fake-score updates per generator update (`dfake_gen_update_ratio`),
distribution-matching times in [2%, 98%] of the Karras grid, GAN classifier on the fake score's
bottleneck with weights 1e-2 (fake score, `cls_loss_weight`) and 3e-3 (generator,
`gen_cls_loss_weight`), diffusion GAN over the whole grid (`diffusion_gan_max_timestep` 1000),
no regression loss, no real-score guidance, no EMA; one step from σ = 80 (here the teacher's
noise end). The fake score trains with its own interface's loss (DMD2: EDM's x₀ loss on the
Karras grid).
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/dmd2"
    c.total_steps = 200_000
    common.imagenet_latents(c)
    c.data.global_batch_size = 280

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "imagenet.dmd"
    c.interface.teacher_config = "sit:b2"
    c.interface.teacher_workdir = ""
    c.interface.teacher_path = ""
    c.interface.generator_steps = 1
    c.interface.fake_updates = 5  # TTUR
    c.interface.guidance = 1.0  # CFG of the real score (1 = none)
    c.interface.t_min = 0.02
    c.interface.t_max = 0.98
    c.interface.normalize = True
    c.interface.regression_weight = 0.0  # DMD1's regression loss: off in DMD2
    c.interface.gan_weight_generator = 3e-3
    c.interface.gan_weight_critic = 1e-2
    c.interface.gan_hidden_at = 0  # 0: the tokens after the last block
    c.interface.gan_t_max = 1.0

    c.optimizer.name = "adamw"
    c.optimizer.lr = 2e-6  # both trees (config.trees.<tree>.optimizer overrides per tree)
    c.optimizer.b1, c.optimizer.b2 = 0.9, 0.999
    c.optimizer.weight_decay = 0.01
    c.optimizer.grad_clip = 10.0
    c.ema.decays = ()

    c.sample.ema = ""
    c.sample.guidance = 0.0
    c.sample.sampler = ml_collections.ConfigDict({"name": "euler", "num_steps": 1})
    c.eval.ema = ""
    c.eval.num_images = 50_000

    def size(name: str):
        def apply(c):
            c.model = common.dit_model(name, 2)
            c.interface.teacher_config = f"sit:{name.lower()}2"

        return apply

    c = common.apply_preset(c, arg, {"b2": size("B"), "xl2": size("XL")}, default="b2")
    if arg and "smoke" in arg.split(","):
        c.interface.teacher_config = "sit:smoke"
    return c
