"""After the trainer finishes the video demo: autoregressive videos, GIFs and the report.

Writes into the workdir:
    videos/class_<d>.gif     one generated video per class (4× enlarged, 10 frames/s)
    videos_per_class.gif     all ten side by side
    videos_per_class.png     every frame of those ten, one row per video
    loss_curve.png           training loss from metrics.jsonl
    video_report.{json,txt}  class consistency and motion of the generated videos, next to the
                             same numbers for the real held-out training videos (the ceiling)

Generation is autoregressive (`nnx_samplers.Autoregressive`): frame k is denoised from noise by
the configured per-frame sampler with the KV cache holding the previous (≤ clip length − 1)
clean frames, then pushed into the cache (`VideoDiT.step`); the cache rolls, so the videos (32
frames) are longer than the clips the model was trained on.
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nnx_imagenet.data.digits import NUM_CLASSES, load_digits_split
from nnx_imagenet.data.moving_digits import moving_digit_videos
from nnx_imagenet.demo.digits_demo import read_losses
from nnx_imagenet.demo.plots import save_gif, save_loss_curve
from nnx_imagenet.demo.video_report import fit_crop_classifier, video_report, write_video_report

GENERATED_FRAMES = 32  # frames per generated video (longer than the training clips)
REAL_VIDEOS = 400  # held-out real videos scored as the ceiling


def generate_videos(
    config: ml_collections.ConfigDict, state: dict, labels: np.ndarray, num_frames: int
) -> np.ndarray:
    """`len(labels)` videos `[N, num_frames, H, W, C]` in [−1, 1] from the `eval.ema` weights:
    `nnx_samplers.Autoregressive` around `sample.sampler` (per frame) with clean context, the
    network's rolling cache window and `sample.guidance` (classifier-free, 0 = off)."""
    from nnx_imagenet.sampling import interface_from_state
    from nnx_samplers import Autoregressive
    from nnx_samplers.guidance import ClassifierFreeGuidance
    from nnx_train.callbacks import initial_noise
    from nnx_train.trainer import build_sampler

    iface = interface_from_state(config, state, ema=config.eval.ema)
    rollout = Autoregressive(sampler=build_sampler(config.sample.sampler), context_noise=0.0)
    guidance = config.sample.guidance
    cfg = ClassifierFreeGuidance(scale=guidance) if guidance else None
    k_init, k_sample = jax.random.split(jax.random.key(config.seed + 12345))
    shape = (len(labels), num_frames, *config.data.shape[1:])
    x_init = initial_noise(iface, k_init, shape)
    res = rollout.sample(k_sample, iface, x_init, y=jnp.asarray(labels), guidance=cfg)
    return np.asarray(res.x, np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[−1, 1] → uint8 as every generated image is stored (`nnx_eval.generate.to_uint8`)."""
    from nnx_eval.generate import to_uint8 as convert

    return np.asarray(convert(jnp.asarray(x)))


def side_by_side(videos: np.ndarray, gap: int = 2) -> np.ndarray:
    """Videos `[N, T, H, W, C]` → one video `[T, H, N·(W + gap) − gap, C]` (grey gaps)."""
    n, t, h, w, c = videos.shape
    out = np.zeros((t, h, n * (w + gap) - gap, c), np.float32)
    for i in range(n):
        out[:, :, i * (w + gap) : i * (w + gap) + w] = videos[i]
    return out


def real_videos(config: ml_collections.ConfigDict, num_frames: int, limit: int = REAL_VIDEOS):
    """Held-out real moving-digit videos `[N, num_frames, 32, 32, 1]` in [−1, 1] and labels."""
    kw = config.data.kwargs
    videos, labels = [], []
    for _, _, y, video, _ in moving_digit_videos(
        "val", num_frames=num_frames, held_out=kw.held_out
    ):
        videos.append(video)
        labels.append(y)
        if len(videos) == limit:
            break
    return np.stack(videos)[..., None].astype(np.float32) / 127.5 - 1.0, np.asarray(labels)


def finish_video_demo(config: ml_collections.ConfigDict, state: dict, train_seconds: float) -> dict:
    """Generate `eval.num_images` videos (classes in turn), score them and the real held-out
    videos, write the files (module docstring); return the report."""
    from nnx_train.callbacks import save_grid

    workdir = Path(config.workdir)
    num_frames = max(GENERATED_FRAMES, 2 * int(config.data.shape[0]))
    labels = np.arange(int(config.eval.num_images), dtype=np.int32) % NUM_CLASSES
    start = time.perf_counter()
    videos = generate_videos(config, state, labels, num_frames)
    gen_seconds = time.perf_counter() - start

    xtr, ytr = load_digits_split(held_out=config.data.kwargs.held_out)["train"]
    classifier = fit_crop_classifier(xtr, ytr)
    real, real_labels = real_videos(config, num_frames)
    s = config.sample.sampler
    report = {
        "generated": video_report(classifier, videos, labels),
        "training": video_report(classifier, real, real_labels),
        "generation": f"autoregressive, {s.name} {s.get('num_steps', '')} steps per frame, "
        f"CFG {config.sample.guidance}, rolling KV cache of {int(config.data.shape[0]) - 1} "
        f"frames",
        "generation_seconds": gen_seconds,
        "train_steps": int(config.total_steps),
        "train_seconds": float(train_seconds),
    }
    report["passed"] = report["generated"]["passed"]
    write_video_report(report, workdir)

    first = [int(np.flatnonzero(labels == c)[0]) for c in range(NUM_CLASSES) if np.any(labels == c)]
    for i in first:
        save_gif(to_uint8(videos[i]), workdir / "videos" / f"class_{labels[i]}.gif")
    save_gif(to_uint8(side_by_side(videos[first])), workdir / "videos_per_class.gif")
    save_grid(videos[first], labels[first], str(workdir / "videos_per_class.png"), cell=32)
    steps, losses, resumed = read_losses(workdir)
    if np.isfinite(losses).sum() >= 2:
        save_loss_curve(steps, losses, workdir / "loss_curve.png",
                        smooth=max(1, len(steps) // 20), resumed_at=resumed)  # fmt: skip
    return report
