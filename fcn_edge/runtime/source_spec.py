"""What a source argument names — a camera index or device, a Jetson CSI camera, a GStreamer
pipeline, a stream URL or a path — checked before any of it reaches OpenCV.

:func:`source_spec` is the one place that decides: it returns a :class:`SourceSpec` (the kind and
what to open); :func:`parse_source` gives its target as a plain int or str. The spellings follow
jetson-inference's ``videoSource``: ``0`` or ``/dev/video0`` or ``v4l2:///dev/video0`` (a V4L2
camera), ``csi://0`` (a CSI sensor through ``nvarguscamerasrc``), ``rtsp://host/path``; and, as
DeepStream users paste them, a GStreamer pipeline with a ``gst:`` prefix or any text containing
``!`` that is not an existing file.

OpenCV trusts its arguments: ``cv2.VideoCapture(-1)`` crashes the process with SIGSEGV, an
index of 100 or more is read as a choice of capture API (``index // 100``, OpenCV's legacy
encoding) rather than a camera, and an unknown URL scheme or a non-camera device such as
``/dev/null`` is retried until the reconnection timeout. :func:`parse_source` refuses all of
these at once, in one line that says what to give instead.
"""
from __future__ import annotations

import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import InputError

__all__ = ["MAX_CAMERA_INDEX", "MAX_CSI_SENSOR", "STREAM_SCHEMES", "KINDS_HELP", "SourceSpec",
           "source_spec", "parse_source", "check_camera", "is_url", "redact", "camera_device"]

#: Camera indices OpenCV takes as cameras: from 100 on it reads ``index // 100`` as the
#: capture API. A camera past /dev/video99 is given by its device path.
MAX_CAMERA_INDEX = 99
#: nvarguscamerasrc's ``sensor-id`` range.
MAX_CSI_SENSOR = 255
#: The URL schemes FFmpeg (OpenCV's stream reader) opens as live streams.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt")
KINDS_HELP = ("give a video file, an image, a folder or glob of images, a camera index "
              "(e.g. 0), csi://N, v4l2:///dev/videoN, a gst: pipeline or an rtsp:// / http:// "
              "URL")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_INTEGER = re.compile(r"^[+-]?\d+$")
_V4L2_MAJOR = 81  # Linux's character-device major number of video4linux devices
_GST_PREFIX = "gst:"


@dataclass(frozen=True)
class SourceSpec:
    """What a source argument is. ``kind``: ``camera`` (``target`` an index or a /dev/videoN
    path), ``csi`` (a sensor number), ``pipeline`` (GStreamer text, without ``gst:``),
    ``stream`` (a URL FFmpeg opens) or ``path`` (a file, folder or glob, checked when opened).
    ``text`` is the argument as given, for messages."""

    kind: str
    target: int | str
    text: str

    @property
    def scheme(self) -> str:
        """A stream's URL scheme, lower case (``rtsp``); empty for other kinds."""
        return urlsplit(self.target).scheme.lower() if self.kind == "stream" else ""


def redact(spec: str) -> str:
    """``rtsp://user:password@host/…`` → ``rtsp://***@host/…``, wherever a URL is in the text
    (a pipeline's ``rtspsrc location=…``): messages and --stats files must not carry a
    camera's password."""
    return re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@", r"\1***@", spec)


def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def check_camera(index: int, flag: str = "--camera") -> int:
    """``index`` if OpenCV reads it as a camera, else one line with the allowed range."""
    if not 0 <= index <= MAX_CAMERA_INDEX:
        raise InputError(f"{flag} {index}: a camera index is 0 … {MAX_CAMERA_INDEX} (0 is the "
                         f"first camera, /dev/video0); give a device path such as "
                         f"/dev/videoN for others, see `ls /dev/video*`")
    return index


def parse_source(spec: object) -> int | str:
    """:func:`source_spec`'s target — a camera index (int) or device path, a stream URL or a
    path — or, for a CSI camera or a pipeline, the text as given (it parses the same again)."""
    checked = source_spec(spec)
    return checked.text if checked.kind in ("csi", "pipeline") else checked.target


