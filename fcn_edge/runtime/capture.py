"""How a camera or stream is opened: the capture settings a user asks for (``--input-width``,
``--input-height``, ``--input-fps``, ``--input-codec``, ``--rtsp-latency``, ``--rtsp-transport``),
the GStreamer pipelines and FFmpeg options built from them, and the checks that keep an open
from hanging.

The builders are plain functions of a :class:`CaptureSettings`, so every string they make is
tested as it is; ``sources.VideoSource`` calls the ``open_*`` functions.

- V4L2 cameras (``0``, ``/dev/video0``, ``v4l2:///dev/video0``) open through OpenCV's V4L2
  backend, which every Linux OpenCV has (pip's too): the mode is set with ``CAP_PROP_FOURCC``,
  ``FRAME_WIDTH``, ``FRAME_HEIGHT`` and ``FPS`` in that order (the driver picks the sizes a
  pixel format offers), read back, and one line says when the camera gave another mode.
- CSI cameras and pipelines need an OpenCV built with GStreamer (Jetson's, Debian's
  ``python3-opencv``; pip's ``opencv-python`` has none): without it one line says what to
  install. Every element a pipeline names is looked up in GStreamer's registry first, because
  OpenCV given a pipeline with an unknown element can wait forever; the open itself runs under
  a watchdog for the same reason.
- RTSP options go to FFmpeg through OpenCV's ``OPENCV_FFMPEG_CAPTURE_OPTIONS``, set only while
  a stream opens, under a lock: the variable is process-wide and read by each open.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import re
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, ClassVar, Iterator, Mapping

import cv2

from ..errors import BackendUnavailable, InputError
from .bounds import Bound, Rule, check_bounds
from .source_spec import SourceSpec, redact

__all__ = ["CaptureSettings", "CAPTURE_BOUNDS", "CODECS", "TRANSPORTS", "APPSINK_LIVE",
           "APPSINK_ALL", "check_capture", "checked_pipeline", "csi_pipeline", "user_pipeline",
           "pipeline_elements", "gstreamer_available", "require_gstreamer", "missing_elements",
           "ffmpeg_options", "merge_ffmpeg_options", "ffmpeg_capture_options",
           "v4l2_properties", "mode_mismatch", "open_pipeline", "open_camera", "open_stream"]

#: Each capture setting's range (``RunConfig.BOUNDS`` holds them too, for the flags).
CAPTURE_BOUNDS: Mapping[str, Rule] = {
    "input_width": Bound(1, 16384), "input_height": Bound(1, 16384),
    "input_fps": Bound(0.0, 1000.0, integer=False, low_open=True),
    "rtsp_latency": Bound(0, 60_000, zero="no reordering wait")}
#: --input-codec → the V4L2 FOURCC asked for; aliases as v4l2-ctl and GStreamer spell them.
CODECS: Mapping[str, str] = {"MJPG": "MJPG", "MJPEG": "MJPG", "YUYV": "YUYV", "YUY2": "YUYV",
                             "UYVY": "UYVY", "NV12": "NV12", "YU12": "YU12", "I420": "YU12",
                             "GREY": "GREY", "GRAY8": "GREY", "BGR3": "BGR3", "RGB3": "RGB3"}
TRANSPORTS = ("tcp", "udp")
#: What the settings apply to, by source kind (``SourceSpec.kind``; ``rtsp`` for rtsp(s)://).
_APPLIES = {"camera": ("input_width", "input_height", "input_fps", "input_codec"),
            "csi": ("input_width", "input_height", "input_fps"),
            "rtsp": ("rtsp_latency", "rtsp_transport")}
_WHERE = {"input_width": "V4L2 and csi:// cameras", "input_height": "V4L2 and csi:// cameras",
          "input_fps": "V4L2 and csi:// cameras", "input_codec": "V4L2 cameras",
          "rtsp_latency": "rtsp:// streams", "rtsp_transport": "rtsp:// streams"}
#: jetson-inference's default CSI mode.
CSI_DEFAULT = (1280, 720, 30.0)
#: The sink added to a pipeline that has none. Live: only the newest frame waits (``drop``),
#: never paced by the clock (``sync=false``), so lag cannot grow; otherwise every frame is
#: kept, one at a time, and the pipeline waits for the reader.
APPSINK_LIVE = "appsink drop=true max-buffers=1 sync=false"
APPSINK_ALL = "appsink drop=false max-buffers=1 sync=false"
_TO_BGR = "videoconvert ! video/x-raw,format=BGR"
_FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_ffmpeg_lock = threading.Lock()


@dataclass(frozen=True)
class CaptureSettings:
    """The capture mode asked for; None leaves the device's or FFmpeg's default. Field names
    are ``RunConfig``'s and the flags' (``input_width`` → ``--input-width``)."""

    input_width: int | None = None
    input_height: int | None = None
    input_fps: float | None = None
    input_codec: str | None = None      # a key of CODECS, any case
    rtsp_latency: int | None = None     # ms FFmpeg's RTP reorder buffer waits
    rtsp_transport: str | None = None   # tcp or udp

    BOUNDS: ClassVar[Mapping[str, Rule]] = CAPTURE_BOUNDS

    def __post_init__(self) -> None:
        check_bounds(self, self.BOUNDS, flags=True)
        if self.input_codec is not None and str(self.input_codec).upper() not in CODECS:
            raise InputError(f"--input-codec {self.input_codec}: unknown codec; give one of "
                             f"{', '.join(CODECS)}")
        if self.rtsp_transport is not None and self.rtsp_transport not in TRANSPORTS:
            raise InputError(f"--rtsp-transport must be {' or '.join(TRANSPORTS)}, got "
                             f"{self.rtsp_transport!r}")
        if (self.input_width is None) != (self.input_height is None):
            raise InputError("--input-width and --input-height go together: give both "
                             "(e.g. --input-width 1280 --input-height 720)")

    @property
    def fourcc(self) -> str | None:
        return CODECS[self.input_codec.upper()] if self.input_codec else None

    def given(self) -> list[str]:
        return [name for name in _WHERE if getattr(self, name) is not None]


def check_capture(settings: CaptureSettings, spec: SourceSpec) -> None:
    """Refuse a setting that means nothing for this source (``--input-codec`` on a file)."""
    kind = "rtsp" if spec.scheme in ("rtsp", "rtsps") else spec.kind
    shown = redact(spec.text)
    for name in settings.given():
        if name not in _APPLIES.get(kind, ()):
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} applies to {_WHERE[name]}, not to {shown}: leave "
                             f"{flag} out")


def checked_pipeline(spec: SourceSpec, settings: CaptureSettings, live: bool) -> str:
    """The pipeline a csi:// or pipeline source opens, once OpenCV can run it and GStreamer
    has all its elements (else one line that says what to install)."""
    shown = redact(spec.text)
    require_gstreamer(shown)
    if spec.kind == "csi":
        pipeline = csi_pipeline(int(spec.target), settings)
    else:
        pipeline = user_pipeline(str(spec.target), live)
    missing = missing_elements(pipeline_elements(pipeline))
    if missing:
        hint = ("CSI cameras need a Jetson's nvarguscamerasrc and nvvidconv (L4T/JetPack)"
                if spec.kind == "csi" else
                "install the plugins that have them (gstreamer1.0-plugins-good/-bad/-ugly, "
                "-libav); `gst-inspect-1.0 NAME` checks one")
        raise InputError(f"{shown}: GStreamer has no element {', '.join(missing)}; {hint}")
    return pipeline


def _framerate(fps: float) -> str:
    """GStreamer's fraction: 30 → 30/1, 29.97 → 2997/100."""
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def csi_pipeline(sensor: int, settings: CaptureSettings) -> str:
    """Jetson's CSI camera pipeline (as jetson-inference and NVIDIA's samples build it): the
    ISP's NV12 in NVMM memory, converted by nvvidconv to BGRx, by videoconvert to OpenCV's BGR."""
    width, height, fps = CSI_DEFAULT
    if settings.input_width is not None:
        width, height = settings.input_width, settings.input_height
    rate = _framerate(settings.input_fps or fps)
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={width},"
            f"height={height},framerate={rate},format=NV12 ! nvvidconv ! "
            f"video/x-raw,format=BGRx ! {_TO_BGR} ! {APPSINK_LIVE}")


