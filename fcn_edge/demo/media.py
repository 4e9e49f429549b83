"""Pictures for the demo: a rendered video, a training curve and a grid of overlays (OpenCV only).

The video pans a camera across wide procedural scenes, so objects move across the frame as in
footage; the plot is drawn with OpenCV so the demo needs no plotting library.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..data import render_scene, write_image
from ..runtime.sinks import Result, VideoSink
from ..runtime.sources import Frame


def write_demo_video(path: Path, frames: int, size: tuple[int, int], fps: float = 15.0,
                     seed: int = 7, difficulty: str = "standard") -> Path:
    """A video (``.avi``: Motion JPEG) of ``frames`` H×W frames panning across wide procedural
    scenes, written by the runtime's :class:`VideoSink` (atomic, with its codec fallback)."""
    h, w = size
    rng = np.random.default_rng(seed)
    per_scene = max(1, min(frames, 60))          # a new scene every few seconds
    sink = VideoSink(path, fps)
    try:
        for start in range(0, frames, per_scene):
            wide = render_scene(rng, h, 2 * w, difficulty)[0][..., ::-1]  # RGB -> BGR
            for i in range(min(per_scene, frames - start)):
                x = (w * i) // max(1, per_scene - 1)
                image = np.ascontiguousarray(wide[:, x:x + w])
                sink.write(Result(Frame(start + i, image, 0.0, f"{start + i:06d}"), labels=None))
    finally:
        sink.close()
    return sink.path


def plot_curves(path: Path, history: Sequence[dict], keys=("mean_iou", "pixel_accuracy"),
                size: tuple[int, int] = (360, 640)) -> Path:
    """Validation metrics per epoch (0–1 scale) and the training loss (scaled to its maximum),
    as a PNG drawn with OpenCV."""
    h, w = size
    image = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 30, 40
    ox, oy, pw, ph = left, h - bottom, w - left - right, h - top - bottom
    cv2.rectangle(image, (ox, top), (ox + pw, oy), (0, 0, 0), 1)
    for tick in range(0, 11, 2):
        y = oy - int(ph * tick / 10)
        cv2.line(image, (ox - 4, y), (ox, y), (0, 0, 0), 1)
        cv2.putText(image, f"{tick / 10:.1f}", (8, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    epochs = len(history)
    losses = [r.get("train_loss", 0.0) for r in history]
    peak = max(losses) if losses and max(losses) > 0 else 1.0
    series = [(k, [r.get(k, 0.0) for r in history]) for k in keys]
    series.append(("train loss / max", [v / peak for v in losses]))
    colours = [(200, 80, 0), (0, 160, 0), (0, 0, 200)]
    for (name, values), colour, row in zip(series, colours, range(len(series))):
        points = [(ox + int(pw * (i / max(1, epochs - 1))), oy - int(ph * min(1.0, max(0.0, v))))
                  for i, v in enumerate(values)]
        for a, b in zip(points, points[1:]):
            cv2.line(image, a, b, colour, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(image, p, 3, colour, -1, cv2.LINE_AA)
        # The legend sits right, at 0.3–0.45: between rising metrics and a falling loss.
        legend_y = oy - int(0.3 * ph) - 18 * (len(series) - 1 - row)
        cv2.putText(image, name, (ox + pw - 170, legend_y),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    cv2.putText(image, f"epoch (1-{epochs})", (ox + pw // 2 - 40, h - 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return write_png(path, image)


def overlay_grid(path: Path, rows: Sequence[Sequence[np.ndarray]],
                 titles: Sequence[str]) -> Path:
    """A PNG grid: one row per sample, one column per picture (all BGR, the same size)."""
    if not rows:
        raise ValueError("overlay_grid needs at least one row")
    h, w = rows[0][0].shape[:2]
    pad, head = 4, 22
    grid = np.full((head + len(rows) * (h + pad), len(titles) * (w + pad), 3), 255, np.uint8)
    for c, title in enumerate(titles):
        cv2.putText(grid, title, (c * (w + pad) + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    for r, pictures in enumerate(rows):
        for c, picture in enumerate(pictures):
            y, x = head + r * (h + pad), c * (w + pad)
            grid[y:y + h, x:x + w] = picture
    return write_png(path, grid)


def write_png(path: Path, image: np.ndarray) -> Path:
    """A BGR picture as PNG (``data.write_image`` takes RGB)."""
    return write_image(path, np.ascontiguousarray(image[..., ::-1]))
