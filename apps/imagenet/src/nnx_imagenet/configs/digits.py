"""The offline demo: class-conditional flow matching (SiT) on scikit-learn's 8×8 digits, on CPU.

    uv run nnx-imagenet train --config=demo                      # ≈ 2–4 min on 2 CPU cores
    uv run nnx-imagenet train --config=demo:short --workdir=/tmp/d  # the CI version (~40 s)

A residual MLP (width 256, 3 blocks) learns the SiT velocity of the linear path
x_t = (1 − t)·x + t·n (target n − x, logit-normal t), with 10% label dropout so classifier-free
guidance works. Afterwards `eval.num_images` samples (one class in turn) are drawn from the EMA
weights with Heun and scored by a digits classifier (see `nnx_imagenet/demo`).
"""

import ml_collections

from nnx_imagenet.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config()
    c.seed = 0
    c.workdir = "workdirs/digits_demo"
    c.total_steps = 2000

    common.set_data(c, "digits")
    c.data.shape = (8, 8, 1)
    c.data.num_classes = 10
    c.data.global_batch_size = 128

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"
    c.model.data_shape = (8, 8, 1)
    c.model.width = 256
    c.model.depth = 3
    c.model.num_classes = 10
    c.model.label_dropout = 0.1

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "sit"
    c.interface.train_time_dist_type = "logitnormal"
    c.interface.t_shift_base = None  # no resolution shift for 64-dimensional data

    c.optimizer.lr = 2e-3
    c.optimizer.b2 = 0.99
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 200
    c.optimizer.min_lr_ratio = 0.1
    c.optimizer.grad_clip = 1.0

    c.ema.decays = (0.999,)
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep_last = 2
    c.checkpoint.keep_every = 0
    c.log.every_steps = 20

    c.sample.every_steps = 0  # the demo writes its own per-class grid at the end
    c.sample.ema = "0.999"
    c.sample.guidance = 1.5
    c.sample.sampler = ml_collections.ConfigDict({"name": "heun", "num_steps": 16})
    c.eval.ema = "0.999"
    c.eval.num_images = 1000  # samples scored by the quality report (100 per class)

    def short(c: ml_collections.ConfigDict) -> None:  # CI: same pipeline, fewer steps/samples
        c.total_steps = 400  # the shortest run that passes the report with a margin (300: 93%)
        c.optimizer.warmup_steps = 40
        c.checkpoint.every_steps = 200
        c.log.every_steps = 20
        c.eval.num_images = 100
        c.sample.sampler.num_steps = 4

    def smoke(c: ml_collections.ConfigDict) -> None:
        short(c)
        c.total_steps = 4
        c.checkpoint.every_steps = 2
        c.log.every_steps = 1
        c.model.width = 32
        c.model.depth = 1
        c.data.global_batch_size = 8
        c.eval.num_images = 20

    return common.apply_preset(
        c, arg, {"full": lambda c: None, "short": short}, default="full", smoke_fn=smoke
    )