def _segments(pipeline: str) -> list[str]:
    return [part.strip() for part in pipeline.split("!")]


def user_pipeline(pipeline: str, live: bool) -> str:
    """A pipeline as given, with ``! videoconvert ! video/x-raw,format=BGR ! APPSINK`` added
    when it has no appsink (``APPSINK_LIVE`` for live sources, else ``APPSINK_ALL``)."""
    if "appsink" in pipeline_elements(pipeline):
        return pipeline
    return f"{pipeline.rstrip().rstrip('!').rstrip()} ! {_TO_BGR} ! " \
           f"{APPSINK_LIVE if live else APPSINK_ALL}"


def pipeline_elements(pipeline: str) -> list[str]:
    """The element factories a pipeline names: each segment's first word, less caps
    (``video/x-raw``) and references to named elements (``t.``, ``mux.sink_0``)."""
    names = []
    for segment in _segments(pipeline):
        word = segment.split(None, 1)[0] if segment.split() else ""
        if re.fullmatch(r"[A-Za-z0-9_-]+", word):
            names.append(word)
    return names


def gstreamer_available() -> bool:
    """Whether this OpenCV reads through GStreamer (a built-in or a loadable backend)."""
    registry = getattr(cv2, "videoio_registry", None)
    if registry is not None and hasattr(registry, "hasBackend"):
        return bool(registry.hasBackend(cv2.CAP_GSTREAMER))
    found = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.M)
    return bool(found and found.group(1).upper() != "NO")


