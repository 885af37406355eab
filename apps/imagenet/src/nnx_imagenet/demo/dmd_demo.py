"""The DMD2 digits demo: make sure the teacher exists, then score the one-step generator.

`ensure_teacher(config)` trains the digits demo (the teacher) into `interface.teacher_workdir`
when it has no checkpoint. `finish_dmd_demo(config, state)` writes into the workdir:

    samples_per_class.png       10 rows (classes 0–9) × 10 one-step samples (generator EMA)
    loss_curve_generator.png    the generator's loss (distribution matching + GAN)
    loss_curve_critic.png       the fake score's loss (denoising + GAN)
    quality_report.{json,txt}   the demo's report for 1000 one-step samples, with the teacher's
                                own numbers (its configured sampler and guidance) next to them
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnx_imagenet.data.digits import NUM_CLASSES
from nnx_imagenet.demo.classifier import frechet_distance
from nnx_imagenet.demo.digits_demo import read_losses, save_sample_grid, score_digits
from nnx_imagenet.demo.plots import save_loss_curve
from nnx_imagenet.demo.report import format_report, write_report


def ensure_teacher(config: ml_collections.ConfigDict) -> None:
    """Train the teacher (`interface.teacher_config` into `interface.teacher_workdir`) if that
    workdir has no checkpoint yet."""
    from nnx_imagenet.checkpoints import checkpoint_dir
    from nnx_imagenet.config_loading import load_config
    from nnx_imagenet.run import run_train
    from nnx_train.checkpoint import Checkpointer

    teacher_cfg = load_config(
        config.interface.teacher_config,
        [f"workdir={config.interface.teacher_workdir}", "log.progress_bar=False"],
    )
    ckpt = Checkpointer(checkpoint_dir(teacher_cfg), async_save=False)
    try:
        have = bool(ckpt.all_steps())
    finally:
        ckpt.close()
    if not have:
        print(
            f"nnx-imagenet: no teacher under {teacher_cfg.workdir}: training it first", flush=True
        )
        run_train(teacher_cfg)


def one_step_samples(config, state, labels: np.ndarray, seed: int) -> np.ndarray:
    """`len(labels)` samples of the trained generator (its `eval.ema` weights)."""
    from nnx_imagenet.sampling import interface_from_state

    dmd = interface_from_state(config, state, ema=config.eval.ema)
    noise = jax.random.normal(
        jax.random.key(seed), (dmd.generator_steps, len(labels), *config.data.shape)
    )
    generate = jax.jit(lambda n, y: dmd.generate(n, y=y))
    return np.asarray(generate(noise, jnp.asarray(labels)), np.float32)


def finish_dmd_demo(config: ml_collections.ConfigDict, state: dict) -> dict:
    """Score `eval.num_images` one-step digits and the teacher's, write the files (module doc)."""
    from nnx_imagenet.checkpoints import load_latest_state
    from nnx_imagenet.config_loading import load_config
    from nnx_imagenet.sampling import sample_fn_from_state

    workdir = Path(config.workdir)
    n = int(config.eval.num_images)
    labels = np.arange(n, dtype=np.int32) % NUM_CLASSES
    samples = one_step_samples(config, state, labels, config.seed + 12345)

    teacher_cfg = load_config(
        config.interface.teacher_config, [f"workdir={config.interface.teacher_workdir}"]
    )
    _, t_state = load_latest_state(teacher_cfg)
    t_sample = sample_fn_from_state(teacher_cfg, t_state, ema=teacher_cfg.eval.ema)
    t_samples = np.asarray(
        t_sample(jax.random.key(config.seed + 12345), jnp.asarray(labels), n), np.float32
    )

    report, classifier, xtr = score_digits(config, samples, labels)
    report["train_steps"] = int(config.total_steps)
    report["generator_steps"] = int(config.interface.generator_steps)
    s = teacher_cfg.sample
    report["teacher"] = {
        "sample_accuracy": float(np.mean(classifier.predict(t_samples) == labels)),
        "fd_samples_vs_train": frechet_distance(
            classifier.features(t_samples), classifier.features(xtr)
        ),
        "sampler": f"{s.sampler.name} {s.sampler.get('num_steps', '')} steps, CFG {s.guidance}",
    }
    write_report(report, workdir)
    txt = format_report(report).replace("digits demo", "DMD2 digits demo (one-step generator)")
    t = report["teacher"]
    txt += (
        f"teacher ({t['sampler']}): classified {t['sample_accuracy']:.2%}, "
        f"Frechet distance {t['fd_samples_vs_train']:.3f}\n"
    )
    (workdir / "quality_report.txt").write_text(txt)

    save_sample_grid(samples, labels, workdir / "samples_per_class.png")
    for tree in ("generator", "critic"):
        steps, losses, resumed = read_losses(workdir, key=f"{tree}/loss")
        ok = np.isfinite(losses)  # NaN: a logging window without an update of this tree
        steps, losses = steps[ok], losses[ok]
        if len(steps) >= 2:
            save_loss_curve(steps, losses, workdir / f"loss_curve_{tree}.png",
                            smooth=max(1, len(steps) // 20), resumed_at=resumed)  # fmt: skip
    return report
