"""The input modalities (paper §5, NYUDv2), registered in one place, as pure numpy.

One :class:`Modality` record per input a model can take says everything about it: its
channels, what array a caller passes (dtypes, for messages too), how a file of it is read,
how it is resized with its frame, and how it is encoded into the network's input. Config
validation (``config.MODALITY_CHANNELS``), training, the export checks, the runtime
(``Segmenter(frame, **extras)``) and ``fcn-edge run`` (``--NAME DIR``, ``--input NAME=DIR``)
all read :data:`MODALITIES`; adding a modality is one :func:`register_modality` call and the
module that holds its encoder and reader. The three registered here:

* ``rgb``: the image, ``(pixel / 255 − mean) / std`` (``processing.frames_to_input``).
* ``depth``: metres (float) or millimetres (uint16, as depth PNGs and depth cameras deliver
  them), ``(d − DEPTH_MEAN_M) / DEPTH_STD_M``; pixels with no reading (0, negative, NaN, inf)
  become 0, the mean depth, so a hole neither looks near nor far.
* ``hha``: the 3-channel HHA image (uint8, channels in HHA order), normalised like an RGB
  image with the model's mean and std: the paper fine-tunes an ImageNet net on HHA images.

A model's ``inputs`` (``ModelConfig.inputs``) say which of these it takes, in channel order;
:func:`stack_inputs` concatenates them into the one N×C×H×W tensor an early-fusion FCN or a
late-fusion wrapper takes. The runtime feeds an artifact one tensor per modality instead:
:func:`check_extra` validates an array against its frame, :func:`resize_extra` moves it into
an artifact's profile as the frame is moved, :func:`encode_batch` encodes frames' arrays
straight into one batch.
"""
from __future__ import annotations

import keyword
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .processing import frames_to_input, resize_frame

#: Depth normalisation, about NYUDv2's statistics (indoor scenes, 0.5–10 m; mean ≈ 2.8 m).
DEPTH_MEAN_M, DEPTH_STD_M = 2.8, 1.4
#: uint16 depth is millimetres (NYUDv2 PNGs, Kinect, RealSense at its default depth scale).
DEPTH_UNITS_PER_M = {np.dtype(np.uint16): 1000.0}

#: ``encode(array, mean, std, out=None)``: H×W[×c] or N×H×W[×c] → N×c×H×W float32, written
#: into ``out`` when given (one slot of a larger batch).
Encoder = Callable[[np.ndarray, Sequence[float], Sequence[float], Optional[np.ndarray]],
                   np.ndarray]
#: ``resize(array, (height, width))``: one checked array at another size.
Resizer = Callable[[np.ndarray, Tuple[int, int]], np.ndarray]


@dataclass(frozen=True)
class Modality:
    """One input modality: every fact the model, the runtime and ``fcn-edge run`` need.

    ``dtypes`` are the array dtypes a caller may pass (``"float"``: any floating type); an
    array is H×W (or H×W×1) for one channel, H×W×``channels`` otherwise. ``read`` turns one
    file into such an array (None: the modality does not come from files, as RGB frames come
    from sources). ``encoding`` describes the encoding in artifact metadata, for runtimes that
    are not fcn-edge's.
    """

    name: str
    channels: int
    dtypes: tuple[str, ...]
    takes: str                                   # what a caller passes, for messages
    files: str                                   # what a folder of it holds, for messages
    encode: Encoder
    resize: Resizer
    read: Callable[[Path], np.ndarray] | None = None
    encoding: Any = ""

    def accepts(self, dtype: np.dtype) -> bool:
        return dtype.name in self.dtypes or ("float" in self.dtypes and dtype.kind == "f")


# --- the encoders --------------------------------------------------------------------------

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


