"""After the trainer finishes the Self-Forcing stage: few-step autoregressive videos, the video
demo's GIFs and report, with the teacher's numbers next to the generator's.

Writes into the workdir (as `demo/video_demo.py` does for the teacher):
    videos/class_<d>.gif     one generated video per class (4× enlarged, 10 frames/s)
    videos_per_class.gif     all ten side by side
    videos_per_class.png     every frame of those ten, one row per video
    loss_curve_generator.png, loss_curve_critic.png   the two trees' losses
    video_report.{json,txt}  class consistency and motion of the generated videos, of the real
                             held-out videos (the ceiling) and of the teacher's videos

Generation is `SelfForcing.generate` (the generator's `eval.ema` weights): frame by frame, K
denoising steps each (the few-step grid the generator was trained on), the clean frame pushed
into the KV cache, which rolls once it holds its window, so the videos (32 frames) are
longer than the training clips. The teacher's numbers are its own `video_report.json` (its
configured per-frame sampler), written when it was trained.
"""

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnx_imagenet.data.digits import NUM_CLASSES, load_digits_split
from nnx_imagenet.demo.digits_demo import read_losses
from nnx_imagenet.demo.plots import save_gif, save_loss_curve
from nnx_imagenet.demo.video_demo import GENERATED_FRAMES, real_videos, side_by_side, to_uint8
from nnx_imagenet.demo.video_report import (
    fit_crop_classifier,
    format_video_report,
    video_report,
    write_video_report,
)


def few_step_videos(
    config: ml_collections.ConfigDict, state: dict, labels: np.ndarray, num_frames: int
) -> np.ndarray:
    """`len(labels)` videos `[N, num_frames, H, W, C]` in [−1, 1]: `SelfForcing.generate` with
    the generator's `eval.ema` weights (K steps per frame, rolling KV cache)."""
    from nnx_imagenet.sampling import interface_from_state

    sf = interface_from_state(config, state, ema=config.eval.ema)
    shape = (sf.generator_steps, len(labels), num_frames, *config.data.shape[1:])
    noise = jax.random.normal(jax.random.key(config.seed + 12345), shape)
    generate = jax.jit(lambda n, y: sf.generate(n, y=y))
    return np.asarray(generate(noise, jnp.asarray(labels)), np.float32)


def teacher_report(config: ml_collections.ConfigDict) -> dict | None:
    """The teacher run's `video_report.json` (None when it has none, e.g. it was stopped)."""
    path = Path(config.interface.teacher_workdir) / "video_report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def save_videos(videos: np.ndarray, labels: np.ndarray, workdir: Path) -> None:
    """One GIF per class, all classes side by side (GIF) and as a frame grid (PNG)."""
    from nnx_train.callbacks import save_grid

    first = [int(np.flatnonzero(labels == c)[0]) for c in range(NUM_CLASSES) if np.any(labels == c)]
    for i in first:
        save_gif(to_uint8(videos[i]), workdir / "videos" / f"class_{labels[i]}.gif")
    save_gif(to_uint8(side_by_side(videos[first])), workdir / "videos_per_class.gif")
    save_grid(videos[first], labels[first], str(workdir / "videos_per_class.png"), cell=32)


def format_sf_report(report: dict) -> str:
    """The video demo's text report, titled for Self Forcing, with the teacher's line."""
    txt = format_video_report(report).replace(
        "video demo: report", "video demo, Self-Forcing stage: report"
    )
    t = report.get("teacher")
    if t is None:
        return txt + "teacher: no video_report.json in its workdir\n"
    g = t["generated"]
    return txt + (
        f"teacher ({t['generation']}): classified {g['class_consistency']:.2%}, motion "
        f"{g['motion_score']:.2%}, {t['generation_seconds']:.1f} s for {g['num_videos']} videos\n"
    )


def finish_self_forcing_demo(
    config: ml_collections.ConfigDict, state: dict, train_seconds: float
) -> dict:
    """Generate `eval.num_images` videos (classes in turn) with the few-step generator, score
    them, the real held-out videos and read the teacher's report; write the files (module doc).

    Returns:
      `run_train`'s extra entries: report, report_text, files.
    """
    workdir = Path(config.workdir)
    num_frames = GENERATED_FRAMES
    labels = np.arange(int(config.eval.num_images), dtype=np.int32) % NUM_CLASSES
    start = time.perf_counter()
    videos = few_step_videos(config, state, labels, num_frames)
    gen_seconds = time.perf_counter() - start

    xtr, ytr = load_digits_split(held_out=config.data.kwargs.held_out)["train"]
    classifier = fit_crop_classifier(xtr, ytr)
    real, real_labels = real_videos(config, num_frames)
    window = int(config.interface.window) or int(config.model.num_frames) - 1
    k = int(config.interface.generator_steps)
    report = {
        "generated": video_report(classifier, videos, labels),
        "training": video_report(classifier, real, real_labels),
        "generation": f"Self Forcing, autoregressive, {k} steps per frame, rolling KV cache of "
        f"{window} frames",
        "generation_seconds": gen_seconds,
        "train_steps": int(config.total_steps),
        "train_seconds": float(train_seconds),
        "generator_steps": k,
        "teacher": teacher_report(config),
    }
    report["passed"] = report["generated"]["passed"]
    write_video_report(report, workdir)
    (workdir / "video_report.txt").write_text(format_sf_report(report))

    save_videos(videos, labels, workdir)
    for tree in ("generator", "critic"):
        steps, losses, resumed = read_losses(workdir, key=f"{tree}/loss")
        ok = np.isfinite(losses)  # NaN: a logging window without an update of this tree
        if ok.sum() >= 2:
            save_loss_curve(steps[ok], losses[ok], workdir / f"loss_curve_{tree}.png",
                            smooth=max(1, int(ok.sum()) // 20), resumed_at=resumed)  # fmt: skip
    return {
        "report": report,
        "report_text": "video_report.txt",
        "files": "videos/class_<d>.gif, videos_per_class.gif, videos_per_class.png, "
        "loss_curve_generator.png, loss_curve_critic.png, video_report.json, video_report.txt",
    }
