"""Pre- and post-processing as pure numpy: one definition for export checks, evaluation and the
runtime, so that they can never drift apart.

Frames arrive as OpenCV delivers them: H×W×3 (or N×H×W×3) uint8 BGR. The network wants
``(pixel / 255 − mean) / std`` in the colour order it was trained on (RGB for everything
fcn-edge trains), N×3×H×W float32. Raw-IO artifacts do exactly this inside the graph; the
export checks them against this module.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InputError
from .palette import colours as as_colours

#: The ImageNet statistics every backbone was pretrained with: the normalisation a model uses
#: when its checkpoint or artifact names none (the one definition; config and data read it).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
                    frame_order: str = "bgr", out: np.ndarray | None = None) -> np.ndarray:
    """N×H×W×3 (or H×W×3) uint8 frames in ``frame_order`` → N×3×H×W float32 normalised input
    in the network's ``color_order``.

    Any strides are read in place (channel-reversed, cropped or alpha-dropped views cost
    nothing extra); ``out`` lets a caller fill one slot of a larger batch without stacking.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be N×H×W×3 uint8, got {frames.dtype} {frames.shape}")
    scale, bias = normalization_affine(mean, std)
    n, h, w, _ = frames.shape
    if out is None:
        out = np.empty((n, 3, h, w), np.float32)
    elif out.shape != (n, 3, h, w) or out.dtype != np.float32:
        raise InputError(f"out must be float32 of shape {(n, 3, h, w)}, got {out.dtype} "
                         f"{out.shape}")
    flip = color_order != frame_order
    for c in range(3):
        source = frames[..., 2 - c if flip else c]
        np.multiply(source, scale[c], out=out[:, c], dtype=np.float32)
        out[:, c] += bias[c]
    return out


def rgb_input(frames: Sequence[np.ndarray] | np.ndarray, meta: Any,
              frame_order: str = "bgr") -> tuple[np.ndarray, int]:
    """The RGB input tensor of an artifact (``meta``: its ArtifactMeta) for equal-size H×W×3
    uint8 frames in ``frame_order``, and how many frame copies making it took.

    Plain artifacts: normalised straight into one N×3×H×W float32 batch (one copy per frame,
    any strides). Raw-IO artifacts take N×H×W×3 uint8 BGR: an array or a single contiguous
    BGR frame goes in as a view (no copy); RGB or strided frames, and lists to stack, cost one.
    """
    n = len(frames)
    if not meta.raw_io:
        if isinstance(frames, np.ndarray):
            return frames_to_input(frames, meta.mean, meta.std, meta.color_order,
                                   frame_order), n
        h, w = frames[0].shape[:2]
        batch = np.empty((n, 3, h, w), np.float32)
        for i, frame in enumerate(frames):  # straight into the batch: no stacking
            frames_to_input(frame, meta.mean, meta.std, meta.color_order, frame_order,
                            out=batch[i:i + 1])
        return batch, n
    flip = frame_order != "bgr"  # raw-IO graphs take BGR, as OpenCV delivers
    if isinstance(frames, np.ndarray) or n == 1:
        batch = frames if isinstance(frames, np.ndarray) else frames[0][None]
        batch = batch[..., ::-1] if flip else batch
        if batch.flags.c_contiguous:
            return batch, 0
        return np.ascontiguousarray(batch), n
    return np.stack([f[..., ::-1] if flip else f for f in frames]), n


def labels_from_logits(logits: np.ndarray) -> np.ndarray:
    """N×C×H×W scores → N×H×W labels (the first maximum on ties, as ONNX ArgMax and torch)."""
    logits = np.asarray(logits)
    if logits.ndim != 4:
        raise InputError(f"logits must be N×C×H×W, got shape {logits.shape}")
    return logits.argmax(axis=1).astype(labels_dtype(logits.shape[1]), copy=False)


# --- frames as the runtime takes them ------------------------------------------------------

