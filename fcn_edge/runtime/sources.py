"""Where frames come from: a camera, a video file, an image, a folder or glob of images, a stream,
a Jetson CSI camera or a GStreamer pipeline.

``open_source(spec)`` decides the kind from the spec and returns a :class:`Source`, an iterator
of :class:`Frame` (H×W×3 uint8 BGR, as OpenCV delivers them). Files are checked when opened, so
a wrong path fails at once with an :class:`InputError` that says what to give instead.

Live sources (cameras and URLs by default; any source with ``live=True``) are streams that should
not end: a failed read is a disconnect, and the source reopens with exponential backoff, saying
so each time, until ``reconnect_timeout`` seconds pass without a frame; then it ends cleanly.
A video file treated as live stands in for a camera: its frames come at its own frame rate,
whatever the consumer does, and it ends at its last frame rather than reconnecting.
A pipeline (``csi://N``, ``gst:…``) is opened once at the start — a pipeline that does not start
is a wrong pipeline or a missing plugin, not a camera that is late — and reopened like any live
source when it stops. How each kind is opened is ``runtime/capture.py``.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional

import cv2
import numpy as np

from ..errors import InputError
from ..io import Log
from .capture import (CaptureSettings, check_capture, checked_pipeline, ffmpeg_options,
                      open_camera, open_pipeline, open_stream)
from .source_spec import KINDS_HELP, camera_device, redact, source_spec

__all__ = ["Frame", "Source", "VideoSource", "ImageSource", "open_source", "redact",
           "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm",
                            ".pgm", ".pnm"})
_GLOB = re.compile(r"[*?\[]")
# A stalled stream must not block the capture thread forever (FFmpeg's default is to wait):
# FFmpeg gives up on an open or a read after this long, or after what is left of the
# reconnection timeout if that is shorter, but never sooner than the floor (a slow stream
# sends a frame a second).
_STREAM_TIMEOUT = 5.0
_STREAM_TIMEOUT_FLOOR = 1.0
_MAX_BACKOFF = 10.0
# A pipeline's open may take seconds (a CSI sensor's ISP starts, rtspsrc connects) but must not
# wait forever (a source that never prerolls): the watchdog waits what is left of the
# reconnection timeout, within these bounds.
_PIPELINE_OPEN_FLOOR = 3.0
_PIPELINE_OPEN_MAX = 15.0
#: Skipped inputs named in ``Source.skipped_names`` (and the --stats file); the count goes on.
MAX_SKIPPED_NAMES = 100
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One frame: its position in the source, pixels, capture time and a name for outputs."""

    index: int              # 0-based count of frames read from the source
    image: np.ndarray       # H×W×3 uint8 BGR
    timestamp: float        # time.perf_counter() when it was read
    name: str               # image file stem, or the zero-padded index for video
    #: The frame's other input modalities by name (``depth``: H×W, paper §5 RGB-D), as the
    #: Segmenter takes them; None for plain RGB frames. See ``runtime/depth.py``.
    extras: Optional[Mapping[str, np.ndarray]] = None
    #: Which source it came from, when a run reads several (``runtime/multi.py``): the
    #: source's position among them; 0 for a run of one.
    source: int = 0


