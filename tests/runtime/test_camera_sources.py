"""Cameras and pipelines as edge users give them (csi://N, v4l2:///dev/videoN with a mode,
GStreamer pipelines, RTSP with latency and transport).

No camera exists here, so what needs one is a construction test (named so): the exact pipeline,
FFmpeg options and V4L2 properties built from the settings. What can run here runs for real:
the venv's pip OpenCV (no GStreamer) gives its one line through the CLI; Debian's OpenCV with
GStreamer (/usr/bin/python3) reads videotestsrc through ``open_source``; a local RTSP responder
sees the transport FFmpeg asks for; a local HTTP server sees the options FFmpeg was given."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import pytest

from fcn_edge.errors import BackendUnavailable, InputError
from fcn_edge.runtime import capture as cap
from fcn_edge.runtime.capture import CaptureSettings
from fcn_edge.runtime.run import RunConfig
from fcn_edge.runtime.source_spec import parse_source, redact, source_spec
from fcn_edge.runtime.sources import open_source

from faults import run_cli

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


# --- what a source string is -----------------------------------------------------------------

@pytest.mark.parametrize("spec, kind, target", [
    ("csi://0", "csi", 0), ("csi://12", "csi", 12),
    ("gst:videotestsrc ! videoconvert", "pipeline", "videotestsrc ! videoconvert"),
    ("gst:videotestsrc", "pipeline", "videotestsrc"),
    ("v4l2src device=/dev/video0 ! image/jpeg ! jpegdec", "pipeline",
     "v4l2src device=/dev/video0 ! image/jpeg ! jpegdec"),
    ("rtsp://cam:554/s", "stream", "rtsp://cam:554/s"), ("3", "camera", 3),
    ("clip.mp4", "path", "clip.mp4"),
])
def test_source_spec_decides_the_kind(spec, kind, target):
    checked = source_spec(spec)
    assert (checked.kind, checked.target, checked.text) == (kind, target, spec)
    assert source_spec(parse_source(spec)) == source_spec(spec) or kind == "camera"


def test_a_file_whose_name_has_a_bang_is_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wow!.mp4").write_bytes(b"x")
    assert source_spec("wow!.mp4").kind == "path"


@pytest.mark.parametrize("spec, message", [
    ("csi://abc", r"csi://abc: a CSI camera is csi://N .* 0 … 255"),
    ("csi://-1", r"csi://-1: a CSI camera is csi://N"),
    ("csi://256", r"csi://256: a CSI camera is csi://N"),
    ("csi://", r"csi://: a CSI camera is csi://N"),
    ("v4l2://relative", r"v4l2://relative: give the camera's absolute device path .*"
                        r"v4l2:///dev/video0"),
    ("v4l2://dev/video0", r"three slashes"),
    ("v4l2:///dev/null", r"/dev/null is not a camera"),
    ("gst:", r"give a pipeline after gst:"),
    ("gst:   ", r"give a pipeline after gst:"),
])
def test_malformed_camera_uris_are_refused_before_anything_opens(spec, message):
    with pytest.raises(InputError, match=message):
        source_spec(spec)
    with pytest.raises(InputError, match=message):
        RunConfig(model="m.onnx", source=spec).check()


def test_redact_hides_passwords_inside_a_pipeline():
    assert redact("rtspsrc location=rtsp://me:secret@cam/s ! decodebin") == \
        "rtspsrc location=rtsp://***@cam/s ! decodebin"
    assert redact("rtsp://me:pw@cam:554/s") == "rtsp://***@cam:554/s"


# --- settings: bounds, names, and which source they apply to -------------------------------

@pytest.mark.parametrize("settings, message", [
    (dict(input_width=0, input_height=480), r"--input-width must be an integer from 1 to 16384"),
    (dict(input_width=640, input_height=100000), r"--input-height must be an integer"),
    (dict(input_fps=0.0), r"--input-fps must be positive and at most 1000"),
    (dict(input_fps=float("nan")), r"--input-fps must be positive"),
    (dict(rtsp_latency=-1), r"--rtsp-latency must be an integer from 0 to 60000"),
    (dict(input_codec="H265"), r"--input-codec H265: unknown codec; give one of MJPG, "),
    (dict(rtsp_transport="quic"), r"--rtsp-transport must be tcp or udp, got 'quic'"),
    (dict(input_width=640), r"--input-width and --input-height go together"),
])
def test_settings_out_of_bounds_are_refused_with_the_flag(settings, message):
    with pytest.raises(InputError, match=message):
        CaptureSettings(**settings)
    with pytest.raises(InputError, match=message):
        RunConfig(model="m.onnx", camera=0, **settings).check()


@pytest.mark.parametrize("flag, value, line", [
    ("--input-width", "0", "--input-width must be an integer from 1 to 16384, got '0'"),
    ("--input-fps", "inf", "--input-fps must be positive and at most 1000, got 'inf'"),
    ("--rtsp-latency", "1.5", "--rtsp-latency must be an integer from 0 to 60000 (0: no "
                              "reordering wait), got '1.5'"),
])
def test_the_flags_are_read_within_their_range(tmp_path, flag, value, line):
    done = run_cli(["run", "--camera", "0", "--model", "missing.onnx", flag, value],
                   cwd=tmp_path, timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == f"fcn-edge run: {line}", done.stderr


@pytest.mark.parametrize("spec, settings, flag", [
    ("clip.mp4", dict(input_codec="MJPG"), "--input-codec"),
    ("clip.mp4", dict(input_width=640, input_height=480), "--input-width"),
    ("csi://0", dict(input_codec="YUYV"), "--input-codec"),
    ("gst:videotestsrc", dict(input_fps=30.0), "--input-fps"),
    ("rtsp://cam/s", dict(input_fps=30.0), "--input-fps"),
    ("http://cam/s.mjpg", dict(rtsp_latency=100), "--rtsp-latency"),
    ("0", dict(rtsp_transport="udp"), "--rtsp-transport"),
])
def test_a_setting_the_source_has_no_use_for_is_refused_in_one_line(spec, settings, flag):
    with pytest.raises(InputError, match=rf"^{flag} applies to .*: leave {flag} out$"):
        RunConfig(model="m.onnx", source=spec, **settings).check()
    with pytest.raises(InputError, match=rf"^{flag} applies to"):
        open_source(spec, capture=CaptureSettings(**settings))


def test_several_sources_each_take_the_settings_or_refuse_them():
    with pytest.raises(InputError, match=r"^--rtsp-latency applies to rtsp:// streams, not to "
                                         r"clip.mp4"):
        RunConfig(model="m.onnx", sources=("rtsp://cam/a", "clip.mp4"), rtsp_latency=50).check()
    with pytest.raises(InputError, match=r"csi://x: a CSI camera is csi://N"):
        RunConfig(model="m.onnx", sources=("csi://0", "csi://x")).check()


@pytest.mark.parametrize("spec", ["gst:videotestsrc", "videotestsrc ! videoconvert", "csi://0"])
def test_depth_folders_are_refused_for_cameras_and_pipelines_before_they_open(spec):
    with pytest.raises(InputError, match=r"only with image sources"):
        RunConfig(model="m.onnx", source=spec, inputs=(("depth", "d/"),)).check()


def test_settings_that_apply_pass(tmp_path):
    for spec, settings in [("rtsp://cam/s", dict(rtsp_latency=0, rtsp_transport="udp")),
                           ("csi://1", dict(input_width=1920, input_height=1080,
                                            input_fps=60.0))]:
        RunConfig(model="m.onnx", source=spec, **settings).check()
    RunConfig(model="m.onnx", camera=0, input_codec="mjpg", input_fps=30.0).check()
    assert CaptureSettings(input_codec="yuy2").fourcc == "YUYV"


# --- construction (no camera here) -----------------------------------------------------------

def test_construction_csi_pipeline_defaults_to_1280x720_at_30():
    assert cap.csi_pipeline(0, CaptureSettings()) == (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,"
        "framerate=30/1,format=NV12 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")


def test_construction_csi_pipeline_takes_the_mode():
    settings = CaptureSettings(input_width=1920, input_height=1080, input_fps=29.97)
    assert cap.csi_pipeline(2, settings) == (
        "nvarguscamerasrc sensor-id=2 ! video/x-raw(memory:NVMM),width=1920,height=1080,"
        "framerate=2997/100,format=NV12 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")
    assert "framerate=60/1," in cap.csi_pipeline(0, CaptureSettings(input_fps=60.0))


def test_construction_a_pipeline_without_appsink_gets_one():
    assert cap.user_pipeline("videotestsrc ! video/x-raw,width=64", live=True) == (
        "videotestsrc ! video/x-raw,width=64 ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false")
    assert cap.user_pipeline("filesrc location=a.mp4 ! decodebin !", live=False) == (
        "filesrc location=a.mp4 ! decodebin ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=false max-buffers=1 sync=false")
    mine = "v4l2src ! videoconvert ! appsink name=out max-buffers=3"
    assert cap.user_pipeline(mine, live=True) == mine


def test_construction_pipeline_elements_leave_out_caps_and_references():
    assert cap.pipeline_elements(
        "v4l2src device=/dev/video0 ! image/jpeg,width=1280 ! tee name=t t. ! queue ! "
        "jpegdec ! video/x-raw(memory:NVMM) ! appsink") == \
        ["v4l2src", "tee", "queue", "jpegdec", "appsink"]


def test_construction_ffmpeg_options_for_rtsp():
    assert cap.ffmpeg_options(CaptureSettings()) == {}
    assert cap.ffmpeg_options(CaptureSettings(rtsp_transport="udp")) == {"rtsp_transport": "udp"}
    assert cap.ffmpeg_options(CaptureSettings(rtsp_latency=200)) == {
        "rtsp_transport": "tcp", "max_delay": "200000"}
    assert cap.merge_ffmpeg_options("stimeout;5000000|rtsp_transport;udp",
                                    {"rtsp_transport": "tcp", "max_delay": "0"}) == \
        "stimeout;5000000|rtsp_transport;tcp|max_delay;0"
    assert cap.merge_ffmpeg_options(None, {"rtsp_transport": "udp"}) == "rtsp_transport;udp"


def test_ffmpeg_options_are_set_only_around_the_open(monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    with cap.ffmpeg_capture_options({"rtsp_transport": "udp"}):
        assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;udp"
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "user_agent;me")
    with cap.ffmpeg_capture_options({"max_delay": "0"}):
        assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "user_agent;me|max_delay;0"
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "user_agent;me"


def test_construction_v4l2_properties_in_driver_order():
    settings = CaptureSettings(input_width=1280, input_height=720, input_fps=30.0,
                               input_codec="mjpeg")
    assert cap.v4l2_properties(settings) == [
        (cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG")),
        (cv2.CAP_PROP_FRAME_WIDTH, 1280), (cv2.CAP_PROP_FRAME_HEIGHT, 720),
        (cv2.CAP_PROP_FPS, 30.0)]
    assert cap.v4l2_properties(CaptureSettings()) == []


def test_construction_a_camera_in_another_mode_is_one_line():
    settings = CaptureSettings(input_width=1920, input_height=1080, input_fps=30.0,
                               input_codec="MJPG")
    mjpg, yuyv = (float(cv2.VideoWriter_fourcc(*c)) for c in ("MJPG", "YUYV"))
    assert cap.mode_mismatch(settings, 1920, 1080, mjpg, 30.0, "/dev/video0") is None
    assert cap.mode_mismatch(settings, 640, 480, yuyv, 30.0, "/dev/video0") == (
        "/dev/video0: asked for 1920x1080 MJPG 30 fps, the camera gave 640x480 YUYV 30 fps; "
        "its modes: `v4l2-ctl -d /dev/video0 --list-formats-ext`")
    assert "gave 1920x1080 MJPG 15 fps" in cap.mode_mismatch(settings, 1920, 1080, mjpg, 15.0,
                                                            "camera 0")


# --- FFmpeg options for real: a local HTTP server and a local RTSP responder -----------------

def _one_request_server(reply: bytes = b"") -> tuple[str, list[bytes], socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            seen.append(conn.recv(65536))
            conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{sock.getsockname()[1]}", seen, sock


def test_opencv_gives_the_options_to_ffmpeg_at_the_open_and_not_after(monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2000]
    for agent, options in (("fcn-edge-probe", {"user_agent": "fcn-edge-probe"}), ("Lavf", {})):
        where, seen, sock = _one_request_server()
        with sock:
            assert cap.open_stream(f"http://{where}/x.mjpg", params, options) is None
        assert f"User-Agent: {agent}".encode() in seen[0], seen


class RtspResponder:
    """Answers OPTIONS and DESCRIBE (one H.264 track) as a camera does, and records the
    Transport header of the SETUP FFmpeg sends — where TCP and UDP differ — then hangs up."""

    SDP = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track1\r\n")

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"rtsp://127.0.0.1:{self.sock.getsockname()[1]}/cam"
        self.transports: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            while True:
                request = conn.recv(65536).decode("latin-1")
                if not request:
                    return
                headers = dict(line.split(": ", 1) for line in request.split("\r\n")[1:]
                               if ": " in line)
                seq = headers.get("CSeq", "1")
                if request.startswith("SETUP"):
                    self.transports.append(headers.get("Transport", ""))
                    return
                body = self.SDP if request.startswith("DESCRIBE") else b""
                extra = (f"Content-Type: application/sdp\r\nContent-Base: {self.url}/\r\n"
                         if body else "Public: OPTIONS, DESCRIBE, SETUP, PLAY\r\n")
                conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {seq}\r\n{extra}"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


@pytest.mark.parametrize("transport, expected", [("tcp", "RTP/AVP/TCP"), ("udp", "RTP/AVP/UDP;"),
                                                 (None, "RTP/AVP/TCP")])
def test_rtsp_transport_reaches_ffmpeg(transport, expected):
    responder = RtspResponder()
    settings = CaptureSettings(rtsp_transport=transport, rtsp_latency=100)
    with pytest.raises(InputError, match="could not connect"):
        open_source(responder.url, reconnect_timeout=0, capture=settings)
    responder.sock.close()
    assert responder.transports and responder.transports[0].startswith(expected), \
        responder.transports


@pytest.mark.parametrize("streams", [1, 2])
def test_fcn_edge_run_gives_each_stream_the_transport(tmp_path, streams):
    responders = [RtspResponder() for _ in range(streams)]
    done = run_cli(["run", *(r.url for r in responders), "--model", "missing.onnx",
                    "--rtsp-transport", "udp", "--reconnect-timeout", "0"], cwd=tmp_path,
                   timeout=60)
    for responder in responders:
        responder.sock.close()
    assert done.returncode == 1 and "could not connect" in done.stderr, done.stderr
    # several sources open in order and the run stops at the first that fails
    assert responders[0].transports[0].startswith("RTP/AVP/UDP;"), responders[0].transports


# --- the real thing: OpenCV without GStreamer (the venv), with it (/usr/bin/python3) ---------

@pytest.mark.skipif(cap.gstreamer_available(), reason="this OpenCV has GStreamer")
@pytest.mark.parametrize("source", ["videotestsrc ! appsink", "csi://0",
                                    "gst:videotestsrc num-buffers=3"])
def test_without_gstreamer_a_pipeline_is_one_line_and_exit_2_at_once(tmp_path, source):
    started = time.monotonic()
    done = run_cli(["run", source, "--model", "missing.onnx"], cwd=tmp_path, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"fcn-edge run: {source.split(' ')[0]}")
    assert "needs an OpenCV built with GStreamer" in lines[0]
    assert "apt install python3-opencv gstreamer1.0-plugins-good" in lines[0]
    assert time.monotonic() - started < 30


def _system_gstreamer() -> str | None:
    """Why /usr/bin/python3 cannot read GStreamer through OpenCV, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"no {SYSTEM_PYTHON}"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import cv2; print(cv2.videoio_registry"
                            ".hasBackend(cv2.CAP_GSTREAMER))"], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "True":
        return (f"{SYSTEM_PYTHON} has no OpenCV with GStreamer (Debian: apt install "
                f"python3-opencv gstreamer1.0-plugins-base): {probe.stderr.strip()[-200:]}")
    return None


