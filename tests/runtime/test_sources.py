"""Sources on real files and a real (local) MJPEG-over-HTTP stream: kinds, order, bad inputs,
the live flag, and reconnection with backoff after a disconnect."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.errors import InputError
from fcn_edge.runtime.sources import ImageSource, VideoSource, open_source

from support import frame_number, numbered_frame, write_numbered_video

H, W = 48, 64


def test_a_video_file_gives_every_frame_in_order(tmp_path):
    path = write_numbered_video(tmp_path / "clip.mp4", 30)
    with open_source(path) as source:
        assert isinstance(source, VideoSource) and source.kind == "file"
        assert not source.live and source.fps == pytest.approx(25.0) and len(source) == 30
        frames = list(source)
    assert [f.index for f in frames] == list(range(30))
    assert [frame_number(f.image) for f in frames] == list(range(30))
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[3].name == "000003"
    assert all(a.timestamp <= b.timestamp for a, b in zip(frames, frames[1:]))


def test_a_file_treated_as_live_comes_at_its_frame_rate_and_ends_at_its_last_frame(tmp_path):
    path = write_numbered_video(tmp_path / "clip.mp4", 12, fps=50)
    messages: list[str] = []
    with open_source(str(path), live=True, reconnect_timeout=5, log=messages.append) as source:
        assert source.live
        frames = list(source)
    assert len(frames) == 12 and source.reconnects == 0 and messages == []
    # Frame i is due 20 ms × i after the first, as from a 50 fps camera; no reconnection
    # wait follows the last one.
    span = frames[-1].timestamp - frames[0].timestamp
    assert 0.21 <= span < 0.6


def _write_image(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def test_a_folder_is_read_in_natural_order_and_bad_images_are_skipped(tmp_path):
    for i in (10, 2, 1):
        _write_image(tmp_path / f"frame{i}.png", numbered_frame(i))
    _write_image(tmp_path / "frame3.jpg", numbered_frame(3))
    (tmp_path / "frame4.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "notes.txt").write_text("not an image")
    messages: list[str] = []
    source = open_source(tmp_path, log=messages.append)
    assert isinstance(source, ImageSource) and not source.live and len(source) == 5
    frames = list(source)
    assert [f.name for f in frames] == ["frame1", "frame2", "frame3", "frame10"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert np.array_equal(frames[0].image, numbered_frame(1))  # PNG: lossless, BGR as written
    assert frame_number(frames[2].image) == 3  # JPEG: close enough to tell
    assert source.skipped == 1
    assert len(messages) == 1 and "frame4.png" in messages[0]


def test_a_glob_selects_matching_images(tmp_path):
    for i in range(3):
        _write_image(tmp_path / f"a{i}.png", numbered_frame(i))
        _write_image(tmp_path / f"b{i}.jpg", numbered_frame(i))
    source = open_source(str(tmp_path / "a*.png"))
    assert [f.name for f in source] == ["a0", "a1", "a2"]
    with pytest.raises(InputError, match="matches no image"):
        open_source(str(tmp_path / "c*.png"))


def test_a_single_image(tmp_path):
    path = _write_image(tmp_path / "one.png", numbered_frame(5))
    frames = list(open_source(path))
    assert len(frames) == 1 and frames[0].name == "one"
    assert np.array_equal(frames[0].image, numbered_frame(5))


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mp4", "missing.mp4: no such file"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no images"),
    (lambda d: (d / "junk.mp4").write_bytes(b"hello") and d / "junk.mp4", "cannot decode"),
    (lambda d: (d / "bad.png").write_bytes(b"nope") and d / "bad.png", "not a readable image"),
])
def test_unusable_paths_are_input_errors_that_name_them(tmp_path, make, message):
    with pytest.raises(InputError, match=message) as info:
        open_source(make(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_camera_specs(tmp_path, monkeypatch):
    # No camera here: index 0 is recognised as one and fails fast, listing the cameras
    # (before: "could not be opened" after the whole --reconnect-timeout).
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"camera 0: there is no /dev/video0; (no /dev/video\* "
                                         r"cameras are connected|cameras here: /dev/video)"):
        open_source("0", reconnect_timeout=30)
    assert time.perf_counter() - started < 5
    # A file named like an index is the file.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "0").write_bytes(b"not a video")
    with pytest.raises(InputError, match="0: OpenCV cannot decode"):
        open_source("0")


# --- a real live stream: MJPEG over HTTP, as IP cameras serve it -----------------------------

class MjpegServer:
    """Serves ``frames_per_connection`` JPEG frames to each of ``connections`` clients, then
    closes its socket: later connections are refused, as by a camera that went away."""

    def __init__(self, connections: int, frames_per_connection: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/video.mjpg"
        self.served = 0
        self._thread = threading.Thread(target=self._serve, args=(connections,
                                                                  frames_per_connection),
                                        daemon=True)
        self._thread.start()

    def _serve(self, connections: int, per_connection: int) -> None:
        try:
            for _ in range(connections):
                conn, _ = self.sock.accept()
                with conn:
                    conn.recv(65536)  # the request
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;"
                                 b" boundary=frame\r\n\r\n")
                    for _ in range(per_connection):
                        jpeg = cv2.imencode(".jpg", numbered_frame(self.served))[1].tobytes()
                        conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.served += 1
        finally:
            self.sock.close()


def test_a_stream_that_disconnects_retries_with_backoff_then_ends_cleanly():
    server = MjpegServer(connections=1, frames_per_connection=8)
    messages: list[str] = []
    source = open_source(server.url, reconnect_timeout=1.0, backoff=0.1, log=messages.append)
    assert source.kind == "url" and source.live
    started = time.perf_counter()
    frames = list(source)
    elapsed = time.perf_counter() - started
    assert [frame_number(f.image) for f in frames] == list(range(8))
    assert messages[0].endswith("lost after frame 8; reconnecting")
    retries = [m for m in messages if "cannot reconnect; retry" in m]
    delays = [float(m.split(" in ")[1].split(" s")[0]) for m in retries]
    assert len(retries) >= 3 and delays[:3] == [0.1, 0.2, 0.4]  # exponential backoff
    assert source.reconnects == len(retries) + 1  # the last attempt is not followed by a wait
    assert "no frames for 1 s; ending the run after 8 frames" in messages[-1]
    assert 0.9 < elapsed < 4


def test_a_stream_that_comes_back_continues_the_count():
    server = MjpegServer(connections=2, frames_per_connection=5)
    messages: list[str] = []
    source = open_source(server.url, reconnect_timeout=0.5, backoff=0.05, log=messages.append)
    frames = list(source)
    assert [f.index for f in frames] == list(range(10))
    assert [frame_number(f.image) for f in frames] == list(range(10))
    assert "lost after frame 5; reconnecting" in messages[0] and "reconnected" in messages[1]
    assert source.reconnects >= 2  # one that worked, then those after the second loss


def test_a_stream_that_never_opens_is_an_input_error_after_the_timeout():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]  # closed when the block ends: connections are refused
    messages: list[str] = []
    started = time.perf_counter()
    with pytest.raises(InputError, match="could not connect within 0.5 s") as info:
        open_source(f"http://admin:secret@127.0.0.1:{port}/x.mjpg", reconnect_timeout=0.5,
                    backoff=0.1, log=messages.append)
    assert 0.4 < time.perf_counter() - started < 3
    assert "http://***@127.0.0.1" in str(info.value)  # the password stays out of messages
    assert not any("secret" in m for m in messages + [str(info.value)])
    assert len(messages) >= 2 and all("cannot open; retry" in m for m in messages)
    assert "retry 1 in 0.1 s" in messages[0] and "retry 2 in 0.2 s" in messages[1]


def test_stop_ends_a_reconnection_wait_at_once():
    server = MjpegServer(connections=1, frames_per_connection=3)
    source = open_source(server.url, reconnect_timeout=30, backoff=5)
    frames = []
    reader = threading.Thread(target=lambda: frames.extend(source))
    reader.start()
    time.sleep(0.5)  # the three frames are read and the source waits 5 s to retry
    started = time.perf_counter()
    source.stop()
    reader.join(5)
    assert not reader.is_alive() and len(frames) == 3
    assert time.perf_counter() - started < 1