def as_frame(frame: Any, shape: Sequence[int] | None = None) -> np.ndarray:
    """An H×W×3 uint8 view of ``frame``: an array or buffer-protocol object (with ``shape``).

    Grayscale (H×W, H×W×1) becomes a 3-channel view (stride 0) and a 4th (alpha) channel is
    dropped by slicing: no copy either way. Anything else is refused with an InputError saying
    what to pass (the policy is explained in the Segmenter's docstring).
    """
    array = _as_array(frame, shape)
    if array.dtype != np.uint8:
        raise InputError(f"frames must be uint8 (8 bits per channel, as OpenCV delivers), got "
                         f"{array.dtype}{_dtype_hint(array.dtype)}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        hint = "; for several frames use seg.batch(frames)" if array.ndim == 4 else ""
        raise InputError(f"a frame must be H×W×3 (or H×W grayscale, H×W×4 with alpha), got "
                         f"shape {array.shape}{hint}")
    if array.size == 0:
        raise InputError(f"the frame is empty (shape {array.shape}): did the capture or read "
                         f"fail?")
    channels = array.shape[2]
    if channels == 3:
        return array
    if channels == 4:
        return array[..., :3]  # alpha dropped: a view
    if channels == 1:
        return np.broadcast_to(array, array.shape[:2] + (3,))  # grey → 3 channels: a view
    hint = ("; it looks channels-first: pass frame.transpose(1, 2, 0)"
            if array.shape[0] in (1, 3, 4) else "")
    raise InputError(f"a frame needs 3 channels (or 1 grey, 4 with alpha), got {channels} in "
                     f"shape {array.shape}{hint}")


def group_by_size(frames: Any) -> tuple[int, dict[tuple[int, int], Any],
                                        dict[tuple[int, int], list[int]]]:
    """``(count, groups, order)`` of a batch of frames: each size's frames, and which of the
    ``count`` frames they are. An N×H×W×3 uint8 array goes in whole, without splitting; a
    sequence is split by size, each frame taken as :func:`as_frame` takes it."""
    if not isinstance(frames, Iterable):
        raise InputError(f"batch takes an N×H×W×C array or a sequence of frames, got "
                         f"{type(frames).__name__}")
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise InputError(f"batch takes an N×H×W×C array or a sequence of frames, got shape "
                         f"{frames.shape}; for one frame call seg(frame)")
    if isinstance(frames, np.ndarray) and frames.shape[3] == 3 and frames.dtype == np.uint8 \
            and frames.size > 0:
        size = frames.shape[1:3]
        return len(frames), {size: frames}, {size: list(range(len(frames)))}
    views = [as_frame(f) for f in frames]
    order: dict[tuple[int, int], list[int]] = {}
    for i, view in enumerate(views):
        order.setdefault(view.shape[:2], []).append(i)
    return len(views), {size: [views[i] for i in idx] for size, idx in order.items()}, order


def _as_array(frame: Any, shape: Sequence[int] | None) -> np.ndarray:
    if frame is None:
        raise InputError("the frame is None (cv2.imread and VideoCapture.read return None "
                         "when they cannot read)")
    if isinstance(frame, np.ndarray):
        array = frame
    else:
        array = _buffer_array(frame)
    if shape is None:
        return array
    shape = _frame_shape(shape)
    if array.size != math.prod(shape):  # Python ints: a huge shape cannot overflow to a match
        raise InputError(f"a buffer of {array.size} {array.dtype} values cannot have shape "
                         f"{shape} ({math.prod(shape)} values)")
    return array.reshape(shape)


def _buffer_array(frame: Any) -> np.ndarray:
    """A buffer-protocol object (or one with ``__array__``) as an array, keeping its format,
    shape and strides; what numpy cannot read as numbers is an InputError."""
    try:
        view = memoryview(frame)
    except TypeError:
        if not hasattr(frame, "__array_interface__") and not hasattr(frame, "__array__"):
            raise InputError(f"a frame must be a numpy array or a buffer-protocol object, "
                             f"got {type(frame).__name__}") from None
        view = frame
    try:
        return np.asarray(view)
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise InputError(f"the frame's buffer ({type(frame).__name__}) cannot be read as an "
                         f"array of pixels ({exc}); pass uint8 data") from None


def _frame_shape(shape: Any) -> tuple[int, ...]:
    """``shape=`` of a raw buffer: (height, width) or (height, width, channels), each a
    positive integer (numpy would take -1 as "infer" and truncate 64.5 to 64)."""
    dims = tuple(shape) if isinstance(shape, (tuple, list, np.ndarray)) else None
    if dims is None or len(dims) not in (2, 3) or any(
            isinstance(d, bool) or not isinstance(d, Integral) or d < 1 for d in dims):
        raise InputError(f"shape must be (height, width) or (height, width, channels) of "
                         f"positive integers, got {shape!r}")
    return tuple(int(d) for d in dims)


def _dtype_hint(dtype: np.dtype) -> str:
    if dtype.kind == "f":
        return "; if its values are in [0, 1] pass (frame * 255).round().astype(np.uint8)"
    if dtype in (np.uint16, np.int16):
        return "; for 16-bit images pass (frame >> 8).astype(np.uint8) or scale them yourself"
    return ""


# --- showing labels -------------------------------------------------------------------------

def palette_lut(palette, color_order: str = "rgb", size: int = 256) -> np.ndarray:
    """A ``max(size, len(palette) + 1)`` × 3 uint8 lookup table in ``color_order``; entries past
    the palette are black, so labels without a class (255, the ignore label) show as black."""
    colours = as_colours(palette)  # checked: 300 is refused, not an OverflowError
    lut = np.zeros((max(size, len(colours) + 1), 3), np.uint8)
    lut[:len(colours)] = colours[:, ::-1] if color_order == "bgr" else colours
    return lut


def colorize(labels: np.ndarray, palette, color_order: str = "rgb") -> np.ndarray:
    """…×H×W labels → …×H×W×3 uint8 colours from ``palette`` (RGB triples) in ``color_order``.

    One table lookup (a vectorised gather); labels outside the palette, negative ones included,
    are black.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise InputError(f"labels must be an integer array, got {labels.dtype}")
    lut = palette_lut(palette, color_order)
    if labels.dtype == np.uint8:
        return lut[labels]
    black = len(lut) - 1
    index = np.where((labels >= 0) & (labels < black), labels, black)
    return lut[index]


def overlay(frame: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 − alpha) · frame + alpha · colours``, rounded, as uint8 (both H×W×3 uint8)."""
    import cv2  # lazy: the runtime package must import quickly

    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be a number from 0 to 1, got {alpha!r}")
    if frame.shape != colours.shape or frame.dtype != np.uint8 or colours.dtype != np.uint8:
        raise InputError(f"frame and colours must be H×W×3 uint8 of one shape, got "
                         f"{frame.dtype} {frame.shape} and {colours.dtype} {colours.shape}")
    return cv2.addWeighted(np.ascontiguousarray(frame), 1.0 - alpha,
                           np.ascontiguousarray(colours), alpha, 0.0)


# --- fitting frames into an artifact's shapes ----------------------------------------------

def fit_size(height: int, width: int, min_hw: tuple[int, int], max_hw: tuple[int, int],
             multiple: int = 1) -> tuple[int, int]:
    """The size to run a ``height``×``width`` frame at, within ``[min_hw, max_hw]``.

    Unchanged when it fits. Otherwise scaled, keeping the aspect ratio, just enough to fit
    (down for a frame too large, up for one too small); an axis that still does not fit (a very
    thin frame) is clamped, which then distorts the aspect: the profile wins. Heights and
    widths are rounded to ``multiple`` where the artifact needs that.
    """
    (lo_h, lo_w), (hi_h, hi_w) = min_hw, max_hw
    inside = lo_h <= height <= hi_h and lo_w <= width <= hi_w
    if inside and height % multiple == 0 and width % multiple == 0:
        return height, width
    scale = 1.0
    if height > hi_h or width > hi_w:
        scale = min(hi_h / height, hi_w / width)
    elif height < lo_h or width < lo_w:
        scale = max(lo_h / height, lo_w / width)
    return (_fit_axis(height * scale, lo_h, hi_h, multiple),
            _fit_axis(width * scale, lo_w, hi_w, multiple))


def _fit_axis(value: float, lo: int, hi: int, multiple: int) -> int:
    lo_m, hi_m = -(-lo // multiple) * multiple, hi // multiple * multiple
    if lo_m > hi_m:
        raise InputError(f"no multiple of {multiple} lies between {lo} and {hi}")
    return int(min(hi_m, max(lo_m, round(value / multiple) * multiple)))


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H×W×3 uint8 → ``size`` (height, width): area averaging to shrink, bilinear to enlarge."""
    import cv2

    h, w = size
    shrink = h * w < frame.shape[0] * frame.shape[1]
    return cv2.resize(np.ascontiguousarray(frame), (w, h),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """…×h×w labels → …×``size`` by nearest neighbour (labels are never blended).

    ``INTER_NEAREST_EXACT`` samples at pixel centres; plain ``INTER_NEAREST`` is shifted by
    half a source pixel, which moves every class boundary.
    """
    import cv2

    h, w = size
    if labels.ndim == 2:
        return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    out = np.empty(labels.shape[:-2] + (h, w), labels.dtype)
    for i, plane in enumerate(labels.reshape(-1, *labels.shape[-2:])):  # one call per frame
        out.reshape(-1, h, w)[i] = cv2.resize(plane, (w, h),
                                              interpolation=cv2.INTER_NEAREST_EXACT)
    return out
