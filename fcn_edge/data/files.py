"""Reading and writing images, label maps and split lists, with errors that name the file.

Every reader goes through bytes in memory (``np.fromfile``-like) and ``cv2.imdecode`` rather
than ``cv2.imread``: imread answers a missing file, a directory and a corrupt file alike with
``None``, and here each gets its own message. Palette PNGs, whose indices OpenCV would turn
into colours, are read and written by the runtime's Pillow codec (``runtime/palette.py``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import InputError
from ..runtime.palette import (PNG_SIGNATURE, decode_palette_png, full_palette, png_kind,
                               write_palette_png)
from .classes import IGNORE_INDEX

__all__ = ["read_file_bytes", "read_image", "read_mask", "read_palette_png", "write_image",
           "write_palette_png", "read_split_file", "read_classes_file", "check_mask",
           "full_palette"]

_MAX_SHOWN = 5  # offending values or names listed in one message
# EXIF rotation would turn a photo but not its PNG mask: read pixels as stored.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def read_file_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The file's bytes, or an InputError saying it is missing or cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} file is missing") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} file ({exc.strerror or exc})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as H×W×3 uint8 RGB (grey and RGBA images are converted)."""
    data = read_file_bytes(path, "image")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _IMREAD_FLAGS)
    if image is None:
        raise InputError(f"{path}: unreadable image (corrupt, empty or not an image format "
                         "OpenCV decodes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_palette_png(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(H×W uint8 indices, N×3 uint8 palette) of a palette PNG."""
    return decode_palette_png(read_file_bytes(path, "mask"), path)


def _single_channel(data: bytes, path: str | os.PathLike, kind: str) -> np.ndarray:
    """Decode a grayscale mask with OpenCV; 16-bit masks must still hold uint8 labels."""
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise InputError(f"{path}: unreadable mask (corrupt or not an image)")
    if mask.ndim == 3 and mask.shape[2] > 1:
        raise InputError(f"{path}: palette PNG expected but {kind} found (a colour image, "
                         "not class ids); convert colours to class indices first")
    mask = mask.reshape(mask.shape[:2])
    if mask.dtype != np.uint8:
        if not np.issubdtype(mask.dtype, np.integer) or mask.min() < 0 or mask.max() > 255:
            raise InputError(f"{path}: {mask.dtype} mask with values outside 0..255; class "
                             "ids must fit uint8 (255 = ignore)")
        mask = mask.astype(np.uint8)
    return mask


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A label map as H×W uint8 class ids: the *indices* of a palette PNG (VOC's format,
    which OpenCV would turn into colours), or the values of a grayscale PNG/BMP/TIFF.

    RGB/RGBA masks (colour-coded, not class ids) and JPEG masks (lossy) are refused.
    """
    data = read_file_bytes(path, "mask")
    if data.startswith(PNG_SIGNATURE):
        kind = png_kind(data, path)
        if kind == "palette":
            return decode_palette_png(data, path)[0]
        if kind != "grayscale":
            raise InputError(f"{path}: palette PNG expected but {kind} found; a mask "
                             "holds class ids, one channel (palette or grayscale PNG)")
        return _single_channel(data, path, kind)
    if data.startswith(b"\xff\xd8"):
        raise InputError(f"{path}: JPEG mask; JPEG is lossy and alters class ids at every "
                         "edge: store masks as PNG")
    return _single_channel(data, path, "a colour image")


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> Path:
    """Write an H×W×3 uint8 RGB image; JPEG (``quality``, full-resolution colour) or any
    other format OpenCV knows by the suffix (PNG is lossless). Returns the path."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"{path}: an image to write must be H×W×3 uint8 RGB, got "
                         f"{image.dtype} array of shape {image.shape}")
    suffix = Path(path).suffix.lower()
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        # 4:4:4: the default 4:2:0 chroma subsampling smears the colour of 1–2 px structures.
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality),
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buffer = cv2.imencode(suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise InputError(f"{path}: OpenCV cannot encode images as {suffix!r}")
    return _write_bytes(path, buffer.tobytes())


def _write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """A plain write, not an fsynced atomic one: exports write thousands of images and fsync
    each is slow on SD cards. Masks, where damage would mean wrong labels, are written
    atomically (``write_palette_png``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def read_split_file(path: str | os.PathLike) -> list[str]:
    """Image ids, one per line (VOC's ImageSets, the paper's ``seg11valid.txt``). Lines of
    paths (``/JPEGImages/x.jpg /SegmentationClassAug/x.png``) give the stem of the first."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: split file is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read split file ({exc})") from None
    firsts = [line.split()[0] for line in text.splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    ids = [Path(first).stem if "/" in first else first for first in firsts]
    if not ids:
        raise InputError(f"{path}: empty split file (expected one image id per line)")
    return ids


def check_mask(mask: np.ndarray, image_shape: Sequence[int], num_classes: int,
               mask_path: str | os.PathLike, image_path: str | os.PathLike,
               ignore_index: int = IGNORE_INDEX) -> None:
    """Refuse a mask whose size differs from its image's or that holds a label that is
    neither a class (0..num_classes-1) nor ``ignore_index``."""
    if mask.shape[:2] != tuple(image_shape[:2]):
        raise InputError(
            f"{mask_path}: mask is {mask.shape[0]}×{mask.shape[1]} but its image {image_path} "
            f"is {image_shape[0]}×{image_shape[1]}; masks must match their image exactly "
            "(resizing would invent labels)")
    if mask.size and int(mask.max()) >= num_classes:  # quick test first: almost always passes
        counts = np.bincount(mask.ravel(), minlength=256)
        counts[:num_classes] = 0
        counts[ignore_index] = 0
        bad = np.flatnonzero(counts)
        if bad.size:
            shown = ", ".join(str(v) for v in bad[:_MAX_SHOWN]) + (" ..." if bad.size > _MAX_SHOWN
                                                                    else "")
            raise InputError(
                f"{mask_path}: label values {shown} are outside the {num_classes} classes "
                f"(0..{num_classes - 1}) and not the ignore label {ignore_index}")


def read_classes_file(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names, one per line in label order (blank lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read class list ({exc})") from None
    names = tuple(line.strip() for line in lines if line.strip())
    if not names:
        raise InputError(f"{path}: empty class list (expected one class name per line)")
    if len(names) > 255:
        raise InputError(f"{path}: {len(names)} classes; uint8 masks hold at most 255 "
                         "(255 is the ignore label)")
    return names
