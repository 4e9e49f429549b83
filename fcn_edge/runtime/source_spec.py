"""What a source argument names — a camera index, a camera device, a stream URL or a path —
checked before any of it reaches OpenCV.

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
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import InputError

__all__ = ["MAX_CAMERA_INDEX", "STREAM_SCHEMES", "KINDS_HELP", "parse_source", "check_camera",
           "is_url", "redact"]

#: Camera indices OpenCV takes as cameras: from 100 on it reads ``index // 100`` as the
#: capture API. A camera past /dev/video99 is given by its device path.
MAX_CAMERA_INDEX = 99
#: The URL schemes FFmpeg (OpenCV's stream reader) opens as live streams.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt")
KINDS_HELP = ("give a video file, an image, a folder or glob of images, a camera index "
              "(e.g. 0) or an rtsp:// / http:// URL")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_INTEGER = re.compile(r"^[+-]?\d+$")
_V4L2_MAJOR = 81  # Linux's character-device major number of video4linux devices


def redact(spec: str) -> str:
    """``rtsp://user:password@host/…`` → ``rtsp://***@host/…``: messages and --stats files
    must not carry a camera's password."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1***@", spec)


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
    """A camera index (int) or the source's text, checked as far as it can be without opening
    it: the camera range, the URL's scheme and host, the device's kind. Files and folders are
    checked by ``open_source``, which opens them."""
    if isinstance(spec, bool) or not isinstance(spec, (int, str, os.PathLike)):
        raise InputError(f"source {spec!r}: {KINDS_HELP}")
    if isinstance(spec, int):
        return check_camera(spec)
    text = os.fspath(spec)
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise InputError(f"source {text!r} is empty or not a path; {KINDS_HELP}")
    if _INTEGER.match(text.strip()) and not Path(text).exists():
        return check_camera(int(text), "source")  # a file of that name is the file
    if is_url(text):
        return _check_url(text)
    _check_device(Path(text))
    return text


def _check_url(text: str) -> str:
    shown = redact(text)
    parts = urlsplit(text)
    if parts.scheme.lower() not in STREAM_SCHEMES:
        raise InputError(f"{shown}: unknown stream type {parts.scheme}://; streams are "
                         f"{', '.join(s + '://' for s in STREAM_SCHEMES)} (give a local file "
                         f"as a plain path)")
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
            cameras = sorted(str(p) for p in Path("/dev").glob("video*"))
            raise InputError(f"{path}: no such camera device; "
                             + (f"cameras here: {', '.join(cameras)}" if cameras
                                else "no /dev/video* cameras are connected")) from None
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
