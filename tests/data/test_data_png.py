"""The palette-PNG reader and writer (Pillow, runtime/palette.py) and the file readers,
checked against OpenCV's own PNG decoder.

OpenCV decodes a palette PNG to colours: for any PNG we decode, its BGR output must equal
``palette[indices]``. That oracle checks the decoding (all filters, bit depths, interlacing,
through an independent reference encoder written here) and the encoding.
"""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from fcn_edge.data import read_image, read_mask, read_palette_png, voc_palette, write_palette_png
from fcn_edge.runtime.palette import decode_palette_png, encode_palette_png
from fcn_edge.errors import InputError

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter_row(kind: int, row: bytes, prev: bytes) -> bytes:
    """The PNG spec's forward filters for 1 byte per pixel step, written plainly."""
    out = bytearray()
    for i, x in enumerate(row):
        a, b, c = (row[i - 1] if i else 0), prev[i], (prev[i - 1] if i else 0)
        pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
        out.append((x - pred) % 256)
    return bytes(out)


def _pack(indices: np.ndarray, depth: int) -> list[bytes]:
    rows = []
    for row in indices:
        if depth == 8:
            rows.append(row.tobytes())
            continue
        bits = "".join(format(int(v), f"0{depth}b") for v in row)
        bits += "0" * (-len(bits) % 8)
        rows.append(bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)))
    return rows


def reference_png(indices: np.ndarray, palette: np.ndarray, depth: int = 8,
                  interlace: bool = False) -> bytes:
    """A palette PNG using every row filter in turn (and Adam7 when asked)."""
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    raw, counter = bytearray(), 0
    for x0, y0, dx, dy in passes:
        sub = indices[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        rows = _pack(sub, depth)
        prev = bytes(len(rows[0]))
        for row in rows:
            kind = counter % 5
            counter += 1
            raw += bytes([kind]) + _filter_row(kind, row, prev)
            prev = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc
    h, w = indices.shape
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 3, 0, 0,
                                                               int(interlace)))
            + chunk(b"PLTE", palette.tobytes()) + chunk(b"IDAT", zlib.compress(bytes(raw)))
            + chunk(b"IEND", b""))


def _cv2_colours(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
@pytest.mark.parametrize("interlace", [False, True])
def test_decoder_reads_indices_for_every_filter_depth_and_interlace(tmp_path, depth, interlace):
    rng = np.random.default_rng(depth)
    indices = rng.integers(0, 2 ** depth, (13, 19), dtype=np.uint8)
    indices[:, :5] = 2 ** depth - 1  # runs, so Sub/Up/Paeth see equal neighbours too
    palette = voc_palette(2 ** depth)
    data = reference_png(indices, palette, depth, interlace)
    path = tmp_path / "ref.png"
    path.write_bytes(data)
    assert np.array_equal(_cv2_colours(data), palette[indices])  # the reference is valid PNG
    decoded, decoded_palette = read_palette_png(path)
    assert decoded.dtype == np.uint8 and decoded.flags.writeable
    assert np.array_equal(decoded, indices)
    assert np.array_equal(decoded_palette, palette)
    assert np.array_equal(read_mask(path), indices)


def test_written_palette_png_is_read_back_exactly_and_agrees_with_opencv(tmp_path):
    mask = np.random.default_rng(0).integers(0, 21, (37, 41), dtype=np.uint8)
    mask[::7] = 255
    path = write_palette_png(tmp_path / "sub" / "m.png", mask, voc_palette(21))
    assert np.array_equal(read_mask(path), mask)
    colours = _cv2_colours(path.read_bytes())
    assert np.array_equal(colours, voc_palette(256)[mask])  # short palette padded with VOC's
    assert tuple(colours[0, 0]) == (224, 224, 192)          # 255 = VOC's border colour


def test_single_row_png_decodes_to_a_writable_copy():
    data = encode_palette_png(np.arange(5, dtype=np.uint8)[None], voc_palette(5))
    indices, _ = decode_palette_png(data, "x.png")
    indices[0, 0] = 9  # would raise on a read-only view of the zlib output
    assert indices.tolist() == [[9, 1, 2, 3, 4]]


def test_corrupt_and_truncated_pngs_name_the_file(tmp_path):
    data = bytearray(encode_palette_png(np.zeros((8, 8), np.uint8), voc_palette(2)))
    corrupt = tmp_path / "corrupt.png"
    data[-20] ^= 0xFF  # inside the IDAT payload: its CRC no longer matches
    corrupt.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"corrupt\.png: corrupt PNG \(CRC"):
        read_mask(corrupt)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(encode_palette_png(np.zeros((8, 8), np.uint8), voc_palette(2))[:-12])
    with pytest.raises(InputError, match=r"truncated\.png: truncated PNG"):
        read_mask(truncated)


