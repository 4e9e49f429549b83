"""The class legend on overlays: its pixels (swatches in the class colours, one per row, text
beside each), its place and size in the frame, which classes it lists, names OpenCV cannot
draw, frames too small for it; ``Segmenter.overlay(legend=True)`` and ``fcn-edge run
--legend`` on a real exported model."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fcn_edge.errors import InputError
from fcn_edge.runtime.legend import (LEGEND_CORNERS, PRESENT_ONLY_ABOVE, ascii_name,
                                     draw_legend, legend_classes)

#: Colours no blend of the grey frame, the dark panel and white/black text can make.
PALETTE = [(230, 30, 60), (20, 200, 90), (60, 80, 240), (250, 220, 10), (140, 20, 200),
           (10, 120, 130)]
GREY = 128


def grey(h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), GREY, np.uint8)


def swatches(image: np.ndarray, rgb, color: str = "bgr") -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the pixels exactly of each colour in ``rgb``; () where
    none is."""
    found = []
    for colour in rgb:
        pixel = np.array(colour[::-1] if color == "bgr" else colour, np.uint8)
        ys, xs = np.nonzero(np.all(image == pixel, axis=-1))
        found.append((int(ys.min()), int(xs.min()), int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1)
                     if len(ys) else ())
    return found


def changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), exclusive, of the pixels that differ."""
    ys, xs = np.nonzero(np.any(before != after, axis=-1))
    return ys.min(), xs.min(), ys.max() + 1, xs.max() + 1


# --- the pixels --------------------------------------------------------------------------------

def test_each_class_gets_a_square_swatch_of_its_colour_and_white_text_in_its_row():
    frame = grey(480, 640)
    out = draw_legend(frame, ["road", "car", "person"], PALETTE[:3])
    assert np.all(frame == GREY)  # a new image; the frame is left alone
    boxes = swatches(out, PALETTE[:3])
    tops = [b[0] for b in boxes]
    assert tops == sorted(tops) and len(set(b[1] for b in boxes)) == 1  # one column, in order
    rows = np.diff(tops)
    assert rows[0] == rows[1] == round(480 / 22)  # a row is H/22 pixels
    for top, left, h, w in boxes:
        assert h == w >= 0.6 * rows[0]  # a square filling most of its row
        band = out[top:top + h, left + w:]
        white, black = np.all(band >= 200, axis=-1), np.all(band <= 40, axis=-1)
        assert white.sum() > 30 and black.sum() > 60  # white text, outlined in black
    top, left, bottom, right = changed_box(frame, out)
    assert top < boxes[0][0] and bottom > boxes[-1][0] + boxes[-1][2]
    assert right > 600 and left > 640 * 0.6  # the top-right corner (the default)
    # The panel darkens what is under it: grey 128 at opacity 0.6 → 51.
    assert np.any(np.all(out[top:bottom, left:right] == 51, axis=-1))


def test_rgb_images_get_rgb_swatches_and_rows_grow_with_the_frame():
    small = draw_legend(grey(480, 640), ["a", "b"], PALETTE[:2], color="rgb")
    large = draw_legend(grey(1080, 1920), ["a", "b"], PALETTE[:2])
    s, l = swatches(small, PALETTE[:2], color="rgb"), swatches(large, PALETTE[:2])
    assert all(s) and all(l)
    assert l[0][2] / s[0][2] == pytest.approx(1080 / 480, rel=0.15)
    assert swatches(small, PALETTE[:1]) == [()]  # not in BGR order


@pytest.mark.parametrize("corner", LEGEND_CORNERS)
def test_the_legend_sits_in_the_corner_asked_for_within_its_share_of_the_frame(corner):
    frame = grey(360, 480)
    top, left, bottom, right = changed_box(frame, draw_legend(
        frame, ["sky", "building"], PALETTE[:2], position=corner))
    vertical, horizontal = corner.split("-")
    assert (top < 10) if vertical == "top" else (bottom > 350)
    assert (left < 10) if horizontal == "left" else (right > 470)
    assert right - left <= 0.4 * 480 and bottom - top <= 0.9 * 360


def test_the_same_names_in_other_colours_or_on_another_frame_are_drawn_anew():
    # Each layout's drawing is kept for the next frame: the colours and the frame under it
    # must still be this call's own.
    first = draw_legend(grey(240, 320), ["a", "b"], PALETTE[:2])
    other = draw_legend(grey(240, 320), ["a", "b"], PALETTE[2:4])
    assert all(swatches(first, PALETTE[:2])) and all(swatches(other, PALETTE[2:4]))
    assert not any(swatches(other, PALETTE[:2]))
    white = draw_legend(np.full((240, 320, 3), 255, np.uint8), ["a", "b"], PALETTE[:2])
    assert np.any(np.all(white == 102, axis=-1))  # white under the panel at opacity 0.6


def test_a_black_class_shows_on_the_dark_panel_by_its_light_edge():
    out = draw_legend(grey(480, 640), ["background", "car"], [(0, 0, 0), PALETTE[1]])
    top, left, h, w = swatches(out, [PALETTE[1]])[0]
    above = out[top - round(480 / 22) - 1:top, left - 1:left + w + 1]
    assert np.any(np.all(above == 192, axis=-1))  # the edge of the black swatch above


# --- which classes ------------------------------------------------------------------------------

def test_the_rule_lists_only_the_present_classes_beyond_twelve():
    labels = np.zeros((4, 5), np.uint8)
    labels[1, 1], labels[2, 3] = 5, 255  # 255: the ignore label, never a class
    assert legend_classes(PRESENT_ONLY_ABOVE, labels) == list(range(PRESENT_ONLY_ABOVE))
    assert legend_classes(PRESENT_ONLY_ABOVE + 1, labels) == [0, 5]
    assert legend_classes(PRESENT_ONLY_ABOVE + 1) == list(range(PRESENT_ONLY_ABOVE + 1))
    assert legend_classes(30, labels, only_present=False) == list(range(30))
    assert legend_classes(3, [2, 2, 0], only_present=True) == [0, 2]
    wide = np.array([[-1, 400, 7], [7, 2, 2]], np.int32)  # int32 labels of a 500-class model
    assert legend_classes(500, wide) == [2, 7, 400]
    assert legend_classes(20, np.array([], np.int64), only_present=True) == []
    with pytest.raises(InputError, match="needs present="):
        legend_classes(3, only_present=True)
    with pytest.raises(InputError, match="integers"):
        legend_classes(30, np.zeros((2, 2), np.float32))


def test_with_many_classes_only_those_in_the_frame_are_drawn():
    names = [f"class{i}" for i in range(PRESENT_ONLY_ABOVE + 1)]
    palette = [(i, 255 - i, 77) for i in range(len(names))]  # none grey
    labels = np.full((10, 10), 3, np.uint8)
    labels[0, 0] = 9
    out = draw_legend(grey(480, 640), names, palette, present=labels)
    drawn = [i for i, box in enumerate(swatches(out, palette)) if box]
    assert drawn == [3, 9]
    everything = draw_legend(grey(480, 640), names[:-1], palette[:-1], present=labels)
    assert all(swatches(everything, palette[:-1]))  # twelve: every class, however few shown


def test_a_long_list_goes_into_columns_and_ends_with_a_count_of_the_rest():
    names = [f"category number {i}" for i in range(150)]  # ADE20K-sized
    palette = [(i, 255 - i, 77) for i in range(150)]
    frame = grey(480, 640)
    out = draw_legend(frame, names, palette, only_present=False)
    boxes = [b for b in swatches(out, palette) if b]
    columns = sorted(set(b[1] for b in boxes))
    assert len(columns) >= 2 and len(boxes) < 150
    top, left, bottom, right = changed_box(frame, out)
    assert right - left <= 0.4 * 640 and bottom - top <= 0.9 * 480
    # The rows of a column are full; the last is "+N more" (text without a swatch).
    last = out[bottom - round(480 / 22):bottom, columns[-1]:right]
    assert not any(np.all(last == np.array(c[::-1], np.uint8), axis=-1).any() for c in palette)
    assert np.all(last >= 200, axis=-1).sum() > 25
    assert sum(b[1] == columns[-1] for b in boxes) == sum(b[1] == columns[0] for b in boxes) - 1


# --- names, tiny frames, mistakes ---------------------------------------------------------------

def test_names_are_drawn_in_ascii():
    assert ascii_name("café", 0) == "cafe" and ascii_name("Straße", 1) == "Strasse"
    assert ascii_name("Øresund bro", 2) == "Oresund bro" and ascii_name("łódź", 3) == "lodz"
    assert ascii_name("道路", 4) == "class 4" and ascii_name("", 5) == "class 5"
    assert ascii_name("sign ⚠", 6) == "sign ?" and ascii_name(" two\nlines ", 7) == "two lines"
    frame = grey(240, 320)
    assert np.array_equal(draw_legend(frame, ["café", "道路"], PALETTE[:2]),
                          draw_legend(frame, ["cafe", "class 1"], PALETTE[:2]))


def test_long_names_are_cut_to_the_width():
    frame = grey(480, 640)
    out = draw_legend(frame, ["a" * 200, "b"], PALETTE[:2], max_width=0.25)
    top, left, bottom, right = changed_box(frame, out)
    assert right - left <= 0.25 * 640


@pytest.mark.parametrize("size", [(1, 1), (20, 300), (300, 60), (24, 90)])
def test_a_frame_too_small_for_one_row_is_returned_unchanged(size):
    frame = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert np.array_equal(draw_legend(frame, ["road", "car"], PALETTE[:2]), frame)


def test_the_smallest_frame_with_a_legend_has_one_row_and_a_count():
    frame = grey(32, 120)
    out = draw_legend(frame, ["road", "car", "sky"], PALETTE[:3])
    assert [bool(b) for b in swatches(out, PALETTE[:3])] == [False] * 3  # only "+3 more"
    assert not np.array_equal(out, frame)
    one = draw_legend(frame, ["road"], PALETTE[:1])
    assert swatches(one, PALETTE[:1])[0]


def test_zero_and_one_class():
    frame = grey(240, 320)
    assert np.array_equal(draw_legend(frame, [], []), frame)
    assert np.array_equal(draw_legend(frame, ["a", "b"], PALETTE[:2], present=[],
                                      only_present=True), frame)
    assert [bool(b) for b in swatches(draw_legend(frame, ["only"], PALETTE[:1]),
                                      PALETTE[:1])] == [True]


def test_in_place_drawing_also_works_on_a_strided_view():
    frame = grey(240, 640)
    expected = draw_legend(frame[:, ::2], ["a", "b"], PALETTE[:2])
    view = frame[:, ::2]
    assert draw_legend(view, ["a", "b"], PALETTE[:2], inplace=True) is view
    assert np.array_equal(view, expected) and np.all(frame[:, 1::2] == GREY)


@pytest.mark.parametrize("kwargs, message", [
    ({"image": np.zeros((10, 10), np.uint8)}, "H×W×3 uint8"),
    ({"image": np.zeros((10, 10, 3), np.float32)}, "H×W×3 uint8"),
    ({"position": "middle"}, "top-right, top-left"),
    ({"max_width": 0}, "max_width must be a number from 0.01 to 1, got 0"),
    ({"max_height": True}, "max_height must be a number"),
    ({"opacity": 1.5}, "opacity must be a number from 0 to 1"),
    ({"color": "hsv"}, "'bgr' or 'rgb'"),
    ({"palette": [(1, 2, 3)]}, "2 classes but 1 colours"),
    ({"palette": [(1, 2, 300), (1, 2, 3)]}, "integers 0..255"),
])
def test_mistakes_are_one_clear_line(kwargs, message):
    args = {"image": grey(100, 100), "classes": ["a", "b"], "palette": PALETTE[:2], **kwargs}
    with pytest.raises(InputError, match=message):
        draw_legend(args.pop("image"), args.pop("classes"), args.pop("palette"), **args)


def test_drawing_in_a_bgr_image_matches_cv2_colours():
    out = draw_legend(grey(240, 320), ["a"], [(255, 0, 0)])  # RGB red
    top, left, h, w = swatches(out, [(255, 0, 0)])[0]
    assert tuple(out[top + h // 2, left + w // 2]) == (0, 0, 255)  # BGR red, as cv2 shows it
    assert cv2.cvtColor(out[top:top + 1, left:left + 1], cv2.COLOR_BGR2RGB)[0, 0, 0] == 255


# --- on overlays -------------------------------------------------------------------------------

def in_bgr(rgb) -> np.ndarray:
    return np.array(rgb[::-1], np.uint8)


def colours_in(image: np.ndarray, palette) -> list[bool]:
    """Whether each colour of ``palette`` (RGB) is somewhere in the BGR ``image``."""
    return [bool(np.all(image == in_bgr(c), axis=-1).any()) for c in palette]


@pytest.fixture(scope="module")
def segmenter(onnx_artifact):
    from fcn_edge.runtime import Segmenter

    with Segmenter(onnx_artifact("rawio_argmax"), "onnxruntime:cpu", threads=1) as seg:
        yield seg


def test_an_overlay_with_a_legend_differs_from_one_without_only_in_the_legend(segmenter,
                                                                               scene):
    frame = scene(240, 320, seed=3)
    labels = segmenter(frame)
    plain = segmenter.overlay(frame, labels, alpha=0.5)
    shown = segmenter.overlay(frame, labels, alpha=0.5, legend=True)
    assert np.array_equal(plain, segmenter.overlay(frame, labels, alpha=0.5, legend=False))
    top, left, bottom, right = changed_box(plain, shown)
    assert top < 10 and right > 310 and right - left <= 0.4 * 320 and bottom - top <= 0.9 * 240
    assert np.array_equal(shown, draw_legend(plain, segmenter.classes, segmenter.palette))
    # Eight classes, at most twelve: every one is listed, whether in the frame or not.
    box = shown[top:bottom, left:right]
    assert len(np.unique(labels)) < 8 and colours_in(box, segmenter.palette[1:]) == [True] * 7


def test_a_multi_head_overlay_lists_the_shown_heads_classes(tmp_path_factory, scene):
    from fcn_edge.runtime import Segmenter

    from support_multi_io import GEOMETRIC_PALETTE, make_multi_checkpoint

    checkpoint = make_multi_checkpoint(tmp_path_factory.mktemp("heads") / "two.pt",
                                       inputs=(("rgb", 3),))
    frame = scene(240, 320, seed=1)
    with Segmenter(checkpoint, "torch:cpu", threads=1) as seg:
        labels = seg(frame)
        geometric = seg.overlay(frame, labels, task="geometric", legend=True)
        semantic = seg.overlay(frame, labels, legend=True)  # the first head, by default
        plain, first = seg.overlay(frame, labels, task="geometric"), seg.overlay(frame, labels)
        assert np.array_equal(geometric, draw_legend(plain, seg.classes_of("geometric"),
                                                     GEOMETRIC_PALETTE))
    box = changed_box(plain, geometric)
    region = geometric[box[0]:box[2], box[1]:box[3]]
    assert colours_in(region, GEOMETRIC_PALETTE[1:]) == [True, True]
    coloured = seg.palette_of("semantic")[1:7]  # not black, nor the grey that text edges are
    assert not any(colours_in(region, coloured))
    top, left, bottom, right = changed_box(first, semantic)
    assert all(colours_in(semantic[top:bottom, left:right], coloured))


# --- through the pipeline and `fcn-edge run --legend` -----------------------------------------

class Keeper:
    """A sink that keeps every overlay it is given."""

    needs_overlay = True

    def __init__(self) -> None:
        self.overlays: list[np.ndarray] = []

    def write(self, result) -> None:
        self.overlays.append(result.overlay)

    def close(self) -> None:
        pass


def test_run_pipeline_draws_the_legend_on_every_overlay(segmenter, scene, tmp_path):
    from fcn_edge.runtime.pipeline import run_pipeline
    from fcn_edge.runtime.sources import open_source

    from support import read_video, write_video

    video = write_video(tmp_path / "in.mp4", [scene(240, 320, seed=s) for s in range(3)])
    frames = read_video(video)  # as decoded: what the pipeline segments
    shown, plain = Keeper(), Keeper()
    run_pipeline(open_source(str(video)), segmenter, [shown], alpha=0.6, legend=True)
    run_pipeline(open_source(str(video)), segmenter, [plain], alpha=0.6)
    assert len(shown.overlays) == len(frames) == 3
    for frame, with_legend, without in zip(frames, shown.overlays, plain.overlays):
        labels = segmenter(frame)
        assert np.array_equal(with_legend, segmenter.overlay(frame, labels, 0.6, legend=True))
        assert np.array_equal(without, segmenter.overlay(frame, labels, 0.6))


def _run(*args) -> int:
    from fcn_edge.cli import main

    return main(["run", *map(str, args), "--progress-every", "0"])


def test_fcn_edge_run_legend_writes_overlay_images_and_videos_with_the_legend(
        onnx_artifact, segmenter, scene, tmp_path):
    from support import read_video, write_video

    model, frame = onnx_artifact("rawio_argmax"), scene(240, 320, seed=5)
    assert cv2.imwrite(str(tmp_path / "in.png"), frame)
    assert _run(tmp_path / "in.png", "--model", model, "--legend", "--output",
                tmp_path / "out.png") == 0
    expected = segmenter.overlay(frame, segmenter(frame), legend=True)
    assert np.array_equal(cv2.imread(str(tmp_path / "out.png")), expected)

    video = write_video(tmp_path / "in.mp4", [scene(240, 320, seed=s) for s in range(4)])
    for name, flags in (("legend.avi", ["--legend"]), ("plain.avi", [])):
        assert _run(video, "--model", model, "--output", tmp_path / name, *flags) == 0
    shown, plain = read_video(tmp_path / "legend.avi"), read_video(tmp_path / "plain.avi")
    assert len(shown) == len(plain) == 4
    top, left, bottom, right = changed_box(segmenter.overlay(frame, segmenter(frame)), expected)
    for a, b in zip(shown, plain):
        difference = np.abs(a.astype(np.int16) - b).max(axis=-1)
        assert difference[top:bottom, left:right].mean() > 20  # the legend, in every frame
        # Elsewhere nothing was drawn. A few pixels may differ by some levels: the MJPEG
        # encoder of some OpenCV builds (pip's 4.10, FFmpeg's) rate-controls the first frame,
        # whose legend then moves the whole frame's quantiser (mean 2.7 there, 0 after).
        outside = np.concatenate([difference[:, :left - 16].ravel(),
                                  difference[bottom + 16:].ravel()])
        assert (outside > 24).mean() < 0.001, (outside > 24).mean()


def test_fcn_edge_run_legend_on_a_multi_head_model_lists_the_shown_heads_classes(
        tmp_path, scene):
    from support_multi_io import GEOMETRIC_PALETTE, make_multi_checkpoint

    checkpoint = make_multi_checkpoint(tmp_path / "two.pt", inputs=(("rgb", 3),))
    assert cv2.imwrite(str(tmp_path / "in.png"), scene(240, 320, seed=2))
    for head in ("geometric", "semantic"):
        assert _run(tmp_path / "in.png", "--model", checkpoint, "--head", head, "--legend",
                    "--alpha", "0.5", "--output", tmp_path / f"{head}.png") == 0
    geometric, semantic = (cv2.imread(str(tmp_path / f"{h}.png"))[:, 160:]
                           for h in ("geometric", "semantic"))
    assert colours_in(geometric, GEOMETRIC_PALETTE[1:]) == [True, True]
    voc = [(128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128)]
    assert not any(colours_in(geometric, voc)) and all(colours_in(semantic, voc))


@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
@pytest.mark.parametrize("height, width", [(52, 176), (66, 120), (530, 176), (1100, 240)])
def test_a_legend_given_the_whole_frame_stays_inside_it(height, width, corner):
    # The demo's legend column asks for max_width=max_height=1.0: the panel plus its margin
    # once ran past the right edge, and OpenCV refused the blend (a demo crashed in its report).
    frame = np.full((height, width, 3), 255, np.uint8)
    names = ["background", "disc", "rectangle", "triangle", "ring", "star", "wire", "blob"]
    out = draw_legend(frame, names, PALETTE + PALETTE[:2], only_present=False, position=corner,
                      max_width=1.0, max_height=1.0)
    assert not np.array_equal(out, frame)
    for edge in (out[0], out[-1], out[:, 0], out[:, -1]):  # the margin is left as it was
        assert (edge == 255).all()
