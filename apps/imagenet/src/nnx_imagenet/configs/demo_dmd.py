"""The offline DMD2 demo: the digits demo's flow model distilled into a one-step generator.

    uv run nnx-imagenet train --config=demo_dmd     # trains the digits teacher first if absent

The teacher is the digits demo run (`--config=demo`, in `interface.teacher_workdir`, trained
first when it has no checkpoint); the generator and the fake score start from its EMA weights.
DMD2 with the teacher's classifier-free guidance (1.5) in the real score, TTUR 5, a GAN head on
the fake score's last hidden layer. Afterwards 1000 one-step samples (one class in turn) are
scored by the demo's digits classifier next to the teacher's own samples (its 16-step Heun with
CFG 1.5): `samples_per_class.png`, `loss_curve_generator.png`, `loss_curve_critic.png`,
`quality_report.{json,txt}`.
"""

import ml_collections

from nnx_imagenet.configs import digits


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = digits.get_config()  # data, model (the teacher's architecture), logging
    c.workdir = "workdirs/demo_dmd"
    c.total_steps = 1500

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "imagenet.dmd"
    c.interface.teacher_config = "digits"
    c.interface.teacher_workdir = "workdirs/digits_demo"
    c.interface.generator_steps = 1
    c.interface.fake_updates = 5
    c.interface.guidance = 1.5
    c.interface.gan_weight_generator = 3e-3
    c.interface.gan_weight_critic = 1e-2

    c.optimizer.lr = 2e-4
    c.optimizer.b1, c.optimizer.b2 = 0.9, 0.99
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 0
    c.optimizer.grad_clip = 10.0
    c.trees = ml_collections.ConfigDict(
        {"generator": {"ema": {"decays": (0.99,)}}, "critic": {"optimizer": {"lr": 4e-4},
                                                              "ema": {"decays": ()}}}
    )  # fmt: skip
    c.ema.decays = ()
    c.checkpoint.every_steps = 500
    c.sample.ema = "0.99"
    c.sample.guidance = 0.0
    c.sample.sampler = ml_collections.ConfigDict({"name": "euler", "num_steps": 1})
    c.eval.ema = "0.99"
    c.eval.num_images = 1000

    def smoke(c: ml_collections.ConfigDict) -> None:  # CI: a tiny teacher and a few steps
        c.interface.teacher_config = "digits:smoke"
        c.model.width = 32
        c.model.depth = 1
        c.data.global_batch_size = 8
        c.total_steps = 4
        c.checkpoint.every_steps = 2
        c.log.every_steps = 1
        c.eval.num_images = 20

    for part in [p for p in (arg or "").split(",") if p]:
        if part != "smoke":
            from nnx_imagenet.errors import ConfigError

            raise ConfigError(f"Unknown preset {part!r} for demo_dmd; expected 'smoke'.")
        smoke(c)
    return c