def require_gstreamer(shown: str) -> None:
    if not gstreamer_available():
        raise BackendUnavailable(
            f"{shown} needs an OpenCV built with GStreamer, and this one ({cv2.__version__}) "
            f"has none (pip's opencv-python never has): on Debian/Ubuntu `apt install "
            f"python3-opencv gstreamer1.0-plugins-good` and use that Python (a venv made "
            f"with --system-site-packages, without pip's opencv); Jetson's OpenCV has it")


@functools.lru_cache(maxsize=1)
def _gstreamer_library() -> Any:
    """GStreamer's C library, initialised, or None where it cannot be loaded (then elements
    go unchecked and the open's watchdog is the only guard)."""
    for name in ("libgstreamer-1.0.so.0", ctypes.util.find_library("gstreamer-1.0")):
        try:
            library = ctypes.CDLL(name) if name else None
        except OSError:
            continue
        if library is None:
            continue
        library.gst_element_factory_find.restype = ctypes.c_void_p
        library.gst_element_factory_find.argtypes = [ctypes.c_char_p]
        library.gst_object_unref.argtypes = [ctypes.c_void_p]
        if library.gst_init_check(None, None, None):
            return library
    return None


def missing_elements(names: list[str]) -> list[str]:
    """The names GStreamer's registry does not know (the plugins OpenCV will load)."""
    library = _gstreamer_library()
    if library is None:
        return []
    missing = []
    for name in dict.fromkeys(names):
        factory = library.gst_element_factory_find(name.encode())
        if factory:
            library.gst_object_unref(factory)
        else:
            missing.append(name)
    return missing


def ffmpeg_options(settings: CaptureSettings) -> dict[str, str]:
    """FFmpeg's RTSP options for the settings; empty when none is given (OpenCV's defaults:
    TCP). ``rtsp_transport`` is always set with the others: OpenCV asks for TCP only when the
    variable is unset, so setting it without would fall back to FFmpeg's UDP-first."""
    if settings.rtsp_latency is None and settings.rtsp_transport is None:
        return {}
    options = {"rtsp_transport": settings.rtsp_transport or "tcp"}
    if settings.rtsp_latency is not None:
        options["max_delay"] = str(settings.rtsp_latency * 1000)  # FFmpeg counts microseconds
    return options


def merge_ffmpeg_options(current: str | None, options: Mapping[str, str]) -> str:
    """``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (``key;value|key;value``) with ``options`` set over
    what the user's environment already holds."""
    merged: dict[str, str] = {}
    for pair in filter(None, (current or "").split("|")):
        key, _, value = pair.partition(";")
        merged[key] = value
    merged.update(options)
    return "|".join(f"{key};{value}" for key, value in merged.items())


