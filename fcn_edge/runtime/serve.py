"""A live view of a run in a browser: ``fcn-edge run SOURCE --serve [HOST:]PORT``.

One small HTTP server (the standard library's, a daemon thread per client) serves:

* ``/`` — a page with no external resources: each stream's overlay, the class legend (name and
  colour swatch) and live figures (FPS, frames, dropped frames, per-stage latency p50, uptime)
  that the page refreshes from ``/stats.json`` every half second;
* ``/stream.mjpg`` (stream 0) and ``/stream/K.mjpg`` (stream K) — the overlays as MJPEG
  (``multipart/x-mixed-replace``), which every browser shows in an ``<img>``;
* ``/stats.json`` — the figures, per stream and summed.

API (torch-free, like the rest of the runtime)::

    view = LiveView(("127.0.0.1", 8090), legend=[("road", (128, 64, 128)), ...], log=print)
    sinks = [view.sink(0, "front.mp4"), view.sink(1, "rtsp://back/")]  # one per source
    run_pipeline(source, segmenter, [sinks[0]])   # binds, writes and closes the sink
    view.close()    # also done when the last of its sinks is closed: the server ends with the run

Each sink is a pipeline sink (``write``/``close``, and ``bind(stats, times)``, which the
pipeline calls before the first frame so the figures are the run's own). ``write`` only swaps a
reference to the newest overlay: JPEG encoding happens in the viewers' threads, once per new
frame and only while someone watches, so the pipeline never waits for the network. Each viewer
sends the newest frame when it is ready for one, so a slow viewer skips frames (its own, no one
else's), and one that reads nothing is dropped after ``send_timeout`` seconds. ``close()`` ends
every connection and joins the server's threads within a bound.

:func:`check_address` parses ``[HOST:]PORT`` and tries the bind, so that a port in use or a bad
host is one line before the model loads; :func:`serve_sink` is what ``fcn-edge run`` adds.
"""
from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from ..errors import InputError
from ..io import Log
from .serve_address import DEFAULT_HOST, bind_error, check_address, family, is_loopback, \
    parse_address
from .serve_page import render_page

__all__ = ["LiveView", "StreamSink", "check_address", "parse_address", "serve_sink",
           "DEFAULT_HOST"]

_BOUNDARY = b"fcn-edge-frame"
_JPEG_QUALITY = 80
_FPS_WINDOW = 3.0        # seconds of recent frames behind the live FPS figure
_LATENCY_EVERY = 0.4     # seconds a latency summary is reused (it sorts up to 20k samples)
_POLL = 0.25             # seconds between a viewer's checks that the view is still open


def serve_sink(address: str, segmenter: Any, task: str | None, name: str,
               log: Log) -> "StreamSink":
    """``fcn-edge run --serve``: a one-stream LiveView on ``address`` whose legend is the
    artifact's classes (``task``'s, for a multi-head artifact), and its sink."""
    legend = zip(segmenter.classes_of(task), segmenter.palette_of(task))
    view = LiveView(parse_address(address), legend=legend, log=log,
                    title=f"fcn-edge: {name}" + (f" ({task})" if task else ""))
    return view.sink(0, name)


