"""Pre/post-processing in numpy: the definition the exporter checks in-graph versions against."""
from __future__ import annotations

import numpy as np
import pytest

from fcn_edge.data import normalize
from fcn_edge.errors import InputError
from fcn_edge.runtime.palette import write_palette_png
from fcn_edge.runtime.processing import (colorize, frames_to_input, labels_dtype,
                                         labels_from_logits)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_bgr_frames_match_the_training_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 7, 9, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out = frames_to_input(bgr, MEAN, STD, color_order="rgb", frame_order="bgr")
    assert out.shape == (2, 3, 7, 9) and out.dtype == np.float32
    for i in range(2):  # training's normalize() takes RGB
        np.testing.assert_allclose(out[i], normalize(rgb[i], MEAN, STD), atol=1e-6)


def test_same_order_does_not_flip_and_single_frames_get_a_batch_axis():
    frame = np.zeros((4, 5, 3), np.uint8)
    frame[..., 0] = 255
    out = frames_to_input(frame, (0, 0, 0), (1, 1, 1), color_order="bgr", frame_order="bgr")
    assert out.shape == (1, 3, 4, 5)
    assert out[0, 0].min() == 1.0 and out[0, 2].max() == 0.0


@pytest.mark.parametrize("bad", [np.zeros((4, 5), np.uint8), np.zeros((4, 5, 4), np.uint8),
                                 np.zeros((4, 5, 3), np.float32)])
def test_bad_frames_are_refused(bad):
    with pytest.raises(InputError, match="uint8"):
        frames_to_input(bad, MEAN, STD)


def test_labels_take_the_first_maximum_and_the_smallest_dtype():
    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 2, 0, 0] = 1.0
    labels = labels_from_logits(logits)
    assert labels.dtype == np.uint8 and labels.tolist() == [[[2, 0], [0, 0]]]
    assert labels_dtype(256) == np.uint8 and labels_dtype(257) == np.int32


@pytest.mark.parametrize("palette", [[[300, 0, 0]], [[1.5, 0, 0]], [["a", 0, 0]],
                                     [[0, 0, 0], [1, 2]], [[-1, 0, 0]]])
def test_a_bad_palette_is_an_input_error_not_numpys_overflow(tmp_path, palette):
    """A palette entry of 300 was numpy's OverflowError; 1.5 was cut to 1 without a word."""
    labels = np.zeros((2, 3), np.uint8)
    with pytest.raises(InputError, match=r"palette must be \[r, g, b\] colours of integers"):
        colorize(labels, palette)
    with pytest.raises(InputError, match=r"palette must be \[r, g, b\] colours of integers"):
        write_palette_png(tmp_path / "mask.png", labels, palette)
    assert colorize(labels + 1, [[0, 0, 0], [255.0, 128, 0]])[0, 0].tolist() == [255, 128, 0]
