"""Label maps as palette PNGs (VOC's mask format), read and written with Pillow.

A palette ("P"-mode) PNG stores one index per pixel and a table of colours: the indices are
the class ids and any image viewer shows the colours. OpenCV cannot do this (its decoder
expands the palette to colours, its encoder cannot write one), so these go through Pillow,
imported on first use. ``fcn-edge run --masks`` writes them, the data sets read them.

The class legend drawn on overlays is in :mod:`.legend`.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_path

__all__ = ["PNG_SIGNATURE", "voc_palette", "full_palette", "colours", "png_kind",
           "decode_palette_png", "encode_palette_png", "write_palette_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow's mode of a PNG → the PNG colour type's name (grey PNGs open as 1, L, I or I;16).
_KINDS = {"P": "palette", "RGB": "RGB", "RGBA": "RGBA", "LA": "grayscale+alpha"}


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: n×3 uint8 RGB, the devkit's ``VOClabelcolormap.m``.

    Bits 0, 1, 2 of the label go to the most significant free bit of R, G, B, then the next
    three bits to the next one, and so on; so 1 is dark red, 15 (person) is (192, 128, 128)
    and 255 (the ignored border) is (224, 224, 192). The map is one-to-one on 0..255.
    """
    if not 0 <= n <= 256:
        raise InputError(f"voc_palette: n must be in 0..256 (uint8 labels), got {n}")
    label = np.arange(n, dtype=np.int64)
    palette = np.zeros((n, 3), np.int64)
    for bit in range(8):
        code = label >> (3 * bit)
        for channel in range(3):
            palette[:, channel] |= ((code >> channel) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def voc_colours(n: int) -> tuple[tuple[int, int, int], ...]:
    """The first ``n`` VOC colours as metadata holds them: one ``(r, g, b)`` int triple each."""
    return tuple((int(r), int(g), int(b)) for r, g, b in voc_palette(n).tolist())


def colours(palette) -> np.ndarray:
    """``palette`` (RGB triples of integers 0..255, nested or flat) as N×3 uint8; anything
    else is an InputError, not numpy's OverflowError for 300 or a silent cut of 1.5 to 1."""
    try:
        values = np.asarray(palette)
    except (TypeError, ValueError):  # ragged lists numpy cannot stack
        values = np.asarray("ragged")  # a text array: refused below
    integral = values.dtype.kind in "iu" or (
        values.dtype.kind == "f" and bool(np.all(np.isfinite(values) & (values % 1 == 0))))
    if not integral or values.size % 3 or (values.size and (values.min() < 0
                                                            or values.max() > 255)):
        raise InputError(f"a palette must be [r, g, b] colours of integers 0..255, got "
                         f"{str(palette)[:60]}")
    return values.reshape(-1, 3).astype(np.uint8)


def full_palette(palette: np.ndarray | None) -> np.ndarray:
    """256×3 uint8: ``palette`` then the VOC colour map for the indices it does not cover, so
    that any uint8 label (255 = ignore included) has a colour in the PNG."""
    full = voc_palette(256)
    if palette is not None:
        palette = colours(palette)[:256]
        full[:len(palette)] = palette
    return full


def _open(data: bytes, path: str | os.PathLike):
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data), formats=["PNG"])
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's unreadable-header errors
        what = "corrupt or truncated PNG" if data.startswith(PNG_SIGNATURE) else "not a PNG file"
        raise InputError(f"{path}: {what} ({exc})") from None


def png_kind(data: bytes, path: str | os.PathLike) -> str:
    """What an in-memory PNG holds: palette, grayscale, RGB, RGBA or grayscale+alpha (only
    its header is read)."""
    return _KINDS.get(_open(data, path).mode, "grayscale")


def decode_palette_png(data: bytes, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(H×W uint8 palette indices, N×3 uint8 palette) of an in-memory palette PNG.

    Every chunk's CRC and the closing IEND are checked first (Pillow's ``verify``): Pillow's
    decoder takes a file whose image-data CRC is damaged or whose IEND is cut off without a
    word, and a corrupt mask must fail here rather than turn into wrong labels.
    """
    image = _open(data, path)
    if image.mode != "P":
        raise InputError(f"{path}: palette PNG expected but {png_kind(data, path)} found")
    try:
        image.verify()  # reads every chunk to IEND; the image must be opened again after it
    except SyntaxError as exc:  # Pillow's "bad header checksum in b'IDAT'" and the like
        raise InputError(f"{path}: corrupt PNG (CRC or chunk check failed: {exc})") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: truncated PNG ({exc})") from None
    image = _open(data, path)
    try:
        indices = np.array(image)  # a writable copy; np.asarray would be read-only
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: corrupt PNG image data ({exc})") from None
    palette = np.array(image.getpalette() or (), np.uint8).reshape(-1, 3)
    return indices, palette


def encode_palette_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    """A palette PNG of the H×W uint8 ``indices`` with the N×3 uint8 ``palette`` (N ≤ 256),
    at the smallest bit depth N allows (8 bits for a full 256-colour palette)."""
    from PIL import Image

    indices = np.ascontiguousarray(indices, np.uint8)
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    if indices.ndim != 2 or not 0 < len(palette) <= 256:
        raise InputError(f"a palette PNG needs H×W indices and 1..256 colours, got indices "
                         f"of shape {indices.shape} and {len(palette)} colours")
    if indices.size and int(indices.max()) >= len(palette):
        # Pillow would pack such an index into fewer bits and silently change it.
        raise InputError(f"palette PNG index {int(indices.max())} has no colour in a palette "
                         f"of {len(palette)}; pass a longer palette (full_palette pads one)")
    image = Image.fromarray(indices)
    image.putpalette(palette.tobytes(), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_palette_png(path: str | os.PathLike, mask: np.ndarray,
                      palette: np.ndarray | None = None) -> Path:
    """Write an H×W uint8 label map as a palette PNG (VOC's format), atomically; the palette
    defaults to VOC's and is padded with it to 256 colours. Parent folders are created.
    Returns the path."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise InputError(f"{path}: a mask to write must be H×W uint8 class ids, got "
                         f"{mask.dtype} array of shape {mask.shape}")
    data = encode_palette_png(mask, full_palette(palette))
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path