class Source:
    """Base class: an iterable of frames with a description, a live flag and counters."""

    kind: str = "source"

    def __init__(self, description: str, live: bool, log: Log | None) -> None:
        self.description = description
        self.live = live
        self.fps: float | None = None
        self.skipped = 0          # unreadable inputs reported and skipped
        self.skipped_names: list[str] = []  # the first MAX_SKIPPED_NAMES of them
        self.reconnects = 0       # reconnection attempts (live sources)
        self._log = log or _logger.warning
        self._stop = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __len__(self) -> int:
        """Frames expected, or 0 where unknown (live sources, unknown frame counts)."""
        return 0

    def skip(self, name: str, why: str) -> None:
        """Report an unusable input by name, count it, and keep its name (up to a bound, so a
        folder of a million broken files keeps flat memory)."""
        self.skipped += 1
        if len(self.skipped_names) < MAX_SKIPPED_NAMES:
            self.skipped_names.append(name)
        self._log(f"skipping {name}: {why}")

    def stop(self) -> None:
        """Make iteration end soon; safe from any thread (a backoff wait returns at once)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r}, live={self.live})"


class VideoSource(Source):
    """A camera, video file, stream or GStreamer pipeline read with ``cv2.VideoCapture``,
    reconnecting when live. ``kind``: camera, file, url or pipeline (``target`` its text)."""

    def __init__(self, target: int | str, kind: str, live: bool, reconnect_timeout: float,
                 backoff: float, log: Log | None, capture: CaptureSettings | None = None,
                 description: str | None = None) -> None:
        description = description or (f"camera {target}" if kind == "camera"
                                       else redact(str(target)))
        super().__init__(description, live, log)
        self.kind = kind
        self._target = target
        self._timeout = float(reconnect_timeout)
        self._backoff = float(backoff)
        self._settings = capture or CaptureSettings()
        self._hung: str | None = None  # why a pipeline's open was abandoned
        self._frame_count = 0
        self._capture: cv2.VideoCapture | None = None
        if kind == "file":
            self._capture = self._open()
            if self._capture is None:
                raise InputError(f"{target}: OpenCV cannot decode this video (unknown format "
                                 f"or damaged file); convert it, e.g. "
                                 f"`ffmpeg -i {target} out.mp4`")
        else:
            trying = 0.0 if kind == "pipeline" else self._timeout  # a pipeline: one attempt
            self._capture = self._reconnect(0, time.monotonic() + trying, first=True)
            if self._capture is None:
                raise InputError(self._open_failed_message())
        self._read_properties(self._capture)

    def __len__(self) -> int:
        return self._frame_count if self.kind == "file" else 0

    def _open_failed_message(self) -> str:
        if self.kind == "pipeline":
            return (f"{self.description}: GStreamer could not start the pipeline"
                    + (f" ({self._hung})" if self._hung else "")
                    + f"; try it with `gst-launch-1.0 {redact(str(self._target))}`")
        if self.kind == "camera":
            return (f"camera {self._target} could not be opened within {self._timeout:g} s: "
                    f"is it connected and free (ls /dev/video*)? {KINDS_HELP}")
        return (f"{self.description}: could not connect within {self._timeout:g} s; check the "
                f"address, port and credentials (try it in `ffplay {self.description}`)")

    def _read_properties(self, capture: cv2.VideoCapture) -> None:
        fps = capture.get(cv2.CAP_PROP_FPS)
        # Some cameras and streams report 0, or absurd rates such as 90000 (a clock rate).
        self.fps = float(fps) if 0 < fps <= 1000 else None
        if self.kind == "file":
            self._frame_count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))

    def _open(self, position: int = 0, left: float = _STREAM_TIMEOUT) -> cv2.VideoCapture | None:
        """One attempt to open the target (a file seeks to ``position``), a stream within
        ``left`` seconds; None on failure. A pipeline whose open hangs raises TimeoutError."""
        if self.kind == "pipeline":
            wait = min(max(left, _PIPELINE_OPEN_FLOOR), _PIPELINE_OPEN_MAX)
            return open_pipeline(str(self._target), wait)
        if self.kind == "camera":
            return open_camera(self._target, self._settings, self._log, self.description)
        if self.kind == "url":
            # A stream that stalls with its socket open is noticed by FFmpeg's read timeout,
            # kept within --reconnect-timeout so that a stall ends the run on time.
            read = min(_STREAM_TIMEOUT, max(self._timeout, _STREAM_TIMEOUT_FLOOR))
            opening = min(read, max(left, _STREAM_TIMEOUT_FLOOR))
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(opening * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read * 1000)]
            return open_stream(str(self._target), params, ffmpeg_options(self._settings))
        try:
            capture = cv2.VideoCapture(self._target, cv2.CAP_ANY)
        except cv2.error:
            return None
        if not capture.isOpened():
            capture.release()
            return None
        if position:
            capture.set(cv2.CAP_PROP_POS_FRAMES, position)
        return capture

    def _reconnect(self, index: int, deadline: float,
                   first: bool = False) -> cv2.VideoCapture | None:
        """Reopen with exponential backoff until it works or ``deadline`` (monotonic) passes."""
        delay = self._backoff
        failed = 0
        if not first:
            self._log(f"{self.description}: lost after frame {index}; reconnecting")
        while not self._stop.is_set():
            self.reconnects += 0 if first else 1
            try:
                capture = self._open(index, deadline - time.monotonic())
            except TimeoutError as exc:  # a hung open is not retried: it would hang again
                self._hung = str(exc)
                if not first:  # at the start the InputError says it
                    self._log(f"{self.description}: {exc}")
                return None
            if capture is not None:
                if failed or not first:
                    self._log(f"{self.description}: {'opened' if first else 'reconnected'}"
                              + (f" after {failed} failed attempts" if failed else ""))
                return capture
            failed += 1
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait = min(delay, left)
            self._log(f"{self.description}: cannot {'open' if first else 'reconnect'}; "
                      f"retry {failed} in {wait:.1f} s (giving up in {left:.1f} s)")
            self._stop.wait(wait)
            delay = min(delay * 2, _MAX_BACKOFF)
        return None

    def _at_end(self, index: int) -> bool:
        """True when a failed read is the end of the source rather than a disconnect."""
        if self._stop.is_set():
            return True
        if not self.live:
            if self.kind == "file" and index + 1 < self._frame_count:
                self._log(f"{self.description}: ended at frame {index} of "
                          f"{self._frame_count} (damaged or truncated file?)")
            return True
        # A file ends at its last frame; an unknown count (0) means the end as well.
        return self.kind == "file" and (self._frame_count == 0 or index >= self._frame_count)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        # The outage clock runs from the last frame, so a stream that stalls (its read times
        # out) or accepts connections but sends nothing ends ``reconnect_timeout`` after it.
        last_frame = time.monotonic()
        # A file standing in for a camera delivers frame i at i / fps, as the camera would.
        pace = self.fps if self.kind == "file" and self.live else None
        started = time.perf_counter()
        try:
            while self._capture is not None and not self._stop.is_set():
                ok, image = self._capture.read()
                if ok and image is not None:
                    last_frame = time.monotonic()
                    if pace:
                        self._stop.wait(max(0.0, started + index / pace - time.perf_counter()))
                    yield Frame(index, _as_bgr(image), time.perf_counter(), f"{index:06d}")
                    index += 1
                    continue
                if self._at_end(index):
                    break
                self._capture.release()
                self._capture = self._reconnect(index, last_frame + self._timeout)
                if self._capture is None and not self._stop.is_set():
                    self._log(f"{self.description}: no frames for {self._timeout:g} s; "
                              f"ending the run after {index} frames")
        finally:
            self.close()

    def close(self) -> None:
        """Stop and release the capture. Call it from the thread that iterates (or after)."""
        super().close()
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class ImageSource(Source):
    """Still images, read in order; unreadable ones are reported, counted and skipped."""

    kind = "images"

    def __init__(self, paths: list[Path], description: str, live: bool, log: Log | None) -> None:
        super().__init__(description, live, log)
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self.paths:
            if self._stop.is_set():
                break
            image = _read_image(path)
            if image is None:
                self.skip(str(path), "not a readable image")
                continue
            yield Frame(index, image, time.perf_counter(), path.stem)
            index += 1


def _read_image(path: Path) -> np.ndarray | None:
    """H×W×3 uint8 BGR, or None when the file cannot be decoded."""
    try:
        data = np.fromfile(path, np.uint8)  # imdecode: non-ASCII paths work on every OS
    except OSError:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if image is None else _as_bgr(image)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Grey, BGRA and 16-bit frames (some cameras, some files) as H×W×3 uint8 BGR."""
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(np.iinfo(image.dtype).max)))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _natural_key(path: Path) -> list:
    """frame2 before frame10: numbered image sequences are rarely zero-padded."""
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", str(path))]


