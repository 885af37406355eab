"""PNG figures: the training-loss curve (matplotlib) and a per-class sample grid (PIL); animated
GIFs of videos (PIL)."""

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def save_loss_curve(
    steps: np.ndarray,
    losses: np.ndarray,
    path: str | os.PathLike,
    *,
    size: tuple[int, int] = (640, 400),
    smooth: int = 20,
    resumed_at: Sequence[int] = (),
) -> None:
    """Plot training loss against step: every logged value (grey), its moving average over
    `smooth` records (blue), non-finite values as red ticks on the x-axis, and dotted lines at
    the steps a resume restarted from. The y-axis spans every finite value (log scale when they
    cover more than two decades), so a spike is never clipped away.

    Raises:
      ValueError: fewer than two finite losses.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    steps, losses = np.asarray(steps, np.float64), np.asarray(losses, np.float64)
    ok = np.isfinite(losses)
    if ok.sum() < 2:
        raise ValueError(f"Need at least two finite loss values to plot; got {int(ok.sum())}.")
    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    ax = fig.add_subplot()
    ax.plot(steps[ok], losses[ok], color="0.7", linewidth=1, label="loss (logged)")
    k = max(1, min(smooth, int(ok.sum()) // 2))
    if k > 1:
        avg = np.convolve(losses[ok], np.ones(k) / k, mode="valid")
        ax.plot(steps[ok][k - 1 :], avg, color="tab:blue", linewidth=2,
                label=f"moving average ({k} records)")  # fmt: skip
    bad = int((~ok).sum())
    if bad:
        ax.plot(steps[~ok], np.zeros(bad), "|", color="tab:red", markersize=12,
                transform=ax.get_xaxis_transform(), label=f"non-finite ({bad})")  # fmt: skip
    for i, s in enumerate(resumed_at):
        ax.axvline(s, color="0.3", linestyle=":", label="resumed" if i == 0 else None)
    finite = losses[ok]
    if finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)


def save_class_grid(
    images: np.ndarray, path: str | os.PathLike, *, scale: int = 4, pad: int = 2
) -> None:
    """Save `images: [rows, cols, H, W, C]` in [−1, 1] as a grid, one row per class (label at left).

    Pixels are upscaled `scale`× (nearest) so 8×8 digits are visible.
    """
    images = np.asarray(images)
    if images.ndim != 5:
        raise ValueError(f"images must be [rows, cols, H, W, C]; got shape {images.shape}.")
    rows, cols, hh, ww, c = images.shape
    u8 = np.round((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8)
    if c == 1:
        u8 = np.repeat(u8, 3, axis=-1)
    u8 = u8.repeat(scale, axis=2).repeat(scale, axis=3)
    ch, cw = hh * scale + pad, ww * scale + pad
    label_w = 24
    grid = Image.new("RGB", (label_w + cols * cw + pad, rows * ch + pad), "white")
    draw = ImageDraw.Draw(grid)
    for r in range(rows):
        draw.text((6, pad + r * ch + ch // 2 - 6), str(r), fill="black")
        for k in range(cols):
            grid.paste(Image.fromarray(u8[r, k]), (label_w + pad + k * cw, pad + r * ch))
    grid.save(path)


def save_gif(frames: np.ndarray, path: str | os.PathLike, *, scale: int = 4, fps: int = 10) -> None:
    """An animated, looping GIF of uint8 frames `[T, H, W, C]` (C = 1 or 3), enlarged `scale`×
    (nearest neighbour), `fps` frames per second."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.dtype != np.uint8:
        raise ValueError(
            f"save_gif takes uint8 frames [T, H, W, 1 or 3]; got {frames.dtype} {frames.shape}."
        )
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
