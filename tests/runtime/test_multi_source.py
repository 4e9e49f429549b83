"""Several sources through one model (``runtime/multi.py``, ``runtime/multi_run.py``): real
videos, image folders and a real MJPEG stream on 127.0.0.1 that stalls or drops, batched into
one real ONNX Runtime call per step; each source's outputs, statistics and fairness."""
from __future__ import annotations

import http.server
import json
import signal
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.data import read_palette_png
from fcn_edge.errors import InputError
from fcn_edge.runtime.backends import open_backend
from fcn_edge.runtime.multi import run_sources
from fcn_edge.runtime.multi_run import source_name
from fcn_edge.runtime.run import RunConfig, run
from fcn_edge.runtime.segmenter import Segmenter
from fcn_edge.runtime.sinks import Result
from fcn_edge.runtime.sources import Frame, Source, open_source

from faults import ChildOutput, run_cli, start_cli
from support import numbered_frame, read_video, write_numbered_video


@pytest.fixture(scope="module")
def model(onnx_artifact) -> Path:
    return onnx_artifact("rawio_argmax")


@pytest.fixture()
def segmenter(model):
    backend = open_backend(model, "onnxruntime:cpu", threads=1)
    with Segmenter(backend) as seg:
        yield seg
    backend.close()


class Recorder:
    """A sink keeping each frame's index, source and arrival time, and its labels."""

    needs_overlay = False

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.sources: set[int] = set()
        self.times: list[float] = []
        self.labels: list[np.ndarray] = []
        self.closed = False

    def write(self, result: Result) -> None:
        self.indices.append(result.frame.index)
        self.sources.add(result.frame.source)
        self.times.append(time.perf_counter())
        self.labels.append(result.labels)

    def close(self) -> None:
        self.closed = True


def _threads_left() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fcn-edge-")]


# --- a real MJPEG stream on 127.0.0.1 -----------------------------------------------------------

