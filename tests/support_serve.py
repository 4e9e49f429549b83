"""The live view's test helpers (tests/runtime/test_serve*.py): a live run in a thread, a video
file standing in for a camera, and a plain MJPEG viewer. Real sockets on 127.0.0.1 only."""
from __future__ import annotations

import socket
import threading
import time
import urllib.request
from contextlib import contextmanager
from types import SimpleNamespace

import cv2
import numpy as np

from fcn_edge.runtime.run import RunConfig, run


def live_video(path, frames: int = 30, fps: float = 10.0, size=(96, 128)) -> str:
    """A noise video: ``frames`` at ``fps``, so a live run lasts frames / fps seconds."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size[::-1])
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, size + (3,), dtype=np.uint8))
    writer.release()
    return str(path)


@contextmanager
def running(config: RunConfig, timeout: float = 60):
    """``run(config)`` in a thread; yields its URL, log lines and stop event once it serves."""
    lines: list[str] = []
    state = SimpleNamespace(lines=lines, stop=threading.Event(), stats=None, error=None)

    def target() -> None:
        try:
            state.stats = run(config, log=lines.append, stop=state.stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            state.error = exc

    state.thread = threading.Thread(target=target, daemon=True)
    state.thread.start()
    deadline = time.monotonic() + timeout
    while not any(line.startswith("live view: ") for line in lines):
        assert state.thread.is_alive() and time.monotonic() < deadline, (state.error, lines)
        time.sleep(0.02)
    state.url = next(line for line in lines if line.startswith("live view: "))[11:]
    state.port = int(state.url.rsplit(":", 1)[1].strip("/"))
    try:
        yield state
    finally:
        state.stop.set()
        state.thread.join(timeout)
    assert not state.thread.is_alive(), "the run did not end"
    if state.error is not None:
        raise state.error


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


class MjpegReader(threading.Thread):
    """A viewer of ``/stream.mjpg`` that decodes every JPEG it gets (or, ``stalled``, reads
    nothing at all, with a tiny receive buffer)."""

    def __init__(self, port: int, path: str = "/stream.mjpg", stalled: bool = False) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if stalled:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.header = b""
        if not stalled:
            self.start()

    def run(self) -> None:
        stream = self.sock.makefile("rb")
        while (line := stream.readline()) not in (b"\r\n", b""):
            self.header += line
        while line := stream.readline():
            if line.strip() != b"--fcn-edge-frame":
                continue
            headers = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            data = stream.read(int(headers["content-length"]))
            self.frames.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
            self.times.append(time.monotonic())

    def close(self) -> None:
        self.sock.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False
