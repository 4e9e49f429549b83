"""Encoding the inputs besides RGB (paper §5, NYUDv2): depth and HHA, as pure numpy.

One definition for training, export checks and the runtime, as ``processing.py`` is for RGB:

* ``rgb``: the image, ``(pixel / 255 − mean) / std`` (``processing.frames_to_input``).
* ``depth``: metres (float) or millimetres (uint16, as depth PNGs and depth cameras deliver
  them), ``(d − DEPTH_MEAN_M) / DEPTH_STD_M``; pixels with no reading (0, negative, NaN, inf)
  become 0, the mean depth, so a hole neither looks near nor far.
* ``hha``: the 3-channel HHA image (uint8, channels in HHA order), normalised like an RGB
  image with the model's mean and std: the paper fine-tunes an ImageNet net on HHA images.

A model's ``inputs`` (``ModelConfig.inputs``) say which of these it takes, in channel order;
:func:`stack_inputs` concatenates them into the one N×C×H×W tensor an early-fusion FCN or a
late-fusion wrapper takes.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError
from .processing import frames_to_input

#: Depth normalisation, about NYUDv2's statistics (indoor scenes, 0.5–10 m; mean ≈ 2.8 m).
DEPTH_MEAN_M, DEPTH_STD_M = 2.8, 1.4
#: uint16 depth is millimetres (NYUDv2 PNGs, Kinect, RealSense at its default depth scale).
DEPTH_UNITS_PER_M = {np.dtype(np.uint16): 1000.0}
MODALITIES = ("rgb", "depth", "hha")


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """H×W or N×H×W (or N×H×W×1) depth → N×1×H×W float32 encoded depth.

    float16/32/64 are metres; uint16 is millimetres. Pixels without a reading become 0.
    """
    depth = np.asarray(depth)
    if depth.ndim == 4 and depth.shape[3] == 1:
        depth = depth[..., 0]
    if depth.ndim == 2:
        depth = depth[None]
    if depth.ndim != 3 or depth.size == 0:
        raise InputError(f"depth must be H×W or N×H×W, got shape {depth.shape}")
    if depth.dtype in DEPTH_UNITS_PER_M:
        metres = depth.astype(np.float32) / np.float32(DEPTH_UNITS_PER_M[depth.dtype])
    elif depth.dtype.kind == "f":
        metres = depth.astype(np.float32, copy=False)
    else:
        raise InputError(f"depth must be float metres or uint16 millimetres, got {depth.dtype}")
    valid = np.isfinite(metres) & (metres > 0)
    out = (np.where(valid, metres, np.float32(DEPTH_MEAN_M)) - np.float32(DEPTH_MEAN_M)) \
        / np.float32(DEPTH_STD_M)
    return out.astype(np.float32, copy=False)[:, None]


def encode_hha(hha: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """H×W×3 or N×H×W×3 uint8 HHA → N×3×H×W float32, normalised like an RGB image."""
    return frames_to_input(hha, mean, std, color_order="rgb", frame_order="rgb")


def encode_input(name: str, array: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 frame_order: str = "rgb", color_order: str = "rgb") -> np.ndarray:
    """One modality → N×c×H×W float32. ``frame_order`` is the colour order of an ``rgb``
    array (``bgr`` for OpenCV frames), ``color_order`` the network's."""
    if name == "rgb":
        return frames_to_input(array, mean, std, color_order, frame_order)
    if name == "depth":
        return encode_depth(array)
    if name == "hha":
        return encode_hha(array, mean, std)
    raise InputError(f"unknown input modality {name!r}; fcn-edge encodes {', '.join(MODALITIES)}")


def stack_inputs(arrays: Mapping[str, np.ndarray], names: Sequence[str], mean: Sequence[float],
                 std: Sequence[float], frame_order: str = "rgb",
                 color_order: str = "rgb") -> np.ndarray:
    """Encode ``arrays[name]`` for each of ``names`` (a model's inputs, in channel order) and
    concatenate them along channels: N×C×H×W float32. Every array must be the same size."""
    missing = [n for n in names if n not in arrays or arrays[n] is None]
    if missing:
        raise InputError(f"the model takes {' + '.join(names)} but no {', '.join(missing)} was "
                         f"given")
    parts = [encode_input(n, arrays[n], mean, std, frame_order, color_order) for n in names]
    sizes = {p.shape[0:1] + p.shape[2:] for p in parts}
    if len(sizes) != 1:
        shown = ", ".join(f"{n} {p.shape[0]}×{p.shape[2]}×{p.shape[3]}"
                          for n, p in zip(names, parts))
        raise InputError(f"the inputs differ in batch or size ({shown}); give every modality "
                         f"at the image's size")
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def depth_encoding() -> dict[str, float]:
    """How ``encode_depth`` encodes, for artifact metadata (so other runtimes can do the same)."""
    return {"units": "metres (float) or millimetres (uint16)", "mean_m": DEPTH_MEAN_M,
            "std_m": DEPTH_STD_M, "invalid": 0.0}