class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    """``server.plan``: one entry per connection, (frames to send, then "stall" | "close");
    connections past the plan get a 404. Frames are ``numbered_frame``s at ``server.fps``."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server = self.server
        with server.lock:
            turn = server.connections
            server.connections += 1
        if turn >= len(server.plan):
            self.send_error(404, "Not Found")
            return
        frames, then = server.plan[turn]
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            for _ in range(frames):
                ok, jpeg = cv2.imencode(".jpg", numbered_frame(server.sent))
                data = jpeg.tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d"
                                 b"\r\n\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                server.sent += 1
                time.sleep(1 / server.fps)
            if then == "stall":  # silent, with the connection open, until the test ends
                server.release.wait(30)
        except OSError:  # the reader went away
            pass
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def mjpeg_server():
    """``start(plan, fps)`` → the stream's URL; the server stops at the test's end."""
    servers = []

    def start(plan, fps: float = 20.0) -> str:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MjpegHandler)
        httpd.daemon_threads = True
        httpd.plan, httpd.fps, httpd.sent, httpd.connections = plan, fps, 0, 0
        httpd.lock, httpd.release = threading.Lock(), threading.Event()
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/cam.mjpg"

    yield start
    for httpd in servers:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()


# --- files: every frame, per-source outputs, batches > 1 --------------------------------------

def test_files_are_batched_into_one_call_and_each_source_gets_its_own_frames(tmp_path,
                                                                            segmenter):
    counts = (30, 20, 12)
    sources = [open_source(write_numbered_video(tmp_path / f"v{i}.mp4", n))
               for i, n in enumerate(counts)]
    recorders = [Recorder() for _ in counts]
    stats = run_sources(sources, segmenter, [[r] for r in recorders])
    for i, (recorder, n) in enumerate(zip(recorders, counts)):
        assert recorder.indices == list(range(n)) and recorder.closed  # every frame, in order
        assert recorder.sources == {i}
        assert stats.sources[i].frames == stats.sources[i].captured == n
        assert stats.sources[i].dropped == 0 and stats.sources[i].fps > 0
        assert stats.sources[i].latency_ms["end_to_end"]["count"] == n
    assert stats.frames == sum(counts) and not stats.interrupted
    # Real calls on the real backend: one per batch, and most batches hold several frames.
    calls = sum(stats.batches.values())
    assert segmenter.stats.inferences == calls < sum(counts)
    assert sum(n * c for n, c in stats.batches.items()) == sum(counts)
    assert stats.batches.get(3, 0) >= 10 and max(stats.batches) == 3
    assert stats.latency_ms["infer"]["count"] == sum(counts)
    # A batched frame's labels are the frame's own.
    frame = read_video(tmp_path / "v1.mp4")[7]
    assert np.array_equal(recorders[1].labels[7], segmenter(frame))
    assert not _threads_left()


def test_run_writes_a_folder_of_overlays_masks_and_stats_per_source(tmp_path, model):
    videos = [str(write_numbered_video(tmp_path / name, n))
              for name, n in (("street.mp4", 14), ("yard.mp4", 9))]
    images = tmp_path / "frames"
    images.mkdir()
    for i in range(5):
        cv2.imwrite(str(images / f"img{i}.png"), numbered_frame(i))
    messages: list[str] = []
    stats = run(RunConfig(model=str(model), sources=(*videos, str(images)),
                          output=f"{tmp_path}/out/", save_masks=str(tmp_path / "masks"),
                          stats=str(tmp_path / "s.json"), threads=1, progress_every=0),
                log=messages.append)
    names = ["0-street", "1-yard", "2-frames"]
    for name, n in zip(names, (14, 9, 5)):
        assert len(list((tmp_path / "out" / name).glob("*.jpg"))) == n
        assert len(list((tmp_path / "masks" / name).glob("*.png"))) == n
    mask = read_palette_png(tmp_path / "masks" / "2-frames" / "img3.png")[0]
    with Segmenter(str(model), "onnxruntime:cpu") as seg:
        assert np.array_equal(mask, seg(numbered_frame(3)))
    data = json.loads((tmp_path / "s.json").read_text())
    figures = data["fcn_edge_run"]
    assert figures["frames"] == 28 and [s["frames"] for s in figures["sources"]] == [14, 9, 5]
    assert stats.frames == 28  # the returned statistics are the file's
    assert [s["source"] for s in figures["sources"]] == [*videos, str(images)]
    for s in figures["sources"]:
        assert {"fps", "dropped", "reconnects"} <= set(s)
        assert s["latency_ms"]["end_to_end"]["p50"] <= s["latency_ms"]["end_to_end"]["p99"]
    assert sum(int(n) * c for n, c in figures["batches"].items()) == 28
    assert data["config"]["sources"] == [*videos, str(images)]
    for i, n in enumerate((14, 9, 5)):  # the end summary: a line per source
        assert any(m.startswith(f"source {i} ") and f": {n} frames" in m
                   for m in "\n".join(messages).splitlines())


def test_a_name_with_source_writes_a_video_per_source(tmp_path, model):
    videos = [str(write_numbered_video(tmp_path / f"cam{i}.mp4", n)) for i, n in enumerate((8, 5))]
    run(RunConfig(model=str(model), sources=tuple(videos),
                  output=str(tmp_path / "out" / "{source}.mp4"), progress_every=0),
        log=lambda m: None)
    assert len(read_video(tmp_path / "out" / "0-cam0.mp4")) == 8
    assert len(read_video(tmp_path / "out" / "1-cam1.mp4")) == 5


class Overlays:
    """A sink that keeps each overlay with its frame and labels."""

    needs_overlay = True

    def __init__(self) -> None:
        self.kept: list[Result] = []

    def write(self, result: Result) -> None:
        self.kept.append(result)

    def close(self) -> None:
        pass


def test_overlays_are_drawn_with_the_single_source_options_legend_included(tmp_path,
                                                                           segmenter):
    sources = [open_source(write_numbered_video(tmp_path / f"v{i}.mp4", 4, size=(192, 256)))
               for i in range(2)]  # big enough for a legend (tiny frames get none)
    sinks = [Overlays(), Overlays()]
    run_sources(sources, segmenter, [[s] for s in sinks], alpha=0.3, legend=True)
    for sink in sinks:
        assert len(sink.kept) == 4
        for result in sink.kept:
            expected = segmenter.overlay(result.frame.image, result.labels, alpha=0.3,
                                         legend=True)
            assert np.array_equal(result.overlay, expected)
        plain = segmenter.overlay(sink.kept[0].frame.image, sink.kept[0].labels, alpha=0.3)
        assert not np.array_equal(sink.kept[0].overlay, plain)  # the legend is there


def test_one_live_view_serves_a_stream_per_source(tmp_path, model):
    cameras = tuple(str(write_numbered_video(tmp_path / f"cam{i}.mp4", 40, fps=20))
                    for i in range(2))
    messages: list[str] = []
    config = RunConfig(model=str(model), sources=cameras, live=True, serve="127.0.0.1:0",
                       threads=1, progress_every=0)
    runner = threading.Thread(target=run, args=(config, messages.append))
    runner.start()
    deadline = time.monotonic() + 30
    while not any(m.startswith("live view: ") for m in messages) and time.monotonic() < deadline:
        time.sleep(0.02)
    url = next(m for m in messages if m.startswith("live view: "))[len("live view: "):]
    time.sleep(0.5)  # frames flow
    with urllib.request.urlopen(url + "stats.json", timeout=10) as answer:
        figures = json.loads(answer.read())
    with urllib.request.urlopen(url + "stream/1.mjpg", timeout=10) as answer:
        head = answer.read(4096)
    runner.join(60)
    assert not runner.is_alive()
    assert [s["name"] for s in figures["streams"]] == list(cameras), figures
    assert all(s["frames"] > 0 for s in figures["streams"]), figures
    assert b"\xff\xd8" in head  # a JPEG of source 1's stream
    assert sum(m.startswith("live view: ") for m in messages) == 1  # one server for both


def test_source_names_are_readable_and_never_hold_a_password(tmp_path):
    (tmp_path / "frames").mkdir()
    assert source_name(0, str(tmp_path / "street.v2.mp4")) == "0-street.v2"
    assert source_name(1, "3") == "1-camera3"
    assert source_name(2, "rtsp://admin:secret@10.0.0.5:554/live/main") == "2-main"
    assert source_name(3, f"{tmp_path}/frames/") == "3-frames"
    assert source_name(4, f"{tmp_path}/frames/*.png") == "4-frames"
    # a CSI sensor and a pipeline are named by what they are, not by their text's tail
    assert source_name(5, "csi://1") == "5-csi1"
    assert source_name(6, "gst:v4l2src device=/dev/video1 ! image/jpeg ! jpegdec") == "6-v4l2src"
    assert source_name(7, "videotestsrc pattern=ball ! video/x-raw,width=64") == "7-videotestsrc"


# --- live sources: a stall, a drop, fairness ----------------------------------------------------

def test_a_stalled_stream_never_stalls_the_other_source(tmp_path, segmenter, mjpeg_server):
    # Source 0 sends 10 frames, then stalls with its connection open; source 1 is a camera
    # stand-in (a live file at 25 fps for 3 s). Source 1 must keep its rate through the stall.
    url = mjpeg_server([(10, "stall")], fps=20)
    stream = open_source(url, reconnect_timeout=1.5, backoff=0.2, log=lambda m: None)
    camera = open_source(write_numbered_video(tmp_path / "cam.mp4", 75, fps=25), live=True)
    recorders = [Recorder(), Recorder()]
    started = time.perf_counter()
    stats = run_sources([stream, camera], segmenter, [[r] for r in recorders])
    elapsed = time.perf_counter() - started
    assert 1 <= stats.sources[0].frames <= 10
    healthy = stats.sources[1]
    assert healthy.frames + healthy.dropped == 75 and healthy.frames >= 60, healthy.summary()
    assert healthy.fps >= 0.8 * 25, healthy.summary()          # its own rate, stall or not
    gaps = np.diff(recorders[1].times)
    assert gaps.max() < 0.5, gaps.max()                        # never held by the stall
    assert stats.batches.get(2, 0) >= 1                        # batched while both sent
    assert elapsed < 15 and not _threads_left()                # the stalled source ended too


def test_a_stream_that_drops_reconnects_while_the_others_go_on(tmp_path, segmenter,
                                                              mjpeg_server):
    url = mjpeg_server([(8, "close"), (8, "close")], fps=20)
    messages: list[str] = []
    stream = open_source(url, reconnect_timeout=1.0, backoff=0.1, log=messages.append)
    video = open_source(write_numbered_video(tmp_path / "v.mp4", 40))
    recorders = [Recorder(), Recorder()]
    stats = run_sources([stream, video], segmenter, [[r] for r in recorders])
    assert stats.sources[0].reconnects >= 1 and stats.reconnects >= 1
    assert any("reconnected" in m for m in messages), messages
    assert stats.sources[0].frames > 8                         # frames after the reconnection
    assert recorders[1].indices == list(range(40))            # the file lost nothing


class _FailingSource(Source):
    """Three frames, then a failure: ``device`` — the source's own error; ``frame`` — a frame
    the model refuses (no pixels), an error of the shared inference stage."""

    def __init__(self, how: str) -> None:
        super().__init__("broken" if how == "device" else "empty", live=False, log=None)
        self.how = how

    def __iter__(self):
        for i in range(3):
            yield Frame(i, numbered_frame(i), time.perf_counter(), str(i))
        if self.how == "device":
            raise OSError("device vanished")
        yield Frame(3, np.zeros((0, 0, 3), np.uint8), time.perf_counter(), "3")


def test_a_failing_source_stops_alone_and_its_error_comes_at_the_end(tmp_path, segmenter):
    video = open_source(write_numbered_video(tmp_path / "v.mp4", 30))
    recorders = [Recorder(), Recorder()]
    messages: list[str] = []
    with pytest.raises(OSError, match="device vanished"):
        run_sources([_FailingSource("device"), video], segmenter, [[r] for r in recorders],
                    log=messages.append)
    assert recorders[1].indices == list(range(30))            # the other finished
    assert all(r.closed for r in recorders) and not _threads_left()
    assert any(m.startswith("source 0 broken stopped: device vanished") for m in messages)


def test_a_model_error_stops_every_source(tmp_path, segmenter):
    camera = open_source(write_numbered_video(tmp_path / "cam.mp4", 250, fps=25), live=True)
    recorders = [Recorder(), Recorder()]
    started = time.perf_counter()
    with pytest.raises(InputError):
        run_sources([_FailingSource("frame"), camera], segmenter, [[r] for r in recorders])
    assert time.perf_counter() - started < 5          # not the camera's 10 s
    assert all(r.closed for r in recorders) and not _threads_left()


def test_a_stop_event_ends_every_source(tmp_path, segmenter):
    stop = threading.Event()
    sources = [open_source(write_numbered_video(tmp_path / f"v{i}.mp4", 60, fps=30), live=True)
               for i in range(2)]
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    stats = run_sources(sources, segmenter, [[Recorder()], [Recorder()]], stop=stop)
    assert stats.interrupted and 0 < stats.frames < 120 and not _threads_left()


# --- the bounds: max batch, batch timeout, an artifact of batch 1 -----------------------------

def test_max_batch_bounds_every_call_and_each_source_gets_its_turn(tmp_path, segmenter):
    sources = [open_source(write_numbered_video(tmp_path / f"v{i}.mp4", 12)) for i in range(3)]
    recorders = [Recorder() for _ in range(3)]
    stats = run_sources(sources, segmenter, [[r] for r in recorders], max_batch=2)
    assert set(stats.batches) <= {1, 2} and stats.batches[2] >= 15
    assert all(r.indices == list(range(12)) for r in recorders)
    # Turns rotate: no source waited for the other two to finish.
    ends = sorted(r.times[-1] for r in recorders)
    assert ends[-1] - ends[0] < 0.5 * (ends[-1] - min(r.times[0] for r in recorders))


@pytest.mark.parametrize("timeout", [0.0, 0.5])
def test_the_batch_timeout_bounds_the_wait_for_a_late_source(tmp_path, segmenter, timeout):
    # A camera at 10 fps and a file: with no timeout the file never waits for the camera;
    # with one, each batch waits for the camera's next frame (well within 0.5 s).
    camera = open_source(write_numbered_video(tmp_path / "cam.mp4", 15, fps=10), live=True)
    video = open_source(write_numbered_video(tmp_path / "v.mp4", 15))
    stats = run_sources([camera, video], segmenter, [[Recorder()], [Recorder()]],
                        batch_timeout=timeout)
    assert stats.sources[1].frames == 15
    if timeout == 0:
        assert stats.sources[1].seconds < 0.6 * stats.sources[0].seconds, stats.summary()
    else:
        assert stats.batches.get(2, 0) >= 12, stats.batches
        assert stats.sources[1].seconds > 1.0


def test_an_artifact_of_batch_one_runs_a_call_per_frame_and_says_so(tmp_path, onnx_artifact):
    backend = open_backend(onnx_artifact("small_profile"), "onnxruntime:cpu", threads=1)
    messages: list[str] = []
    with Segmenter(backend, profile="artifact") as seg:
        sources = [open_source(write_numbered_video(tmp_path / f"v{i}.mp4", 6)) for i in range(3)]
        recorders = [Recorder() for _ in range(3)]
        stats = run_sources(sources, seg, [[r] for r in recorders], log=messages.append)
        assert seg.stats.inferences == 18 and stats.frames == 18
    backend.close()
    assert all(r.indices == list(range(6)) for r in recorders)
    said = [m for m in messages if "at most 1 frame per call" in m]
    assert len(said) == 1 and "3 calls" in said[0] and "--shapes" in said[0]


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"output": "out.mp4"}, r"--output .*out.mp4 is one video but 2 sources are given: give a "
                            r"folder \(--output .*out/.*\{source\}"),
    ({"output": "one.png"}, "is one image but 2 sources"),
    ({"camera": 0}, "exactly one of SOURCE or --camera"),
    ({"source": "x.mp4"}, "exactly one of SOURCE or --camera"),
    ({"inputs": (("depth", "d/"),)}, "--depth works with one source"),
    ({"max_batch": 0}, "--max-batch must be an integer from 1 to 1024"),
    ({"batch_timeout": -1.0}, "--batch-timeout must be a number from 0 to 60000"),
])
def test_bad_combinations_are_refused_in_one_line(tmp_path, model, changes, message):
    videos = tuple(str(write_numbered_video(tmp_path / f"v{i}.mp4", 3)) for i in range(2))
    settings = {"model": str(model), "sources": videos, "progress_every": 0, **changes}
    if "output" in changes:
        settings["output"] = str(tmp_path / changes["output"])
    with pytest.raises(InputError, match=message) as info:
        run(RunConfig(**settings), log=lambda m: None)
    assert len(str(info.value).splitlines()) == 1
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob("one*"))


def test_the_command_line_runs_several_sources_in_a_child_process(tmp_path, model):
    videos = [str(write_numbered_video(tmp_path / f"v{i}.mp4", n)) for i, n in enumerate((10, 6))]
    done = run_cli(["run", *videos, "--model", model, "--output", f"{tmp_path}/out/",
                    "--max-batch", "2", "--batch-timeout", "5", "--stats", tmp_path / "s.json",
                    "--progress-every", "0"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out" / "0-v0").glob("*.jpg"))) == 10
    assert len(list((tmp_path / "out" / "1-v1").glob("*.jpg"))) == 6
    assert "2 sources in batches of up to 2 frames" in done.stdout
    assert any(line.startswith("source 1 ") and ": 6 frames" in line
               for line in done.stdout.splitlines()), done.stdout
    figures = json.loads((tmp_path / "s.json").read_text())["fcn_edge_run"]
    assert [s["frames"] for s in figures["sources"]] == [10, 6]
    refused = run_cli(["run", *videos, "--model", model, "--output", tmp_path / "o.mp4"],
                      cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"fcn-edge run: --output {tmp_path / 'o.mp4'} is one video but 2 sources")


def test_ctrl_c_ends_every_source_with_playable_videos(tmp_path, model):
    cameras = [str(write_numbered_video(tmp_path / f"cam{i}.mp4", 600, fps=25)) for i in range(2)]
    child = start_cli(["run", *cameras, "--live", "--model", model, "--output",
                       tmp_path / "{source}.mp4", "--progress-every", "0.2"], cwd=tmp_path)
    output = ChildOutput(child)
    output.wait_for(r"^  \d+ frames, ")  # a progress line: frames are being written
    child.send_signal(signal.SIGINT)
    code, out, err = output.finish()
    assert code == 130 and "Traceback" not in err, err
    for i in range(2):  # each source's video finished, renamed and playable
        assert 0 < len(read_video(tmp_path / f"{i}-cam{i}.mp4")) < 600
    assert not list(tmp_path.glob(".*partial*"))
    assert "(interrupted)" in out