def source_spec(spec: object) -> SourceSpec:
    """What ``spec`` is, checked as far as it can be without opening it: the camera range,
    the URL's scheme and host, the device's kind, a csi:// sensor number. Files and folders
    are checked by ``open_source``, which opens them."""
    if isinstance(spec, bool) or not isinstance(spec, (int, str, os.PathLike)):
        raise InputError(f"source {spec!r}: {KINDS_HELP}")
    if isinstance(spec, int):
        return SourceSpec("camera", check_camera(spec), str(spec))
    text = os.fspath(spec)
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise InputError(f"source {text!r} is empty or not a path; {KINDS_HELP}")
    if _INTEGER.match(text.strip()) and not Path(text).exists():
        # a file of that name is the file
        return SourceSpec("camera", check_camera(int(text), "source"), text)
    if is_url(text):
        return _url_spec(text)
    pipeline = _pipeline_text(text)
    if pipeline is not None:
        return SourceSpec("pipeline", pipeline, text)
    path = Path(text)
    _check_device(path)
    return SourceSpec("camera" if is_camera_device(path) else "path", text, text)


def _pipeline_text(text: str) -> str | None:
    """The pipeline a ``gst:``-prefixed text, or a text with ``!`` that names no existing file
    (``clip!.mp4`` stays a file), holds; None for anything else."""
    if text.startswith(_GST_PREFIX):
        pipeline = text[len(_GST_PREFIX):].strip()
        if not pipeline:
            raise InputError(f"source {text!r}: give a pipeline after gst:, e.g. "
                             f"'gst:videotestsrc ! videoconvert'")
        return pipeline
    if "!" in text and not Path(text).exists():
        return text.strip()
    return None


def _url_spec(text: str) -> SourceSpec:
    scheme = urlsplit(text).scheme.lower()
    if scheme == "csi":
        return SourceSpec("csi", _csi_sensor(text), text)
    if scheme == "v4l2":
        device = _v4l2_device(text)
        _check_device(Path(device))
        return SourceSpec("camera", device, text)
    return SourceSpec("stream", _check_url(text), text)


def _csi_sensor(text: str) -> int:
    number = text[len("csi://"):]
    if not (number.isdigit() and int(number) <= MAX_CSI_SENSOR):
        raise InputError(f"{text}: a CSI camera is csi://N with N the sensor number, 0 … "
                         f"{MAX_CSI_SENSOR} (nvarguscamerasrc sensor-id), e.g. csi://0")
    return int(number)


def _v4l2_device(text: str) -> str:
    device = text[len("v4l2://"):]
    if not device.startswith("/"):
        raise InputError(f"{text}: give the camera's absolute device path after v4l2:// "
                         f"(three slashes), e.g. v4l2:///dev/video0")
    return device


def camera_device(index: int) -> Path | None:
    """The device OpenCV's V4L2 backend opens for camera ``index`` (Linux's /dev/videoN),
    checked to exist with the cameras listed when not; None on other systems."""
    if not sys.platform.startswith("linux"):
        return None
    device = Path(f"/dev/video{index}")
    if not device.exists():
        raise InputError(f"camera {index}: there is no {device}; {_cameras_here()}")
    _check_device(device)
    return device


def _cameras_here() -> str:
    cameras = sorted(str(p) for p in Path("/dev").glob("video*"))
    return (f"cameras here: {', '.join(cameras)}" if cameras
            else "no /dev/video* cameras are connected")


def _check_url(text: str) -> str:
    shown = redact(text)
    parts = urlsplit(text)
    if parts.scheme.lower() not in STREAM_SCHEMES:
        raise InputError(f"{shown}: unknown stream type {parts.scheme}://; streams are "
                         f"{', '.join(s + '://' for s in STREAM_SCHEMES)}, cameras csi://N "
                         f"and v4l2:///dev/videoN (give a local file as a plain path)")
    try:
        port = parts.port  # raises on a port that is not 0 … 65535
    except ValueError:
        port = -1
    if not parts.netloc or port == -1:
        raise InputError(f"{shown}: no host or a bad port; give e.g. "
                         f"{parts.scheme}://192.168.1.10:554/stream")
    return text


def _check_device(path: Path) -> None:
    """A device must be a camera: anything else (``/dev/null``, a disk, a pipe) never sends
    frames, and OpenCV would retry it until the timeout. Other missing paths are left to
    ``open_source``, which says what it looked for."""
    try:
        info = path.stat()
    except (OSError, ValueError):
        if path.name.startswith("video") and str(path).startswith("/dev/"):
            raise InputError(f"{path}: no such camera device; {_cameras_here()}") from None
        return
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
        return
    if not (stat.S_ISCHR(info.st_mode) and (not sys.platform.startswith("linux")
                                            or os.major(info.st_rdev) == _V4L2_MAJOR)):
        raise InputError(f"{path} is not a camera (cameras are /dev/videoN video4linux "
                         f"devices, see `ls /dev/video*`); {KINDS_HELP}")


def is_camera_device(path: Path) -> bool:
    """True for a character device: a camera, once ``parse_source`` has checked it."""
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        return False
