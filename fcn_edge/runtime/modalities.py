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
late-fusion wrapper takes. The runtime feeds an artifact one tensor per modality instead:
:func:`check_extra` validates a depth or HHA array against its frame, :func:`resize_extra` moves
it into an artifact's profile as the frame is moved, :func:`encode_batch` encodes frames' arrays
straight into one batch.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from .processing import frames_to_input, resize_frame

#: Depth normalisation, about NYUDv2's statistics (indoor scenes, 0.5–10 m; mean ≈ 2.8 m).
DEPTH_MEAN_M, DEPTH_STD_M = 2.8, 1.4
#: uint16 depth is millimetres (NYUDv2 PNGs, Kinect, RealSense at its default depth scale).
DEPTH_UNITS_PER_M = {np.dtype(np.uint16): 1000.0}
MODALITIES = ("rgb", "depth", "hha")


def encode_depth(depth: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """H×W or N×H×W (or N×H×W×1) depth → N×1×H×W float32 encoded depth.

    float16/32/64 are metres; uint16 is millimetres. Pixels without a reading become 0.
    ``out`` (N×1×H×W float32) lets a caller fill one slot of a larger batch: the encoding is
    done in place there, one pass over the pixels' memory and no temporaries of their size
    but a mask.
    """
    depth = np.asarray(depth)
    if depth.ndim == 4 and depth.shape[3] == 1:
        depth = depth[..., 0]
    if depth.ndim == 2:
        depth = depth[None]
    if depth.ndim != 3 or depth.size == 0:
        raise InputError(f"depth must be H×W or N×H×W, got shape {depth.shape}")
    if depth.dtype not in DEPTH_UNITS_PER_M and depth.dtype.kind != "f":
        raise InputError(f"depth must be float metres or uint16 millimetres, got {depth.dtype}")
    shape = (depth.shape[0], 1) + depth.shape[1:]
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise InputError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
    metres = out[:, 0]
    np.copyto(metres, depth, casting="unsafe")  # float64 → float32 as astype rounds it
    if depth.dtype in DEPTH_UNITS_PER_M:
        metres /= np.float32(DEPTH_UNITS_PER_M[depth.dtype])
    metres[~(np.isfinite(metres) & (metres > 0))] = np.float32(DEPTH_MEAN_M)
    metres -= np.float32(DEPTH_MEAN_M)
    metres /= np.float32(DEPTH_STD_M)
    return out


def encode_hha(hha: np.ndarray, mean: Sequence[float], std: Sequence[float],
               out: np.ndarray | None = None) -> np.ndarray:
    """H×W×3 or N×H×W×3 uint8 HHA → N×3×H×W float32, normalised like an RGB image."""
    return frames_to_input(hha, mean, std, color_order="rgb", frame_order="rgb", out=out)


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


# --- the runtime's side: one array per frame, checked, resized, encoded into a batch ---------

#: What each extra modality takes from a caller, for messages.
_TAKES = {"depth": "H×W float metres or uint16 millimetres",
          "hha": "H×W×3 uint8 (HHA channel order)"}


def check_extra(modality: str, array: Any, size: tuple[int, int]) -> np.ndarray:
    """One frame's ``depth`` (H×W or H×W×1) or ``hha`` (H×W×3 uint8) as an array, refused with
    an InputError when it is of another kind or not at the frame's ``size`` (H, W): the
    modalities of a pixel must be registered to it, which a resize here cannot ensure."""
    if array is None:
        raise InputError(f"no {modality} given: pass {modality}= ({_TAKES[modality]}, at the "
                         f"frame's size)")
    array = np.asarray(array)
    if modality == "depth":
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        ok = array.ndim == 2 and (array.dtype in DEPTH_UNITS_PER_M or array.dtype.kind == "f")
    else:
        ok = array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    if not ok:
        raise InputError(f"{modality} must be {_TAKES[modality]}, got {array.dtype} "
                         f"{array.shape}")
    if array.shape[:2] != tuple(size):
        raise InputError(f"{modality} is {array.shape[0]}×{array.shape[1]} but its frame is "
                         f"{size[0]}×{size[1]}: give {modality} registered to the frame, at "
                         f"its size")
    return array


def resize_extra(modality: str, array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A checked depth or HHA array resized to ``size`` (H, W) as its frame is resized.

    Depth by nearest neighbour: interpolating would invent depths between a near object and
    the wall behind it, and blend valid readings with holes (0). HHA as frames are (it is
    an image; paper §5 treats it as one).
    """
    if modality != "depth":
        return resize_frame(array, size)
    import cv2  # lazy, as in processing.py

    h, w = size
    source = np.ascontiguousarray(array)
    if source.dtype == np.float16:  # OpenCV resizes float32/64 and uint16, not float16
        source = source.astype(np.float32)
    return cv2.resize(source, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


def encode_batch(modality: str, arrays: Sequence[np.ndarray], mean: Sequence[float],
                 std: Sequence[float]) -> np.ndarray:
    """Equal-size checked arrays of one modality → its N×c×H×W float32 input tensor, each
    encoded straight into its slot (no stacking copy)."""
    n, (h, w) = len(arrays), arrays[0].shape[:2]
    out = np.empty((n, 1 if modality == "depth" else 3, h, w), np.float32)
    for i, array in enumerate(arrays):
        if modality == "depth":
            encode_depth(array, out=out[i:i + 1])
        else:
            encode_hha(array, mean, std, out=out[i:i + 1])
    return out


def gather_extras(modalities: Sequence[str], given: Mapping[str, Any], count: int,
                  per_frame: Callable[[Any], list], model: str) -> dict[str, list[Any]]:
    """The extra inputs ``modalities`` needs (all but rgb), ``per_frame(given[m])`` each: one
    entry per frame. An InputError for a missing modality, one the model does not take, or a
    count other than ``count``."""
    wanted = [m for m in modalities if m != "rgb"]
    unwanted = [m for m, v in given.items() if v is not None and m not in wanted]
    if unwanted:
        raise InputError(f"{model} takes {' + '.join(modalities)}, not {', '.join(unwanted)}: "
                         f"leave {unwanted[0]}= out")
    missing = [m for m in wanted if given.get(m) is None]
    if missing:
        raise InputError(f"{model} takes {' + '.join(modalities)}: pass "
                         + ", ".join(f"{m}= ({_TAKES[m]})" for m in missing)
                         + " at the frame's size")
    extras = {m: per_frame(given[m]) for m in wanted}
    for m, arrays in extras.items():
        if len(arrays) != count:
            raise InputError(f"{len(arrays)} {m} arrays for {count} frames: give one each")
    return extras


def check_extras(extras: Mapping[str, Sequence[Any]], indices: Sequence[int],
                 size: tuple[int, int]) -> dict[str, list[np.ndarray]]:
    """The frames ``indices``' extra inputs, each checked against the frames' ``size``."""
    return {m: [check_extra(m, arrays[i], size) for i in indices]
            for m, arrays in extras.items()}
