"""Pre- and post-processing as pure numpy: one definition for export checks, evaluation and the
runtime, so that they can never drift apart.

Frames arrive as OpenCV delivers them: H×W×3 (or N×H×W×3) uint8 BGR. The network wants
``(pixel / 255 − mean) / std`` in the colour order it was trained on (RGB for everything
fcn-edge trains), N×3×H×W float32. Raw-IO artifacts do exactly this inside the graph; the
export checks them against this module.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def labels_dtype(num_classes: int) -> np.dtype:
    """uint8 while every label fits (≤ 256 classes), else int32."""
    return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.int32)


def normalization_affine(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, bias)`` per channel with ``x * scale + bias == (x / 255 − mean) / std``."""
    mean64, std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean64.shape != (3,) or std64.shape != (3,) or (std64 <= 0).any():
        raise InputError(f"mean and std need 3 values each (std > 0), got {mean}, {std}")
    return (1.0 / (255.0 * std64)).astype(np.float32), (-mean64 / std64).astype(np.float32)


def frames_to_input(frames: np.ndarray, mean, std, color_order: str = "rgb",
                    frame_order: str = "bgr") -> np.ndarray:
    """N×H×W×3 (or H×W×3) uint8 frames in ``frame_order`` → N×3×H×W float32 normalised input
    in the network's ``color_order``."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be N×H×W×3 uint8, got {frames.dtype} {frames.shape}")
    scale, bias = normalization_affine(mean, std)
    n, h, w, _ = frames.shape
    out = np.empty((n, 3, h, w), np.float32)
    flip = color_order != frame_order
    for c in range(3):
        source = frames[..., 2 - c if flip else c]
        np.multiply(source, scale[c], out=out[:, c], dtype=np.float32)
        out[:, c] += bias[c]
    return out


def labels_from_logits(logits: np.ndarray) -> np.ndarray:
    """N×C×H×W scores → N×H×W labels (the first maximum on ties, as ONNX ArgMax and torch)."""
    logits = np.asarray(logits)
    if logits.ndim != 4:
        raise InputError(f"logits must be N×C×H×W, got shape {logits.shape}")
    return logits.argmax(axis=1).astype(labels_dtype(logits.shape[1]), copy=False)
