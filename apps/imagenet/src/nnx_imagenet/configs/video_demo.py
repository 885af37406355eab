"""The offline video demo: a frame-causal video DiT trained with Diffusion Forcing (SiT) on moving
digits, then rolled out autoregressively past its training length.

    uv run nnx-imagenet train --config=video_demo                        # ≈ 5 min on 2 CPU cores
    uv run nnx-imagenet train --config=video_demo:smoke --workdir=/tmp/v  # CI (seconds)

Data: scikit-learn's 8×8 digits bouncing on a 32×32 canvas (`data/moving_digits.py`, 16-frame
videos written once), read through the generic video source as random clips of `num_frames`.
Model: `video_dit` (causal, temporal RoPE, per-frame adaLN), patch 4 → 64 tokens per frame
(with patch 8 a 64-value token and a 64-wide network learned no digit shapes at all).
Objective: `diffusion_forcing` around SiT: every frame of a clip at its own level
t^k ~ logit-normal, velocity target n − x per frame, 10% label dropout.
Afterwards (`demo/video_demo.py`) `eval.num_images` videos of 32 frames (8 clip lengths) are
generated frame by frame with the rolling KV cache (`sample.sampler` steps per frame) and
scored: per-frame digit class (the demo's digits classifier on a crop around the centre of
mass) and motion (centre-of-mass steps that move like the training data); GIFs and
`video_report.{json,txt}`.
"""

import ml_collections

from nnx_imagenet.configs import common

FRAMES = 4  # training clip length (the KV cache holds 3 context frames)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.seed = 0
    c.workdir = "workdirs/video_demo"
    c.total_steps = 2000

    common.set_data(c, "moving_digits", num_frames=FRAMES)
    c.data.shape = (FRAMES, 32, 32, 1)
    c.data.num_classes = 10
    c.data.global_batch_size = 16

    c.model = ml_collections.ConfigDict()
    c.model.name = "video_dit"
    c.model.input_size = 32
    c.model.num_frames = FRAMES
    c.model.causal = True
    c.model.patch_size = 4  # 16 values per token: v-prediction needs hidden ≫ patch dim
    c.model.in_channels = 1
    c.model.hidden_size = 64
    c.model.depth = 2
    c.model.num_heads = 2
    c.model.mlp_ratio = 4.0
    c.model.num_classes = 10
    c.model.class_dropout_prob = 0.1

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "diffusion_forcing"
    c.interface.base = "sit"
    c.interface.noise_levels = "independent"
    c.interface.train_time_dist_type = "logitnormal"
    c.interface.t_shift_base = None

    c.optimizer.lr = 2e-3
    c.optimizer.b2 = 0.99
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 200
    c.optimizer.min_lr_ratio = 0.1
    c.optimizer.grad_clip = 1.0

    c.ema.decays = (0.999,)
    c.checkpoint.every_steps = 500
    c.checkpoint.keep_last = 2
    c.checkpoint.keep_every = 0
    c.log.every_steps = 25

    c.sample.every_steps = 0  # the demo writes its own GIFs and report at the end
    c.sample.ema = "0.999"
    c.sample.guidance = 0.0
    c.sample.sampler = ml_collections.ConfigDict({"name": "euler", "num_steps": 16})
    c.eval.ema = "0.999"
    c.eval.num_images = 40  # videos generated after training (4 per class), 4 clips long

    def smoke(c: ml_collections.ConfigDict) -> None:  # CI: same pipeline, tiny sizes
        c.total_steps = 4
        c.optimizer.warmup_steps = 1
        c.checkpoint.every_steps = 2
        c.checkpoint.async_save = False
        c.log.every_steps = 1
        c.log.progress_bar = False
        c.data.global_batch_size = 8
        c.model.patch_size = 8
        c.model.hidden_size = 32
        c.model.depth = 1
        c.model.num_heads = 2
        c.sample.sampler.num_steps = 2
        c.eval.num_images = 4

    return common.apply_preset(c, arg, {"full": lambda c: None}, default="full", smoke_fn=smoke)
