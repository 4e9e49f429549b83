"""Where results go: a video file, a folder of overlays, palette-PNG masks, a window.

Every sink has ``write(result)`` and ``close()``, and is used from one thread (the pipeline's
writer), since OpenCV's writers and windows are not thread-safe. ``close()`` always leaves
complete files: the video is written under a temporary name beside the target and renamed when
it is closed, so an interrupted run (Ctrl-C) still ends with a playable file and never with a
half-written one under the real name. A video whose writing failed (a full disk) is removed,
never renamed: ``cv2.VideoWriter.write`` says nothing when the disk fills (OpenCV 4 returns
None; OpenCV 5 returns False, which is checked on every frame), so ``close()`` also reads the
finished file's frame count back before giving it its name. Images and masks are written
atomically (``fcn_edge.io.atomic_path``), one file at a time.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import cv2
import numpy as np

from ..errors import InputError
from ..io import Log, atomic_path, check_writable
from .palette import write_palette_png
from .sources import Frame

__all__ = ["Result", "Sink", "StopRequested", "VideoSink", "ImageDirSink", "ImageFileSink",
           "MaskDirSink", "WindowSink", "VIDEO_SUFFIXES", "display_available"]

#: Container → FourCC. 'mp4v' (MPEG-4 Part 2) is in every FFmpeg build OpenCV ships; H.264
#: encoders usually are not (licensing), so it is not the default.
VIDEO_SUFFIXES = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v",
                  ".avi": "MJPG"}
_FALLBACK = (".avi", "MJPG")   # Motion JPEG in AVI: OpenCV's built-in writer, always there
DEFAULT_FPS = 30.0

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """One processed frame: the frame, its H×W label map and (when asked for) the overlay."""

    frame: Frame
    #: H×W labels, task → H×W labels for a multi-head artifact (paper §5), or None: a plain
    #: frame to write (the demo's input video)
    labels: np.ndarray | Mapping[str, np.ndarray] | None
    overlay: np.ndarray | None = None


class Sink(Protocol):
    """What the pipeline's writer needs; ``needs_overlay`` says whether to compute overlays."""

    needs_overlay: bool

    def write(self, result: Result) -> None: ...

    def close(self) -> None: ...


class StopRequested(Exception):
    """Raised by a sink to end the run normally (a key pressed in the window)."""


class VideoSink:
    """Overlays into one video; size fixed by the first frame, FPS from the source or 30."""

    needs_overlay = True

    def __init__(self, path: str | os.PathLike, fps: float | None = None,
                 log: Log | None = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise InputError(f"{path}: unknown video type; use one of "
                             f"{', '.join(sorted(VIDEO_SUFFIXES))}")
        self.fps = float(fps) if fps and fps > 0 else DEFAULT_FPS
        self.frames = 0
        self.size: tuple[int, int] | None = None     # (width, height) written
        self._log = log or _logger.warning
        self._writer: cv2.VideoWriter | None = None
        self._tmp: Path | None = None
        self._resized = False
        self._failed = False

    def _open(self, path: Path, fourcc: str, size: tuple[int, int]) -> cv2.VideoWriter | None:
        # The container is chosen from the name's suffix, so the temporary keeps it.
        tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        try:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*fourcc), self.fps, size)
        except cv2.error:
            writer = None
        if writer is None or not writer.isOpened():
            tmp.unlink(missing_ok=True)
            return None
        self._tmp = tmp
        return writer

    def _start(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        # Encoders work on 2×2 chroma blocks and silently drop an odd row or column: say it here.
        self.size = (max(2, width - width % 2), max(2, height - height % 2))
        # An unwritable folder first, so that it is never reported as a missing codec.
        check_writable(self.path, "--output")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._open(self.path, VIDEO_SUFFIXES[self.path.suffix.lower()], self.size)
        if self._writer is None and _disk_full(self.path.parent):
            raise InputError(self._failure())
        if self._writer is None and self.path.suffix.lower() != _FALLBACK[0]:
            fallback = self.path.with_suffix(_FALLBACK[0])
            self._log(f"{self.path}: this OpenCV cannot encode "
                      f"{VIDEO_SUFFIXES[self.path.suffix.lower()]} video; writing Motion JPEG "
                      f"to {fallback} instead")
            self.path = fallback
            self._writer = self._open(fallback, _FALLBACK[1], self.size)
        if self._writer is None:
            raise InputError(f"{self.path}: this OpenCV has no video encoder; use a folder "
                             f"for --output instead")

    def write(self, result: Result) -> None:
        image = result.overlay if result.overlay is not None else result.frame.image
        if self._writer is None:
            self._start(image)
        width, height = self.size  # type: ignore[misc]
        if image.shape[1] != width or image.shape[0] != height:
            if not (0 <= image.shape[1] - width <= 1 and 0 <= image.shape[0] - height <= 1):
                if not self._resized:
                    self._log(f"{self.path}: frames change size; resizing them to "
                              f"{width}×{height}, the first frame's size")
                    self._resized = True
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            else:
                image = image[:height, :width]
        if self._writer.write(np.ascontiguousarray(image)) is False:  # type: ignore[union-attr]
            self._failed = True  # OpenCV 5 says so; OpenCV 4 returns None (see close)
            raise InputError(self._failure())
        self.frames += 1

    def _failure(self) -> str:
        where = self.path.parent
        why = ("the disk is full" if _disk_full(where)
               else "a full disk, a file-size limit or an I/O error")
        return (f"--output {self.path}: writing the video failed after {self.frames} frames "
                f"({why}); the partial video was removed: free space in {where} or choose "
                f"another --output")

    def close(self) -> None:
        """Finish the file and give it its real name (a run with no frames writes none); a
        video that failed, or does not read back with every frame, is removed instead."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        tmp, self._tmp = self._tmp, None
        if tmp is None or not tmp.exists():
            return
        try:
            if not self._failed and not _holds_frames(tmp, self.frames):
                self._failed = True
                raise InputError(self._failure())
            if not self._failed:
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)


def _disk_full(folder: Path) -> bool:
    """Less than 4 MiB free where the video goes: too little for more than a few frames."""
    try:
        info = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return info.f_bavail * info.f_frsize < 4 << 20


def _holds_frames(path: Path, frames: int) -> bool:
    """True when the finished video opens and says it holds ``frames`` frames. Containers
    that estimate their count from the duration (Matroska) may be one off; a truncated file
    (no moov atom, no index) does not open or counts none."""
    capture = cv2.VideoCapture(str(path))
    try:
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else -1
    finally:
        capture.release()
    return count >= frames - 1 - frames // 100


def _encode(path: Path, image: np.ndarray) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buffer = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise InputError(f"{path}: OpenCV cannot encode a {path.suffix} image")
    _write_bytes(path, buffer.tobytes())


def _write_bytes(path: Path, data: bytes) -> None:
    """``data`` to ``path`` atomically; a failed write (a full disk) is one line naming it."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc}); free space or choose "
                         f"another folder") from None