def depth_encoding() -> dict[str, float]:
    """How ``encode_depth`` encodes, for artifact metadata (so other runtimes can do the same)."""
    return {"units": "metres (float) or millimetres (uint16)", "mean_m": DEPTH_MEAN_M,
            "std_m": DEPTH_STD_M, "invalid": 0.0}


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``array`` at ``size`` (H, W) by nearest neighbour, sampled at pixel centres.

    For measurements such as depth: interpolating would invent depths between a near object
    and the wall behind it, and blend valid readings with holes (0).
    """
    import cv2  # lazy, as in processing.py

    h, w = size
    source = np.ascontiguousarray(array)
    if source.dtype == np.float16:  # OpenCV resizes float32/64 and uint16, not float16
        source = source.astype(np.float32)
    return cv2.resize(source, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


# --- the readers: one file → one array -----------------------------------------------------

def decode_file(path: Path) -> np.ndarray:
    """An image file as OpenCV decodes it, unchanged (bit depth and channels kept)."""
    import cv2

    try:
        data = np.fromfile(path, np.uint8)  # imdecode: non-ASCII paths work on every OS
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError(f"{path}: not a readable image (damaged, or a format OpenCV cannot "
                         f"decode)")
    return image


def image_kind(image: np.ndarray) -> str:
    channels = image.shape[2] if image.ndim == 3 else 1
    return f"{channels} channel{'s' if channels > 1 else ''} of {image.dtype}"


def read_depth(path: Path) -> np.ndarray:
    """An H×W uint16 depth map (millimetres) from a 16-bit single-channel image file."""
    depth = decode_file(path)
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise InputError(f"{path}: depth must be a 16-bit single-channel image in millimetres, "
                         f"got {image_kind(depth)}")
    return depth


def read_hha(path: Path) -> np.ndarray:
    """An H×W×3 uint8 HHA image, channels in file order (OpenCV decodes them reversed)."""
    hha = decode_file(path)
    if hha.ndim != 3 or hha.shape[2] != 3 or hha.dtype != np.uint8:
        raise InputError(f"{path}: HHA must be an 8-bit 3-channel image, got {image_kind(hha)}")
    return np.ascontiguousarray(hha[..., ::-1])


# --- the registry ---------------------------------------------------------------------------

_REGISTRY: dict[str, Modality] = {}
_BUILT_IN = ("rgb", "depth", "hha")
_RESERVED = {"frame", "frames", "shape"}  # Segmenter's own parameters


class _View(Mapping):
    """A live, read-only view of the registry (``value`` picks what each entry shows)."""

    def __init__(self, value: Callable[[Modality], Any]) -> None:
        self._value = value

    def __getitem__(self, name: str) -> Any:
        return self._value(_REGISTRY[name])

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


#: name → Modality, in registration order (rgb, depth, hha, then any added).
MODALITIES: Mapping[str, Modality] = _View(lambda m: m)
#: name → channels; ``config.MODALITY_CHANNELS`` is this view.
MODALITY_CHANNELS: Mapping[str, int] = _View(lambda m: m.channels)


def register_modality(modality: Modality) -> Modality:
    """Add ``modality`` to the registry; it is then a model input, a ``Segmenter`` keyword and
    an ``fcn-edge run`` input. Its name must be a lower-case identifier not yet registered."""
    name = modality.name
    if not (name.isidentifier() and name.islower()) or keyword.iskeyword(name) \
            or name in _RESERVED:
        raise InputError(f"modality name {name!r} must be a lower-case Python identifier, not "
                         f"a keyword or one of {', '.join(sorted(_RESERVED))}")
    if name in _REGISTRY:
        raise InputError(f"modality {name!r} is already registered")
    if not isinstance(modality.channels, int) or modality.channels < 1:
        raise InputError(f"modality {name!r}: channels must be an integer ≥ 1, got "
                         f"{modality.channels!r}")
    _REGISTRY[name] = modality
    return modality


def unregister_modality(name: str) -> None:
    """Remove a modality added with :func:`register_modality` (the built-in ones stay)."""
    if name in _BUILT_IN:
        raise InputError(f"{name} is built in and cannot be unregistered")
    _REGISTRY.pop(name, None)


def get_modality(name: str) -> Modality:
    """The registered modality ``name``, or an InputError naming the registered ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown input modality {name!r}; registered: "
                         f"{', '.join(_REGISTRY)}") from None


def file_reader(name: str) -> Callable[[Path], np.ndarray]:
    """How a file of modality ``name`` is read; an InputError for one that has no files."""
    read = get_modality(name).read
    if read is None:
        raise InputError(f"{name} is not read from files: it cannot come from a folder (the "
                         f"frames are the source's)")
    return read


def extra_modalities() -> tuple[Modality, ...]:
    """Every registered modality but rgb: those a frame brings besides itself."""
    return tuple(m for m in _REGISTRY.values() if m.name != "rgb")


def _encode_rgb(array, mean, std, out=None):
    return frames_to_input(array, mean, std, color_order="rgb", frame_order="rgb", out=out)


def _encode_depth(array, mean, std, out=None):  # depth has its own statistics
    return encode_depth(array, out)


