"""Pictures for the demo: a rendered video, a training curve and a grid of overlays.

The video pans a camera across wide procedural scenes, so objects move across the frame as in
footage. The curve is drawn by matplotlib (the ``train`` extra) on its Agg canvas, which needs
no display; the grid is a plain image montage, put together with numpy and labelled by OpenCV.
Pictures are written atomically: a report never links to half a PNG.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..data import render_scene
from ..errors import BackendUnavailable, InputError
from ..io import atomic_path
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


_LABELS = {"mean_iou": "mean IU", "pixel_accuracy": "pixel accuracy"}  # the paper's names


def plot_curves(path: Path, history: Sequence[dict], keys=("mean_iou", "pixel_accuracy"),
                size: tuple[int, int] = (360, 640)) -> Path:
    """Validation metrics per epoch (0–1, left axis) and the training loss (right axis), as a
    ``size`` (H, W) PNG."""
    figure = _figure(size)
    metrics = figure.add_subplot()
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for key, colour in zip(keys, ("tab:blue", "tab:green")):
        metrics.plot(epochs, [row.get(key, 0.0) for row in history], "o-", color=colour,
                     label=_LABELS.get(key, key.replace("_", " ")))
    metrics.set(ylim=(0, 1), xlabel="epoch", ylabel="validation")
    metrics.set_xticks(epochs[::max(1, len(epochs) // 10)])  # whole epochs, about ten ticks
    loss = metrics.twinx()
    loss.plot(epochs, [row.get("train_loss", 0.0) for row in history], "o--", color="tab:red",
              label="train loss")
    loss.set(ylabel="train loss", ylim=(0, None))
    # One legend for both axes, above them: inside, it would hide a curve wherever it sat.
    lines = metrics.get_lines() + loss.get_lines()
    figure.legend(lines, [line.get_label() for line in lines], loc="outside upper center",
                  ncols=len(lines), frameon=False)
    metrics.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return _write(path, buffer.getvalue())


def _figure(size: tuple[int, int]):
    """A matplotlib figure of exactly ``size`` (H, W) pixels on the Agg canvas (no display,
    no pyplot state shared with a host program)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise BackendUnavailable(f"the demo's training curve needs matplotlib ({exc.name} is "
                                 "missing): pip install 'fcn-edge[train]'") from None
    dpi = 100
    figure = Figure(figsize=(size[1] / dpi, size[0] / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def overlay_grid(path: Path, rows: Sequence[Sequence[np.ndarray]],
                 titles: Sequence[str], legend: tuple[Sequence[str], Any] | None = None) -> Path:
    """A PNG grid: one row per sample, one column per picture (all BGR, the same size).

    ``legend`` (class names, their RGB palette): a column at the right that names each colour,
    drawn by the runtime's :func:`~fcn_edge.runtime.legend.draw_legend` as overlays get it.
    """
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
    if legend is not None:
        grid = np.hstack([grid, _legend_column(grid.shape[0] - head, head, *legend)])
    return _write_png(path, grid)


_LEGEND_ROW = 20  # px: the sample grid's legend rows


def _legend_column(height: int, head: int, classes: Sequence[str], palette) -> np.ndarray:
    """A white column, titled like the grid's, with every class's swatch and name below."""
    from ..runtime.legend import draw_legend

    width = max(120, min(240, height // 3))  # the legend's rows are H/22 high; names fit
    column = np.full((head + height, width, 3), 255, np.uint8)
    cv2.putText(column, "classes", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    # Rows are 1/22 of the height they are given: given the grid's whole height (47 px rows
    # for the demo's 4 × 256 lines), the names outgrow the column and are cut; 20 px rows fit.
    area = column[head:head + min(height, 22 * _LEGEND_ROW)]
    draw_legend(area, classes, palette, only_present=False, position="top-left",
                max_width=1.0, max_height=1.0, color="bgr", inplace=True)
    return column


def _write_png(path: Path, image: np.ndarray) -> Path:
    """A BGR picture as PNG."""
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise InputError(f"{path}: OpenCV cannot encode this {image.dtype} {image.shape} "
                         "picture as PNG")
    return _write(path, buffer.tobytes())


def _write(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