class LiveView:
    """The server and its streams; see the module docstring. Serving starts at once."""

    def __init__(self, address: tuple[str, int], legend: Any = (), title: str = "fcn-edge",
                 log: Log | None = None, send_timeout: float = 5.0,
                 close_timeout: float = 5.0) -> None:
        self.legend = [(str(name), tuple(int(c) for c in rgb)) for name, rgb in legend]
        self.title, self.send_timeout, self.close_timeout = title, send_timeout, close_timeout
        self.streams: list[_Stream] = []
        self.closed = False
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._clients: dict[threading.Thread, socket.socket] = {}
        self._open_sinks = 0
        self._page: bytes | None = None
        host, port = address
        self._server = _Server((host, port), self, f"{host}:{port}")
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="fcn-edge-serve", daemon=True)
        self._thread.start()
        log = log or print
        log(f"live view: {self.url}")
        if not is_loopback(host):
            log(f"--serve {host}: the live view is reachable from the network, with no "
                f"authentication; give 127.0.0.1:PORT to keep it on this machine")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = socket.gethostname()  # a wildcard is no address to browse to
        return f"http://{host}:{self.port}/"

    def sink(self, index: int, name: str) -> "StreamSink":
        """The sink of source ``index`` (0, 1, … in order), shown as ``name``."""
        with self._lock:
            if index != len(self.streams):
                raise InputError(f"live view: streams are added in order; expected stream "
                                 f"{len(self.streams)}, got {index}")
            stream = _Stream(index, name)
            self.streams.append(stream)
            self._open_sinks += 1
            self._page = None
        return StreamSink(self, stream)

    def figures(self) -> dict[str, Any]:
        """What ``/stats.json`` answers: uptime, sums over the streams, and each stream's."""
        now = time.perf_counter()
        streams = [stream.figures(now) for stream in list(self.streams)]
        return {"title": self.title, "running": not self.closed,
                "uptime": round(now - self.started, 2),
                "fps": round(sum(s["fps"] for s in streams), 2),
                **{key: sum(s[key] for s in streams) for key in ("frames", "dropped",
                                                                 "viewers")},
                "streams": streams}

    def page(self) -> bytes:
        with self._lock:
            if self._page is None:
                names = [(s.index, s.name) for s in self.streams]
                self._page = render_page(self.title, self.legend, names).encode()
            return self._page

    def close(self) -> None:
        """Stop serving: end every viewer's connection, join the threads (bounded)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        deadline = time.monotonic() + self.close_timeout
        for stream in self.streams:
            stream.end()
        self._server.shutdown()      # serve_forever returns within its poll interval
        self._server.server_close()  # the port is free from here on
        with self._lock:
            clients = dict(self._clients)
        for connection in clients.values():  # a viewer blocked in send or read wakes now
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in (self._thread, *clients):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _sink_closed(self) -> None:
        with self._lock:
            self._open_sinks -= 1
            last = self._open_sinks == 0
        if last:
            self.close()

    @contextmanager
    def _client(self, connection: socket.socket) -> Iterator[None]:
        with self._lock:
            self._clients[threading.current_thread()] = connection
        try:
            yield
        finally:
            with self._lock:
                self._clients.pop(threading.current_thread(), None)


class _Stream:
    """One source's newest overlay, its JPEG (made once per frame, when asked) and figures."""

    def __init__(self, index: int, name: str) -> None:
        self.index, self.name = index, name
        self._cond = threading.Condition()
        self._image: Any = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._encoding = threading.Lock()
        self._ended = False
        self._recent: deque[float] = deque(maxlen=256)
        self._latency: tuple[float, dict[str, float]] = (0.0, {})
        self.stats: Any = None
        self.times: Any = None
        self.bound_at = time.perf_counter()
        self.frames = self.encoded = self.viewers = self.dropped_viewers = 0

    def put(self, image: Any) -> None:
        """The writer's whole cost: a reference swap and a notify."""
        with self._cond:
            self._image, self._seq = image, self._seq + 1
            self._recent.append(time.perf_counter())
            self.frames += 1
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def next_jpeg(self, after: int) -> tuple[int, bytes | None] | None:
        """The newest frame after frame ``after`` as JPEG, (after, None) when none came within
        a poll, or None once the stream has ended."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._ended, _POLL)
            if self._ended:
                return None
            if self._seq <= after:
                return after, None
            seq, image = self._seq, self._image
        with self._encoding:  # one encoder at a time; the others reuse its bytes
            if self._jpeg[0] < seq:
                import cv2  # lazy: the runtime package must import quickly

                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY,
                                                        _JPEG_QUALITY])
                if not ok:
                    raise InputError(f"live view: cannot encode a frame of {self.name}")
                self._jpeg = (seq, data.tobytes())
                self.encoded += 1
            return self._jpeg

    @contextmanager
    def watched(self) -> Iterator[None]:
        with self._cond:
            self.viewers += 1
        try:
            yield
        finally:
            with self._cond:
                self.viewers -= 1

    def figures(self, now: float) -> dict[str, Any]:
        stats = self.stats
        recent = [t for t in list(self._recent) if now - t <= _FPS_WINDOW]
        span = recent[-1] - recent[0] if len(recent) > 1 else 0.0
        frames = stats.frames if stats is not None else self.frames
        return {"index": self.index, "name": self.name, "frames": frames,
                "fps": round((len(recent) - 1) / span, 2) if span > 0 else 0.0,
                "fps_mean": round(frames / max(now - self.bound_at, 1e-9), 2),
                "captured": getattr(stats, "captured", frames),
                "dropped": getattr(stats, "dropped", 0),
                "reconnects": getattr(stats, "reconnects", 0),
                "latency_p50_ms": self._latency_p50(now), "viewers": self.viewers,
                "dropped_viewers": self.dropped_viewers, "encoded": self.encoded,
                "ended": self._ended}

    def _latency_p50(self, now: float) -> dict[str, float]:
        when, p50 = self._latency
        if self.times is not None and now - when > _LATENCY_EVERY:
            p50 = {stage: t["p50"] for stage, t in self.times.summary().items()}
            self._latency = (now, p50)
        return p50


class StreamSink:
    """The pipeline's side of one stream: hands it each overlay (see the module docstring)."""

    needs_overlay = True

    def __init__(self, view: LiveView, stream: _Stream) -> None:
        self.view, self._stream = view, stream
        self.frames = 0
        self._closed = False

    def bind(self, stats: Any, times: Any) -> None:
        """The run's RunStats and StageTimes, for the figures (called before the first frame)."""
        self._stream.stats, self._stream.times = stats, times
        self._stream.bound_at = time.perf_counter()

    def write(self, result: Any) -> None:
        image = result.overlay if result.overlay is not None else result.frame.image
        self._stream.put(image)
        self.frames += 1

    def close(self) -> None:
        """Ends the stream; closing the view's last open sink stops the server."""
        if not self._closed:
            self._closed = True
            self._stream.end()
            self.view._sink_closed()


