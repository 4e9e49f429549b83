"""Source arguments OpenCV would crash or hang on, refused in one line by the real CLI (a child
process: a segfault there is a signal death, not an exception), and a real stream that stalls
with its socket open, ended within the reconnection timeout."""
from __future__ import annotations

import json
import re
import socket
import threading
import time

import cv2
import pytest

from fcn_edge.errors import InputError
from fcn_edge.runtime.run import RunConfig
from fcn_edge.runtime.source_spec import parse_source
from fcn_edge.runtime.sources import open_source

from faults import run_cli
from support import frame_number, numbered_frame


@pytest.mark.parametrize("args, message", [
    # -1: SIGSEGV inside OpenCV; from 100 on OpenCV reads index // 100 as a capture API.
    (["--camera", "-1"], r"--camera.* (0 … 99|from 0 to 99)"),
    (["--camera", "100"], r"--camera.* (0 … 99|from 0 to 99)"),
    (["--camera", "99999999999"], r"--camera.* (0 … 99|from 0 to 99)"),
    (["--", "-3"], r"source -3: a camera index is 0 … 99"),
    ([""], r"source '' is empty"),
    (["foo://camera/1"], r"foo://camera/1: unknown stream type foo://; streams are rtsp://"),
    (["rtsp://"], r"rtsp://: no host or a bad port"),
    (["http://cam:99999/x"], r"no host or a bad port"),
    (["/dev/null"], r"/dev/null is not a camera \(cameras are /dev/videoN"),
    (["/dev/video97"], r"/dev/video97: no such camera device"),
    (["missing.mp4"], r"missing.mp4: no such file or folder"),
])
def test_a_bad_source_is_one_line_and_exit_1_at_once(tmp_path, args, message):
    # The default --reconnect-timeout is 30 s: before, unknown schemes and /dev/null were
    # retried that long, and -1 killed the process with SIGSEGV (exit -11).
    started = time.monotonic()
    done = run_cli(["run", "--model", "missing.onnx", *args], cwd=tmp_path, timeout=25)
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("fcn-edge run: ")
    assert re.search(message, lines[0]), lines[0]
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("spec", [-1, 100, True, None, 1.5, "", "  ", "a\0b", "gopher://x",
                                  "/dev/zero"])
def test_open_source_and_run_config_refuse_what_opencv_would_crash_or_hang_on(spec):
    with pytest.raises(InputError):
        open_source(spec, reconnect_timeout=30)
    with pytest.raises(InputError):
        if isinstance(spec, int) and not isinstance(spec, bool):
            RunConfig(model="m.onnx", camera=spec).check()
        else:
            RunConfig(model="m.onnx", source=spec).check()  # type: ignore[arg-type]


def test_good_specs_pass_the_check_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_source(0) == 0 and parse_source("7") == 7 and parse_source(99) == 99
    (tmp_path / "12").write_bytes(b"x")  # a file named like an index is the file
    assert parse_source("12") == "12"
    for spec in ("rtsp://user:pw@10.0.0.2:554/s", "https://example.com/live.m3u8",
                 "udp://@:1234", "clip.mp4", "frames/*.png", "/dev/shm"):
        assert parse_source(spec) == spec


# --- a stream that stalls: real frames, then silence on an open socket ----------------------

class StallingMjpegServer:
    """Serves ``frames`` MJPEG frames on its first connection and then sends nothing, keeping
    the socket open, as a camera whose encoder hung does; later connections are accepted and
    get the HTTP header only."""

    def __init__(self, frames: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/video.mjpg"
        self.frames, self.connections, self._open = frames, 0, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._open.append(conn)  # never closed until the server is
            self.connections += 1
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; "
                         b"boundary=frame\r\n\r\n")
            for i in range(self.frames if self.connections == 1 else 0):
                jpeg = cv2.imencode(".jpg", numbered_frame(i))[1].tobytes()
                conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                             + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")

    def close(self) -> None:
        for conn in self._open:
            conn.close()
        self.sock.close()


@pytest.fixture
def stalling_server():
    server = StallingMjpegServer(frames=6)
    yield server
    server.close()


def test_a_stream_that_stalls_ends_within_the_reconnect_timeout(stalling_server):
    # Before: FFmpeg's read waited a fixed 5 s, the reopen 5 s more: 10 s for a 1.5 s timeout.
    messages: list[str] = []
    source = open_source(stalling_server.url, reconnect_timeout=1.5, backoff=0.1,
                         log=messages.append)
    frames: list = []
    started = time.monotonic()
    reader = threading.Thread(target=lambda: frames.extend(source), daemon=True)
    reader.start()
    reader.join(30)
    elapsed = time.monotonic() - started
    assert not reader.is_alive(), "the stalled stream hung the reader"
    assert [frame_number(f.image) for f in frames] == list(range(6))
    assert "lost after frame 6; reconnecting" in messages[0]
    assert "no frames for 1.5 s; ending the run after 6 frames" in messages[-1]
    assert stalling_server.connections >= 2  # it tried to reconnect before giving up
    # Noticed at 1.5 s; one last reconnection attempt may take its 1 s floor.
    assert 1.4 < elapsed < 1.5 + 2.0, elapsed


def test_the_cli_ends_a_stalled_stream_with_a_summary(stalling_server, onnx_artifact, tmp_path):
    started = time.monotonic()
    done = run_cli(["run", stalling_server.url, "--model", onnx_artifact("plain"),
                    "--reconnect-timeout", "1", "--progress-every", "0",
                    "--stats", tmp_path / "stats.json"], timeout=60)
    assert done.returncode == 0, done.stderr
    assert "no frames for 1 s; ending the run" in done.stdout
    assert "Traceback" not in done.stderr
    figures = json.loads((tmp_path / "stats.json").read_text())["fcn_edge_run"]
    assert 1 <= figures["frames"] <= 6 and figures["captured"] == 6
    assert figures["reconnects"] >= 1
    # The frames come at once, then the stall: the run's own time is the detection (1 s)
    # and one reconnection attempt; before, it was 10 s.
    assert figures["seconds"] < 1 + 2.5, figures["seconds"]
    assert time.monotonic() - started < 40
