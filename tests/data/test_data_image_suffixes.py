"""One list of image suffixes: what `fcn-edge run` reads as images, a folder data set trains on
(Netpbm's .ppm/.pgm included: OpenCV decodes them, and some cameras' tools write them)."""
from __future__ import annotations

import numpy as np

from fcn_edge.data import folder, open_dataset
from fcn_edge.runtime import sources

from support import smooth_image, write_gray, write_rgb


def test_the_data_folder_and_the_runtime_read_the_same_suffixes(tmp_path):
    assert folder.IMAGE_SUFFIXES is sources.IMAGE_SUFFIXES
    assert {".ppm", ".pgm", ".png", ".jpg"} <= set(sources.IMAGE_SUFFIXES)
    colour, grey = smooth_image(0, 12, 16), smooth_image(1, 12, 16)[..., 0]
    write_rgb(tmp_path / "images" / "a.ppm", colour)
    write_gray(tmp_path / "images" / "b.pgm", grey)
    for name in ("a", "b"):
        write_gray(tmp_path / "masks" / f"{name}.png", np.ones((12, 16), np.uint8))
    data = open_dataset(tmp_path, layout="folder", classes=("bg", "thing"))
    assert data.names == ("a", "b")
    assert np.array_equal(data[0].image, colour)  # lossless: the very pixels written
    assert np.array_equal(data[1].image, np.repeat(grey[..., None], 3, axis=2))
    frames = list(sources.open_source(str(tmp_path / "images")))
    assert [f.name for f in frames] == ["a", "b"]
    assert np.array_equal(frames[0].image, colour[..., ::-1])  # the runtime's frames are BGR