class _Server(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer for IPv4 or IPv6 whose bind failure is one InputError."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], view: LiveView | None, text: str) -> None:
        self.view = view
        self.address_family = family(address[0])
        try:
            super().__init__(address, _Handler)
        except OSError as exc:
            raise bind_error(text, address, exc) from None


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET only: the page, the figures and the MJPEG streams."""

    server_version = "fcn-edge"
    timeout = 10.0  # seconds a client may take to send its request

    def handle(self) -> None:
        with self.server.view._client(self.connection):  # type: ignore[attr-defined]
            super().handle()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        view: LiveView = self.server.view  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send("text/html; charset=utf-8", view.page())
        elif path == "/stats.json":
            self._send("application/json", json.dumps(view.figures()).encode())
        elif (stream := _stream_of(view.streams, path)) is not None:
            self._stream(view, stream)
        else:
            self.send_error(404, "Not Found", "try / , /stats.json or /stream.mjpg")

    def _send(self, kind: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, view: LiveView, stream: _Stream) -> None:
        self.send_response(200)
        self.send_header("Content-Type",
                         f"multipart/x-mixed-replace; boundary={_BOUNDARY.decode()}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        # A viewer that reads nothing fills its socket buffer; its send then fails after
        # send_timeout and it is dropped. Only this thread ever waits on it.
        self.connection.settimeout(view.send_timeout)
        seq = 0
        with stream.watched():
            while not view.closed:
                got = stream.next_jpeg(seq)
                if got is None:
                    break
                seq, jpeg = got
                if jpeg is None:
                    continue
                try:
                    self.wfile.write(b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     b"%d\r\n\r\n%s\r\n" % (_BOUNDARY, len(jpeg), jpeg))
                except OSError as exc:  # gone, or stalled past send_timeout
                    stream.dropped_viewers += isinstance(exc, TimeoutError)
                    break
        self.close_connection = True

    def log_message(self, *args: Any) -> None:  # a run's output is its progress lines
        pass


def _stream_of(streams: Sequence[_Stream], path: str) -> _Stream | None:
    if path == "/stream.mjpg":
        return streams[0] if streams else None
    if path.startswith("/stream/") and path.endswith(".mjpg"):
        index = path[len("/stream/"):-len(".mjpg")]
        if index.isdigit() and int(index) < len(streams):
            return streams[int(index)]
    return None
