"""The optional Self-Forcing stage of the video demo: the Diffusion-Forcing video model of
`video_demo` turned into a few-step autoregressive generator trained on its own rollouts.

    uv run nnx-imagenet train --config=video_self_forcing   # trains video_demo first if absent
    uv run nnx-imagenet train --config=video_self_forcing:smoke --workdir=/tmp/sf \
        --config.interface.teacher_workdir=/tmp/sf_teacher  # CI (seconds)

The teacher is the video demo run (`--config=video_demo`, in `interface.teacher_workdir`,
trained first when it has no checkpoint); generator and fake score start from its EMA weights
(`nnx_imagenet.plugins.build_self_forcing`). Self Forcing (`nnx_interfaces.SelfForcing`):
every step the generator rolls out `data.shape[0]`-frame clips frame by frame with its KV cache
in `generator_steps` = K denoising steps per frame (gradient through one exit step per rollout),
the fake score (one noise level per video) learns the rollouts, and every `fake_updates`-th step
the generator follows the DMD direction between fake and teacher scores. Defaults: K = 4 (the
paper's), TTUR 5, no CFG in the real score (the teacher samples without it), AdamW β = (0, 0.999)
with 2e-4 (generator, EMA 0.99) / 4e-4 (fake score), batch 16 of 8-frame rollouts, 500 steps.
Afterwards
(`demo/video_sf_demo.py`) `eval.num_images` videos of 32 frames are generated with the K-step
generator and the rolling cache, and the video demo's GIFs and report are written with the
teacher's numbers next to them.
"""

import ml_collections

from nnx_imagenet.configs import video_demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    if any(p != "smoke" for p in parts):
        from nnx_imagenet.errors import ConfigError

        raise ConfigError(f"Unknown preset in {arg!r} for video_self_forcing; expected 'smoke'.")
    smoke = "smoke" in parts
    c = video_demo.get_config("smoke" if smoke else None)  # data, model: the teacher's
    c.workdir = "workdirs/video_self_forcing"
    c.total_steps = 500

    c.interface = ml_collections.ConfigDict()
    c.interface.name = "imagenet.self_forcing"
    c.interface.teacher_config = "video_demo:smoke" if smoke else "video_demo"
    c.interface.teacher_workdir = "workdirs/video_demo"
    c.interface.generator_steps = 4
    c.interface.fake_updates = 5
    c.interface.guidance = 1.0
    c.interface.exit_step = "rollout"
    c.interface.context_noise = 0.0
    c.interface.window = 0  # 0: the network's (clip length − 1)

    c.data.global_batch_size = 16
    c.optimizer.lr = 2e-4
    c.optimizer.b1, c.optimizer.b2 = 0.0, 0.999
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 0
    c.optimizer.grad_clip = 10.0
    c.trees = ml_collections.ConfigDict(
        {"generator": {"ema": {"decays": (0.99,)}}, "critic": {"optimizer": {"lr": 4e-4},
                                                              "ema": {"decays": ()}}}
    )  # fmt: skip
    c.ema.decays = ()
    c.checkpoint.every_steps = 250
    c.log.every_steps = 10
    c.sample.ema = "0.99"
    c.eval.ema = "0.99"

    if smoke:  # CI: the tiny teacher of video_demo:smoke, a few steps
        c.total_steps = 4
        c.data.global_batch_size = 8
        c.checkpoint.every_steps = 2
        c.log.every_steps = 1
        c.interface.fake_updates = 2
        c.interface.generator_steps = 2
    return c