def test_a_mask_cut_inside_its_image_data_or_not_a_png_is_refused(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    data = encode_palette_png(noise, voc_palette(256))
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[:len(data) - 1000])  # ends inside the image data
    with pytest.raises(InputError, match=r"cut\.png: truncated PNG"):
        read_mask(cut)
    cut.write_bytes(data[:40])  # ends inside the palette
    with pytest.raises(InputError, match=r"cut\.png: corrupt or truncated PNG"):
        read_mask(cut)
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match=r"photo\.jpg: not a PNG file"):
        read_palette_png(tmp_path / "photo.jpg")


def test_an_index_without_a_colour_is_refused_not_packed_into_fewer_bits():
    with pytest.raises(InputError, match="index 9 has no colour in a palette of 4"):
        encode_palette_png(np.array([[0, 9]], np.uint8), voc_palette(4))
    indices, palette = decode_palette_png(
        encode_palette_png(np.array([[0, 3]], np.uint8), voc_palette(4)), "x.png")
    assert indices.tolist() == [[0, 3]] and np.array_equal(palette, voc_palette(4))


def test_grayscale_and_16_bit_masks_give_class_ids(tmp_path):
    mask = np.arange(24, dtype=np.uint8).reshape(4, 6)
    cv2.imwrite(str(tmp_path / "g.png"), mask)
    cv2.imwrite(str(tmp_path / "g16.png"), mask.astype(np.uint16))
    assert np.array_equal(read_mask(tmp_path / "g.png"), mask)
    assert read_mask(tmp_path / "g16.png").dtype == np.uint8
    assert np.array_equal(read_mask(tmp_path / "g16.png"), mask)
    cv2.imwrite(str(tmp_path / "big.png"), np.full((2, 2), 300, np.uint16))
    with pytest.raises(InputError, match=r"big\.png: uint16 mask with values outside 0\.\.255"):
        read_mask(tmp_path / "big.png")


def test_rgb_and_jpeg_masks_are_refused_with_the_reason(tmp_path):
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match=r"rgb\.png: palette PNG expected but RGB found"):
        read_mask(tmp_path / "rgb.png")
    cv2.imwrite(str(tmp_path / "m.jpg"), np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match=r"m\.jpg: JPEG mask; JPEG is lossy"):
        read_mask(tmp_path / "m.jpg")


def test_read_image_is_rgb_and_names_missing_or_unreadable_files(tmp_path):
    bgr = np.zeros((3, 5, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    image = read_image(tmp_path / "red.png")
    assert image.shape == (3, 5, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == (200, 0, 0)
    with pytest.raises(InputError, match=r"nothing\.jpg: image file is missing"):
        read_image(tmp_path / "nothing.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"junk\.jpg: unreadable image"):
        read_image(tmp_path / "junk.jpg")
    with pytest.raises(InputError, match=r"nothing\.png: mask file is missing"):
        read_mask(tmp_path / "nothing.png")


def test_grey_image_becomes_three_equal_channels(tmp_path):
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((2, 2), 77, np.uint8))
    assert read_image(tmp_path / "grey.png").tolist() == [[[77, 77, 77]] * 2] * 2


def test_voc_palette_matches_the_devkit_colour_map():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0),
                7: (128, 128, 128), 15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)}
    for label, colour in expected.items():
        assert tuple(palette[label]) == colour
    assert len({tuple(c) for c in palette}) == 256  # one-to-one
    assert np.array_equal(voc_palette(8), palette[:8])
    with pytest.raises(InputError):
        voc_palette(257)