class ImageDirSink:
    """Each overlay as ``<name><suffix>`` in a folder (JPEG by default: small and fast)."""

    needs_overlay = True

    def __init__(self, directory: str | os.PathLike, suffix: str = ".jpg") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.suffix = suffix
        self.frames = 0

    def write(self, result: Result) -> None:
        image = result.overlay if result.overlay is not None else result.frame.image
        _encode(self.directory / f"{result.frame.name}{self.suffix}", image)
        self.frames += 1

    def close(self) -> None:
        pass


class ImageFileSink:
    """The overlay of a single-image source, written to one image file."""

    needs_overlay = True

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.frames = 0

    def write(self, result: Result) -> None:
        if self.frames:
            raise InputError(f"--output {self.path} is one image but the source has several "
                             f"frames; give a folder or a video file (.mp4) instead")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        image = result.overlay if result.overlay is not None else result.frame.image
        _encode(self.path, image)
        self.frames += 1

    def close(self) -> None:
        pass


class MaskDirSink:
    """Label maps as palette PNGs ``<name>.png`` (VOC's format: pixel values are class ids).

    For a multi-head artifact, one sink per head: ``task`` picks its labels from each result
    (and ``palette`` should be that task's).
    """

    needs_overlay = False

    def __init__(self, directory: str | os.PathLike,
                 palette: Sequence[Sequence[int]] | np.ndarray, log: Log | None = None,
                 task: str | None = None) -> None:
        self.directory = Path(directory)
        self.task = task
        self.directory.mkdir(parents=True, exist_ok=True)
        self.palette = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
        self.frames = 0
        self._log = log or _logger.warning
        self._warned = False

    def write(self, result: Result) -> None:
        path = self.directory / f"{result.frame.name}.png"
        labels = result.labels
        if isinstance(labels, Mapping):
            if self.task not in labels:
                raise InputError(f"{self.directory}: the results hold the tasks "
                                 f"{', '.join(labels)}; this mask folder was made for "
                                 f"{self.task!r}")
            labels = labels[self.task]
        if labels.dtype == np.uint8:
            write_palette_png(path, labels, self.palette)
        else:
            # A palette holds 256 entries; more classes need 16-bit grey PNGs of class ids.
            if not self._warned:
                self._log(f"{self.directory}: more than 256 classes; writing 16-bit PNGs")
                self._warned = True
            ok, png = cv2.imencode(".png", labels.astype(np.uint16))
            if not ok:
                raise InputError(f"{path}: cannot encode the mask")
            _write_bytes(path, png.tobytes())
        self.frames += 1

    def close(self) -> None:
        pass


def display_available() -> tuple[bool, str]:
    """Whether a window can open here, and why not."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    return True, ""


class WindowSink:
    """Shows overlays in a window; without a display or GUI support it says so once and idles.

    A key press of ``q`` or Esc in the window ends the run like Ctrl-C.
    """

    needs_overlay = True

    def __init__(self, title: str = "fcn-edge", log: Log | None = None) -> None:
        self.title = title
        self.frames = 0
        self._log = log or _logger.warning
        ok, why = display_available()
        self.enabled = ok
        self._opened = False
        if not ok:
            self._log(f"--show: {why}; running without a window")

    def write(self, result: Result) -> None:
        if not self.enabled:
            return
        image = result.overlay if result.overlay is not None else result.frame.image
        try:
            cv2.imshow(self.title, image)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            self.enabled = False
            self._log("--show: this OpenCV has no GUI support (opencv-python-headless); "
                      "install opencv-python for a window; running without one")
            return
        self._opened = True
        self.frames += 1
        if key in (ord("q"), 27):
            raise StopRequested("window closed with a key press")

    def close(self) -> None:
        if self._opened:
            try:
                cv2.destroyWindow(self.title)
            except cv2.error:
                pass
            self._opened = False
