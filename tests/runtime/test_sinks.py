"""Sinks write what they are given, completely: videos read back by OpenCV, palette PNGs read
back by fcn-edge's reader (Pillow), overlays by name; the window says once why there is none."""
from __future__ import annotations

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from fcn_edge.data import read_palette_png, voc_palette
from fcn_edge.errors import InputError
from fcn_edge.runtime import sinks as sinks_module
from fcn_edge.runtime.sinks import (ImageDirSink, ImageFileSink, MaskDirSink, Result, VideoSink,
                                    WindowSink)
from fcn_edge.runtime.sources import Frame

from support import read_video, video_fps

H, W = 48, 64


def _result(i: int, h: int = H, w: int = W, labels: np.ndarray | None = None) -> Result:
    image = np.full((h, w, 3), (10 * i) % 256, np.uint8)
    image[: h // 2, : w // 2] = (0, 0, 255)  # a red quarter: BGR order must survive
    if labels is None:
        labels = (np.arange(h * w).reshape(h, w) % 5).astype(np.uint8)
    return Result(Frame(i, image, time.perf_counter(), f"{i:06d}"), labels, image)


def test_video_is_written_under_a_temporary_name_and_renamed_on_close(tmp_path):
    path = tmp_path / "out" / "result.mp4"
    sink = VideoSink(path, fps=12.5)
    for i in range(20):
        sink.write(_result(i))
        # Until it is closed the real name does not exist: no half-written file under it.
        assert not path.exists()
    partial = list(path.parent.glob(".result.partial.mp4"))
    assert len(partial) == 1
    sink.close()
    assert path.exists() and not partial[0].exists()
    frames = read_video(path)
    assert len(frames) == 20 and sink.frames == 20 and video_fps(path) == pytest.approx(12.5)
    assert frames[0].shape == (H, W, 3)
    assert frames[0][5, 5, 2] > 200 and frames[0][5, 5, 0] < 60  # still red, in BGR
    sink.close()  # twice is harmless


def test_video_closed_early_is_complete_and_playable(tmp_path):
    # What Ctrl-C does through the pipeline: close after some frames.
    sink = VideoSink(tmp_path / "cut.avi")
    for i in range(7):
        sink.write(_result(i))
    sink.close()
    path = tmp_path / "cut.avi"
    assert len(read_video(path)) == 7 and video_fps(path) == pytest.approx(30.0)  # no source rate


def test_no_frames_no_file(tmp_path):
    sink = VideoSink(tmp_path / "empty.mp4")
    sink.close()
    assert list(tmp_path.iterdir()) == []


def test_an_unavailable_codec_falls_back_to_motion_jpeg_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sinks_module.VIDEO_SUFFIXES, ".mp4", "ZZZZ")  # no such encoder
    messages: list[str] = []
    sink = VideoSink(tmp_path / "out.mp4", log=messages.append)
    for i in range(5):
        sink.write(_result(i))
    sink.close()
    assert sink.path == tmp_path / "out.avi"
    assert len(messages) == 1 and "ZZZZ" in messages[0] and "out.avi" in messages[0]
    assert len(read_video(tmp_path / "out.avi")) == 5
    assert not (tmp_path / "out.mp4").exists()


def test_frame_size_is_fixed_by_the_first_frame(tmp_path):
    messages: list[str] = []
    sink = VideoSink(tmp_path / "odd.mp4", log=messages.append)
    sink.write(_result(0, 47, 63))            # odd: encoders drop a row and a column
    sink.write(_result(1, 96, 128))           # another size: resized, said once
    sink.write(_result(2, 96, 128))
    sink.close()
    assert sink.size == (62, 46)
    frames = read_video(tmp_path / "odd.mp4")
    assert len(frames) == 3 and all(f.shape == (46, 62, 3) for f in frames)
    assert len(messages) == 1 and "resizing" in messages[0]


def test_unknown_video_suffix_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"\.webm: unknown video type"):
        VideoSink(tmp_path / "x.webm")


def test_overlay_folder_and_single_image(tmp_path):
    folder = ImageDirSink(tmp_path / "overlays", suffix=".png")
    for i in range(3):
        folder.write(_result(i))
    folder.close()
    names = sorted(p.name for p in (tmp_path / "overlays").iterdir())
    assert names == ["000000.png", "000001.png", "000002.png"]
    assert np.array_equal(cv2.imread(str(tmp_path / "overlays" / "000002.png")),
                          _result(2).overlay)
    single = ImageFileSink(tmp_path / "one.jpg")
    single.write(_result(0))
    assert cv2.imread(str(tmp_path / "one.jpg")).shape == (H, W, 3)
    with pytest.raises(InputError, match="several frames"):
        single.write(_result(1))


def test_masks_are_palette_pngs_of_class_ids(tmp_path):
    palette = voc_palette(21)
    sink = MaskDirSink(tmp_path / "masks", palette)
    result = _result(4)
    sink.write(result)
    labels, stored_palette = read_palette_png(tmp_path / "masks" / "000004.png")
    assert np.array_equal(labels, result.labels)
    assert np.array_equal(stored_palette[:21], palette)


def test_writing_masks_loads_neither_the_data_package_nor_pillow_before_a_mask(tmp_path):
    # `fcn-edge run --masks` on an edge box: the runtime's own writer, Pillow on first use.
    code = ("import sys, numpy as np\n"
            "from fcn_edge.runtime.sinks import MaskDirSink, Result\n"
            "from fcn_edge.runtime.sources import Frame\n"
            "print('PIL' in sys.modules)\n"
            f"sink = MaskDirSink({str(tmp_path)!r}, [(0, 0, 0), (255, 0, 0)])\n"
            "sink.write(Result(Frame(0, np.zeros((4, 4, 3), np.uint8), 0.0, 'm'),"
            " np.eye(4, dtype=np.uint8)))\n"
            "print('PIL' in sys.modules)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('fcn_edge.data', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:3] == ["False", "True", "[]"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary left beside it
    assert np.array_equal(read_palette_png(tmp_path / "m.png")[0], np.eye(4, dtype=np.uint8))


def test_more_than_256_classes_are_16_bit_pngs(tmp_path):
    messages: list[str] = []
    sink = MaskDirSink(tmp_path, voc_palette(256), log=messages.append)
    labels = (np.arange(H * W).reshape(H, W) % 300).astype(np.int32)
    sink.write(_result(0, labels=labels))
    sink.write(_result(1, labels=labels))
    back = cv2.imread(str(tmp_path / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, labels)
    assert len(messages) == 1


def test_show_without_a_display_says_so_once(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    messages: list[str] = []
    sink = WindowSink(log=messages.append)
    sink.write(_result(0))
    sink.write(_result(1))
    sink.close()
    assert not sink.enabled and sink.frames == 0
    assert messages == ["--show: no display (DISPLAY and WAYLAND_DISPLAY are unset); "
                        "running without a window"]


@pytest.mark.skipif("GUI:                           NONE" not in cv2.getBuildInformation(),
                    reason="this OpenCV has GUI support: a window would open")
def test_show_with_headless_opencv_says_so_once(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    messages: list[str] = []
    sink = WindowSink(log=messages.append)
    assert sink.enabled
    for i in range(3):
        sink.write(_result(i))
    sink.close()
    assert not sink.enabled and len(messages) == 1 and "no GUI support" in messages[0]