@contextlib.contextmanager
def ffmpeg_capture_options(options: Mapping[str, str]) -> Iterator[None]:
    """Hold the FFmpeg options lock and, when ``options`` is not empty, set them for the open
    inside; the environment is as it was afterwards. Every stream open takes the lock, so no
    open reads another's options."""
    with _ffmpeg_lock:
        if not options:
            yield
            return
        before = os.environ.get(_FFMPEG_ENV)
        os.environ[_FFMPEG_ENV] = merge_ffmpeg_options(before, options)
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(_FFMPEG_ENV, None)
            else:
                os.environ[_FFMPEG_ENV] = before


def v4l2_properties(settings: CaptureSettings) -> list[tuple[int, float]]:
    """``(property, value)`` to set on a V4L2 capture, in the order drivers need: the pixel
    format first (it decides the sizes offered), then the size, then the rate."""
    props: list[tuple[int, float]] = []
    if settings.fourcc:
        props.append((cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*settings.fourcc)))
    if settings.input_width is not None:
        props += [(cv2.CAP_PROP_FRAME_WIDTH, settings.input_width),
                  (cv2.CAP_PROP_FRAME_HEIGHT, settings.input_height)]
    if settings.input_fps is not None:
        props.append((cv2.CAP_PROP_FPS, settings.input_fps))
    return props


def _mode_text(width: Any, height: Any, codec: Any, fps: Any) -> str:
    parts = [f"{width}x{height}" if width is not None else "", codec or "",
             f"{fps:g} fps" if fps is not None else ""]
    return " ".join(p for p in parts if p)


def mode_mismatch(settings: CaptureSettings, width: float, height: float, fourcc: float,
                  fps: float, shown: str) -> str | None:
    """One line when a camera's mode (as OpenCV reads it back) is not the one asked for."""
    got_codec = int(fourcc).to_bytes(4, "little").decode("ascii", "replace").strip("\0 ")
    differs = (settings.input_width is not None
               and (int(width), int(height)) != (settings.input_width, settings.input_height)) \
        or (settings.fourcc is not None and got_codec != settings.fourcc) \
        or (settings.input_fps is not None and abs(fps - settings.input_fps) > 0.5)
    if not differs:
        return None
    asked = _mode_text(settings.input_width, settings.input_height, settings.fourcc,
                       settings.input_fps)
    device = shown if shown.startswith("/dev/") else "/dev/videoN"
    gave = _mode_text(int(width), int(height), got_codec, fps)
    return (f"{shown}: asked for {asked}, the camera gave {gave}; its modes: "
            f"`v4l2-ctl -d {device} --list-formats-ext`")


def open_camera(target: int | str, settings: CaptureSettings, log: Callable[[str], None],
                shown: str) -> cv2.VideoCapture | None:
    """A V4L2 camera in the mode asked for (a different mode is logged); None on failure."""
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    capture = _opened(lambda: cv2.VideoCapture(target, api))
    if capture is None or not settings.given():
        return capture
    for prop, value in v4l2_properties(settings):
        capture.set(prop, value)
    line = mode_mismatch(settings, capture.get(cv2.CAP_PROP_FRAME_WIDTH),
                         capture.get(cv2.CAP_PROP_FRAME_HEIGHT), capture.get(cv2.CAP_PROP_FOURCC),
                         capture.get(cv2.CAP_PROP_FPS), shown)
    if line:
        log(line)
    return capture


def open_stream(url: str, params: list[int],
                options: Mapping[str, str]) -> cv2.VideoCapture | None:
    """A URL through FFmpeg (OpenCV's stream reader), with ``options`` set for its open."""
    with ffmpeg_capture_options(options):
        return _opened(lambda: cv2.VideoCapture(url, cv2.CAP_ANY, params))


def open_pipeline(pipeline: str, seconds: float) -> cv2.VideoCapture | None:
    """A GStreamer pipeline opened within ``seconds`` or None; an open still running then
    (a source that never prerolls) is left to its thread and reported as a hang."""
    result: list[cv2.VideoCapture | None] = []
    opener = threading.Thread(target=lambda: result.append(_opened(
        lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER))), daemon=True,
        name="fcn-edge-gst-open")
    opener.start()
    opener.join(seconds)
    if opener.is_alive():
        raise TimeoutError(f"its open did not return within {seconds:g} s")
    return result[0] if result else None


def _opened(make: Callable[[], cv2.VideoCapture]) -> cv2.VideoCapture | None:
    try:
        capture = make()
    except cv2.error:
        return None
    if not capture.isOpened():
        capture.release()
        return None
    return capture
