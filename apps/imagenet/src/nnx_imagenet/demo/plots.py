"""PNG figures drawn with PIL only (no matplotlib): a loss curve and a per-class sample grid."""

import os

import numpy as np
from PIL import Image, ImageDraw


def save_loss_curve(
    steps: np.ndarray,
    losses: np.ndarray,
    path: str | os.PathLike,
    *,
    size: tuple[int, int] = (640, 400),
    smooth: int = 20,
) -> None:
    """Plot training loss against step (raw in grey, moving average of `smooth` in blue)."""
    steps, losses = np.asarray(steps, np.float64), np.asarray(losses, np.float64)
    ok = np.isfinite(losses)
    steps, losses = steps[ok], losses[ok]
    if len(steps) < 2:
        raise ValueError(f"Need at least two finite loss values to plot; got {len(steps)}.")
    w, h = size
    left, right, top, bottom = 70, 20, 30, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    lo, hi = float(np.min(losses)), float(np.percentile(losses, 99))
    hi = hi if hi > lo else lo + 1.0
    x0, x1 = float(steps[0]), float(steps[-1]) if steps[-1] > steps[0] else float(steps[0]) + 1

    def to_px(s: np.ndarray, v: np.ndarray) -> list[tuple[float, float]]:
        px = left + (s - x0) / (x1 - x0) * (w - left - right)
        py = top + (1 - (np.clip(v, lo, hi) - lo) / (hi - lo)) * (h - top - bottom)
        return list(zip(px.tolist(), py.tolist(), strict=True))

    # Axes, ticks and labels.
    draw.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black")
    for frac in np.linspace(0, 1, 5):
        y = top + (1 - frac) * (h - top - bottom)
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((5, y - 6), f"{lo + frac * (hi - lo):.4g}", fill="black")
        x = left + frac * (w - left - right)
        draw.line([(x, h - bottom), (x, h - bottom + 4)], fill="black")
        draw.text((x - 12, h - bottom + 8), f"{x0 + frac * (x1 - x0):.0f}", fill="black")
    draw.text((w // 2 - 15, h - 20), "step", fill="black")
    draw.text((left, 8), "training loss", fill="black")
    draw.line(to_px(steps, losses), fill=(190, 190, 190))
    k = max(1, min(smooth, len(losses) // 2))
    avg = np.convolve(losses, np.ones(k) / k, mode="valid")
    draw.line(to_px(steps[k - 1 :], avg), fill=(31, 119, 180), width=2)
    img.save(path)


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
