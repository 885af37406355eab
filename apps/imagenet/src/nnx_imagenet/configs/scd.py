"""sCD (Lu & Song 2025, "Simplifying, stabilizing and scaling continuous-time consistency
models"): continuous-time consistency distillation in TrigFlow from a trained teacher.

    nnx-imagenet train --config=scd:s --workdir=gs://BUCKET/scd_s \
        --config.data.kwargs.root=/data/imagenet512_sdvae_latents \
        --config.interface.teacher_workdir=gs://BUCKET/edm2_s

Presets: `b2` (default: DiT-B/2 student), `xl2`, `smoke` (needs a teacher checkpoint, e.g. of
`sit:smoke`).
Hyper-parameters: TrigFlow x_t = cos(t)·x + sin(t)·z, σ_d = 0.5, log(σ_d tan t) ~
N(P_mean = −0.8, P_std = 1.6), tangent normalisation c = 0.1, tangent warm-up 10k steps,
adaptive weighting w(t); Adam (β = 0.9, 0.99), lr 1e-4 constant, batch 1024, EMA 0.9999,
1- or 2-step sampling. The teacher is the newest checkpoint of `interface.teacher_workdir`,
trained with `interface.teacher_config` (any interface with `pred`; the paper distils EDM2
teachers, here SiT by default).
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.workdir = "workdirs/scd"
    c.total_steps = 200_000
    common.imagenet_latents(c)
    c.data.global_batch_size = 1024

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "imagenet.scd"
    c.interface.teacher_config = "sit:xl2"
    c.interface.teacher_workdir = ""
    c.interface.sigma_d = 0.5
    c.interface.p_mean = -0.8
    c.interface.p_std = 1.6
    c.interface.tangent_warmup_steps = 10_000
    c.interface.tangent_norm_c = 0.1
    c.interface.adaptive_weight = True

    c.optimizer.name = "adam"
    c.optimizer.lr = 1e-4
    c.optimizer.b1, c.optimizer.b2 = 0.9, 0.99
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 0.0
    c.ema.decays = (0.9999,)

    c.sample.ema = "0.9999"
    c.sample.guidance = 0.0
    c.sample.sampler = ml_collections.ConfigDict({"name": "denoise_renoise", "num_steps": 2})
    c.eval.ema = "0.9999"
    c.eval.num_images = 50_000

    def size(name: str):
        def apply(c):
            c.model = common.dit_model(name, 2)
            c.model.class_dropout_prob = 0.0
            c.interface.teacher_config = f"sit:{name.lower()}2"

        return apply

    c = common.apply_preset(c, arg, {"b2": size("B"), "xl2": size("XL")}, default="b2")
    if arg and "smoke" in arg.split(","):
        c.interface.teacher_config = "sit:smoke"
    return c