register_modality(Modality(
    "rgb", 3, ("uint8",), "H×W×3 uint8 frames", "images", _encode_rgb, resize_frame,
    encoding="(pixel / 255 - mean) / std, colour order color_order"))
register_modality(Modality(
    "depth", 1, ("float", "uint16"), "H×W float metres or uint16 millimetres",
    "16-bit depth PNGs (millimetres)", _encode_depth,
    resize_nearest, read_depth, encoding=depth_encoding()))
register_modality(Modality(
    "hha", 3, ("uint8",), "H×W×3 uint8 (HHA channel order)", "8-bit HHA PNGs", encode_hha,
    resize_frame, read_hha, encoding="(pixel / 255 - mean) / std, HHA channel order"))


# --- encoding a model's inputs ---------------------------------------------------------------

def encode_input(name: str, array: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 frame_order: str = "rgb", color_order: str = "rgb") -> np.ndarray:
    """One modality → N×c×H×W float32. ``frame_order`` is the colour order of an ``rgb``
    array (``bgr`` for OpenCV frames), ``color_order`` the network's."""
    if name == "rgb":
        return frames_to_input(array, mean, std, color_order, frame_order)
    return get_modality(name).encode(array, mean, std, None)


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


# --- the runtime's side: one array per frame, checked, resized, encoded into a batch ---------

def check_extra(modality: str, array: Any, size: tuple[int, int]) -> np.ndarray:
    """One frame's array of ``modality`` (H×W or H×W×1 for one channel, H×W×c otherwise, of a
    dtype it takes), refused with an InputError when it is of another kind or not at the
    frame's ``size`` (H, W): the modalities of a pixel must be registered to it, which a
    resize here cannot ensure."""
    spec = get_modality(modality)
    if array is None:
        raise InputError(f"no {modality} given: pass {modality}= ({spec.takes}, at the "
                         f"frame's size)")
    array = np.asarray(array)
    if spec.channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    shaped = array.ndim == 2 if spec.channels == 1 else (
        array.ndim == 3 and array.shape[2] == spec.channels)
    if not (shaped and spec.accepts(array.dtype)):
        raise InputError(f"{modality} must be {spec.takes}, got {array.dtype} {array.shape}")
    if array.shape[:2] != tuple(size):
        raise InputError(f"{modality} is {array.shape[0]}×{array.shape[1]} but its frame is "
                         f"{size[0]}×{size[1]}: give {modality} registered to the frame, at "
                         f"its size")
    return array


def resize_extra(modality: str, array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A checked array resized to ``size`` (H, W) as its frame is resized, by its modality's
    rule: depth by nearest neighbour (:func:`resize_nearest`), HHA as frames are (it is an
    image; paper §5 treats it as one)."""
    return get_modality(modality).resize(array, size)


def encode_batch(modality: str, arrays: Sequence[np.ndarray], mean: Sequence[float],
                 std: Sequence[float]) -> np.ndarray:
    """Equal-size checked arrays of one modality → its N×c×H×W float32 input tensor, each
    encoded straight into its slot (no stacking copy)."""
    spec = get_modality(modality)
    n, (h, w) = len(arrays), arrays[0].shape[:2]
    out = np.empty((n, spec.channels, h, w), np.float32)
    for i, array in enumerate(arrays):
        spec.encode(array, mean, std, out[i:i + 1])
    return out


def gather_extras(modalities: Sequence[str], given: Mapping[str, Any], count: int,
                  per_frame: Callable[[Any], list], model: str) -> dict[str, list[Any]]:
    """The extra inputs ``modalities`` needs (all but rgb), ``per_frame(given[m])`` each: one
    entry per frame. An InputError for a missing modality, one the model does not take, or a
    count other than ``count``."""
    wanted = [m for m in modalities if m != "rgb"]
    unwanted = [m for m, v in given.items() if v is not None and m not in wanted]
    if unwanted:
        unknown = [m for m in unwanted if m not in _REGISTRY]
        known = (f" ({', '.join(unknown)} is no registered modality: "
                 f"{', '.join(m.name for m in extra_modalities())} are)" if unknown else "")
        raise InputError(f"{model} takes {' + '.join(modalities)}, not {', '.join(unwanted)}: "
                         f"leave {unwanted[0]}= out{known}")
    missing = [m for m in wanted if given.get(m) is None]
    if missing:
        raise InputError(f"{model} takes {' + '.join(modalities)}: pass "
                         + ", ".join(f"{m}= ({get_modality(m).takes})" for m in missing)
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
