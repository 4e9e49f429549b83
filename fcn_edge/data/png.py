"""A minimal PNG codec for palette ("P"-mode) label maps, in numpy, zlib and struct.

VOC stores its masks as palette PNGs whose *indices* are the class ids. OpenCV's decoder always
expands a palette to BGR colours (``IMREAD_UNCHANGED`` included) and its encoder cannot write
one, and PIL is not a dependency of the edge runtime; so this module reads the indices and
writes palette PNGs itself. It covers every palette PNG the standard allows (bit depths 1, 2,
4, 8; all five row filters; Adam7 interlacing) and checks every chunk's CRC.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from ..errors import InputError

__all__ = ["PNG_SIGNATURE", "PngHeader", "read_png_header", "decode_palette_png",
           "encode_palette_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
# Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
          (1, 0, 2, 2), (0, 1, 1, 2))


class PngHeader(NamedTuple):
    """The IHDR fields that decide how a PNG decodes."""
    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int

    @property
    def kind(self) -> str:
        return COLOUR_TYPES.get(self.colour_type, f"colour type {self.colour_type}")


def _chunks(data: bytes, path: str | Path) -> Iterator[tuple[bytes, bytes]]:
    """(type, payload) of each chunk, after checking length and CRC (a corrupt file must fail
    here, not turn into wrong labels)."""
    if not data.startswith(PNG_SIGNATURE):
        raise InputError(f"{path}: not a PNG file")
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        crc_bytes = data[pos + 8 + length:pos + 12 + length]
        if len(payload) != length or len(crc_bytes) != 4:
            break
        if zlib.crc32(kind + payload) != struct.unpack(">I", crc_bytes)[0]:
            raise InputError(f"{path}: corrupt PNG (CRC mismatch in {kind!r} chunk)")
        yield kind, payload
        if kind == b"IEND":
            return
        pos += 12 + length
    raise InputError(f"{path}: truncated PNG (no IEND chunk)")


def read_png_header(data: bytes, path: str | Path) -> PngHeader:
    """The IHDR of an in-memory PNG (only the first chunk is looked at)."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 29:
        raise InputError(f"{path}: not a PNG file (no PNG signature and IHDR chunk)")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return PngHeader(width, height, depth, colour, interlace)


def _unfilter_sequential(line: np.ndarray, prev: np.ndarray, kind: int) -> np.ndarray:
    """Average (3) and Paeth (4) rows: each byte depends on the one decoded before it, so
    they cannot be vectorised; encoders rarely use them for palette images."""
    out, up = [0] * len(line), prev.tolist()
    left = upleft = 0
    for i, (value, above) in enumerate(zip(line.tolist(), up)):
        if kind == 3:
            pred = (left + above) >> 1
        else:
            p = left + above - upleft
            pa, pb, pc = abs(p - left), abs(p - above), abs(p - upleft)
            pred = left if pa <= pb and pa <= pc else (above if pb <= pc else upleft)
        left = out[i] = (value + pred) & 0xFF
        upleft = above
    return np.array(out, np.uint8)


def _unfilter(raw: np.ndarray, height: int, stride: int, path: str | Path) -> np.ndarray:
    """Undo the per-row filters of ``height`` rows of ``stride`` bytes (1 byte per pixel
    step: palette images have at most 8 bits per pixel)."""
    rows = raw.reshape(height, stride + 1)
    filters, data = rows[:, 0], rows[:, 1:]
    if not filters.any():  # the common case (libpng's default for palette images)
        return data
    out = np.empty((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, line = int(filters[y]), data[y]
        if kind == 0:
            cur = line
        elif kind == 1:
            cur = np.cumsum(line, dtype=np.uint8)  # Sub: running sum modulo 256
        elif kind == 2:
            cur = line + prev  # Up: uint8 arithmetic wraps modulo 256, as PNG wants
        elif kind in (3, 4):
            cur = _unfilter_sequential(line, prev, kind)
        else:
            raise InputError(f"{path}: corrupt PNG (unknown row filter {kind})")
        out[y] = prev = cur
    return out


def _unpack(rows: np.ndarray, width: int, depth: int) -> np.ndarray:
    """Bytes of packed 1/2/4-bit indices → one uint8 per pixel, leftmost pixel first."""
    if depth == 8:
        return rows[:, :width]
    shifts = np.arange(8 - depth, -1, -depth, dtype=np.uint8)
    values = (rows[:, :, None] >> shifts) & ((1 << depth) - 1)
    return values.reshape(rows.shape[0], -1)[:, :width]


def _decode_pass(raw: np.ndarray, pos: int, width: int, height: int, depth: int,
                 path: str | Path) -> tuple[np.ndarray, int]:
    """Decode one (sub-)image starting at byte ``pos``; returns it and the next position."""
    stride = (width * depth + 7) // 8
    size = height * (stride + 1)
    if pos + size > raw.size:
        raise InputError(f"{path}: truncated PNG (image data shorter than {width}×{height})")
    rows = _unfilter(raw[pos:pos + size], height, stride, path)
    return _unpack(rows, width, depth), pos + size


def decode_palette_png(data: bytes, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(H×W uint8 palette indices, N×3 uint8 palette) of an in-memory palette PNG."""
    header = read_png_header(data, path)
    if header.colour_type != 3:
        raise InputError(f"{path}: palette PNG expected but {header.kind} found")
    if header.bit_depth not in (1, 2, 4, 8):
        raise InputError(f"{path}: corrupt palette PNG (bit depth {header.bit_depth})")
    palette, idat = np.zeros((0, 3), np.uint8), []
    for kind, payload in _chunks(data, path):
        if kind == b"PLTE":
            palette = np.frombuffer(payload, np.uint8).reshape(-1, 3).copy()
        elif kind == b"IDAT":
            idat.append(payload)
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    except zlib.error as exc:
        raise InputError(f"{path}: corrupt PNG image data ({exc})") from None
    w, h, depth = header.width, header.height, header.bit_depth
    if not header.interlace:  # copy: the rows are a read-only view of the zlib output
        return _decode_pass(raw, 0, w, h, depth, path)[0].copy(), palette
    out, pos = np.empty((h, w), np.uint8), 0
    for x0, y0, dx, dy in _ADAM7:  # interlaced: seven sub-images on sparser grids
        pw, ph = -(-(w - x0) // dx), -(-(h - y0) // dy)
        if pw > 0 and ph > 0:
            out[y0::dy, x0::dx], pos = _decode_pass(raw, pos, pw, ph, depth, path)
    return out, palette


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
        ">I", zlib.crc32(kind + payload))


def encode_palette_png(indices: np.ndarray, palette: np.ndarray, level: int = 6) -> bytes:
    """An 8-bit palette PNG of the H×W uint8 ``indices`` with the N×3 uint8 ``palette``
    (N ≤ 256). Rows are written unfiltered: label maps are flat regions that zlib packs well."""
    indices = np.ascontiguousarray(indices, np.uint8)
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    h, w = indices.shape
    rows = np.zeros((h, w + 1), np.uint8)  # a leading 0 byte per row: filter "None"
    rows[:, 1:] = indices
    return b"".join((
        PNG_SIGNATURE,
        _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)),
        _chunk(b"PLTE", palette.tobytes()),
        _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
        _chunk(b"IEND", b"")))