def _image_paths(candidates: list[Path]) -> list[Path]:
    found = [p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(found, key=_natural_key)


def open_source(spec: int | str | os.PathLike, *, live: bool | None = None,
                reconnect_timeout: float = 30.0, backoff: float = 0.5,
                log: Log | None = None, capture: CaptureSettings | None = None) -> Source:
    """Open ``spec`` as a source of frames; see the module docstring.

    Args:
        spec: camera index (``0`` or ``"0"``), ``/dev/videoN`` or ``v4l2:///dev/videoN``,
            ``csi://N``, a GStreamer pipeline (``gst:…`` or text with ``!``), a video file, an
            image, a folder of images, a glob such as ``"frames/*.png"``, or an
            ``rtsp://``/``http(s)://`` URL (anything FFmpeg opens).
        live: latest-frame policy and reconnection; default True for cameras, pipelines and
            URLs.
        reconnect_timeout: seconds without a frame after which a live source gives up.
        backoff: first reconnection delay in seconds; it doubles up to 10 s.
        log: where reconnection and skip messages go (default: ``logging`` warnings).
        capture: the camera mode or RTSP options asked for (``runtime/capture.py``); a setting
            that means nothing for this source is refused.

    Raises:
        InputError: a missing or undecodable file, an empty folder or glob, a camera that is
            not there, a setting that does not apply, a camera or stream that cannot be opened
            within ``reconnect_timeout``, a pipeline that does not start.
        BackendUnavailable: a pipeline or CSI camera with an OpenCV that has no GStreamer.
    """
    checked = source_spec(spec)  # nothing OpenCV would crash or hang on gets past this
    settings = capture or CaptureSettings()
    check_capture(settings, checked)
    options = dict(reconnect_timeout=reconnect_timeout, backoff=backoff, log=log,
                   capture=settings)
    if checked.kind == "camera":
        if isinstance(checked.target, int):
            camera_device(checked.target)  # absent: one line, not a 30 s wait
        return VideoSource(checked.target, "camera", _default(live, True), **options)
    if checked.kind in ("csi", "pipeline"):
        return VideoSource(checked_pipeline(checked, settings, _default(live, True)), "pipeline",
                           _default(live, True), description=redact(checked.text), **options)
    if checked.kind == "stream":
        return VideoSource(checked.target, "url", _default(live, True), **options)
    return _path_source(str(checked.target), live, reconnect_timeout, backoff, log)


def _path_source(text: str, live: bool | None, reconnect_timeout: float, backoff: float,
                 log: Log | None) -> Source:
    """A folder, glob, image or video file, checked as it is opened."""
    path = Path(text).expanduser()
    if path.is_dir():
        paths = _image_paths(list(path.iterdir()))
        if not paths:
            raise InputError(f"{path}: folder holds no images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageSource(paths, str(path), _default(live, False), log)
    if not path.exists() and _GLOB.search(text):
        paths = _image_paths([Path(p) for p in glob.glob(str(path), recursive=True)])
        if not paths:
            raise InputError(f"{text}: the pattern matches no image files")
        return ImageSource(paths, text, _default(live, False), log)
    if not path.exists():
        raise InputError(f"{text}: no such file or folder; {KINDS_HELP}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if _read_image(path) is None:
            raise InputError(f"{path}: not a readable image (damaged, or a format OpenCV "
                             f"cannot decode)")
        return ImageSource([path], str(path), _default(live, False), log)
    return VideoSource(str(path), "file", _default(live, False), reconnect_timeout, backoff, log)


def _default(live: bool | None, default: bool) -> bool:
    return default if live is None else bool(live)