_SYSTEM_READER = r"""
import json, sys, time
from fcn_edge.runtime.sources import open_source
results = []
for spec, live, timeout, most in json.loads(sys.argv[1]):
    started = time.monotonic()
    try:
        with open_source(spec, live=live, reconnect_timeout=timeout,
                         log=lambda line: None) as source:
            frames = [f.image.shape for f, _ in zip(source, range(most))]
            results.append({"frames": len(frames), "shapes": sorted(set(map(str, frames))),
                            "kind": source.kind, "description": source.description})
    except Exception as exc:
        results.append({"error": type(exc).__name__, "message": str(exc)})
    results[-1]["seconds"] = time.monotonic() - started
print(json.dumps(results))
"""


def _read_with_system_opencv(cases: list) -> list[dict]:
    why = _system_gstreamer()
    if why:
        pytest.skip(why)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([SYSTEM_PYTHON, "-c", _SYSTEM_READER, json.dumps(cases)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_gstreamer_pipeline_through_open_source_for_real():
    frames, ends = _read_with_system_opencv([
        ["gst:videotestsrc num-buffers=12 ! video/x-raw,width=80,height=60", False, 5, 100],
        ["videotestsrc num-buffers=5 pattern=ball ! video/x-raw,width=32,height=24,"
         "framerate=30/1 ! videoconvert ! video/x-raw,format=BGR ! appsink", False, 5, 100]])
    # every frame, in order, when not live (the appsink added keeps them all)
    assert frames["frames"] == 12 and frames["shapes"] == ["(60, 80, 3)"], frames
    assert frames["kind"] == "pipeline" and frames["description"].startswith("gst:videotestsrc")
    assert ends["frames"] == 5 and ends["shapes"] == ["(24, 32, 3)"], ends


def test_a_live_gstreamer_pipeline_keeps_coming():
    live, = _read_with_system_opencv([
        ["gst:videotestsrc is-live=true ! video/x-raw,width=40,height=30,framerate=60/1", None,
         5, 20]])
    assert live["frames"] == 20 and live["shapes"] == ["(30, 40, 3)"], live
    assert live["seconds"] < 10


def test_gstreamer_sources_that_cannot_start_are_one_line_quickly_never_a_hang():
    csi, missing, hangs = _read_with_system_opencv([
        ["csi://0", None, 30, 1], ["gst:nosuchsrc ! videoconvert", None, 30, 1],
        # appsrc never sends a frame: OpenCV's open waits for it forever
        ["gst:appsrc ! videoconvert", None, 1, 1]])
    assert csi["error"] == "InputError" and csi["seconds"] < 5, csi
    assert csi["message"] == ("csi://0: GStreamer has no element nvarguscamerasrc, nvvidconv; "
                              "CSI cameras need a Jetson's nvarguscamerasrc and nvvidconv "
                              "(L4T/JetPack)")
    assert missing["error"] == "InputError" and "no element nosuchsrc" in missing["message"]
    assert missing["seconds"] < 5
    assert hangs["error"] == "InputError" and hangs["seconds"] < 10, hangs
    assert "GStreamer could not start the pipeline (its open did not return within 3 s)" in \
        hangs["message"] and "gst-launch-1.0 appsrc ! videoconvert" in hangs["message"]


# --- the camera absent -----------------------------------------------------------------------

@pytest.mark.skipif(Path("/dev/video7").exists(), reason="this machine has a /dev/video7")
@pytest.mark.parametrize("args, line", [
    (["v4l2:///dev/video7"], "fcn-edge run: /dev/video7: no such camera device; "),
    (["--camera", "7"], "fcn-edge run: camera 7: there is no /dev/video7; "),
    (["v4l2:///dev/video7", "--input-width", "640", "--input-height", "480", "--input-codec",
      "MJPG"], "fcn-edge run: /dev/video7: no such camera device; "),
])
def test_an_absent_camera_is_one_line_listing_the_cameras(tmp_path, args, line):
    started = time.monotonic()
    done = run_cli(["run", "--model", "missing.onnx", *args], cwd=tmp_path, timeout=60)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), done.stderr
    cameras = sorted(str(p) for p in Path("/dev").glob("video*"))
    assert lines[0].endswith(f"cameras here: {', '.join(cameras)}" if cameras
                             else "no /dev/video* cameras are connected")
    assert time.monotonic() - started < 30


def test_backend_unavailable_is_the_error_class():
    if cap.gstreamer_available():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(BackendUnavailable, match="needs an OpenCV built with GStreamer"):
        open_source("csi://0")
