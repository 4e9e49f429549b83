"""``fcn-edge run --serve``: the live view, read by plain HTTP clients on 127.0.0.1 while a real
model runs over a real video file standing in for a camera (``live``: paced at its frame rate).
The browser test is in test_serve_browser.py."""
from __future__ import annotations

import json
import socket
import time
import urllib.error

import numpy as np
import pytest

from fcn_edge.cli import main
from fcn_edge.errors import InputError
from fcn_edge.runtime.run import RunConfig
from fcn_edge.runtime.serve import LiveView, check_address, parse_address
from fcn_edge.runtime.sinks import Result
from fcn_edge.runtime.sources import Frame

from support_serve import MjpegReader, get, live_video, refused, running


def test_addresses_are_parsed_and_bad_ones_refused_in_one_line():
    assert parse_address("8090") == ("127.0.0.1", 8090)
    assert parse_address("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_address("[::1]:8090") == ("::1", 8090)
    for text, message in [
            ("70000", "--serve 70000: the port must be an integer from 0 to 65535"),
            ("web", "--serve web: the port must be an integer"),
            ("::1:8090", r"put an IPv6 address in brackets, e.g. \[::1\]:8090"),
            ("[::1]", r"give an IPv6 address as \[ADDRESS\]:PORT"),
            (":8090", "give HOST:PORT, or PORT alone for 127.0.0.1"),
            ("no-such-host.invalid:0", "cannot listen there: no such host"),
            ("192.0.2.1:0", "192.0.2.1 is not an address of this machine")]:
        with pytest.raises(InputError, match=message):
            check_address(text)


def test_a_port_in_use_is_one_line_before_the_model_loads(onnx_artifact, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["run", live_video(tmp_path / "in.avi", frames=3), "--model",
                     str(onnx_artifact("rawio_argmax")), "--serve", str(port)])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.strip() == (f"fcn-edge run: --serve {port}: cannot listen there: port {port} is "
                           f"in use; choose another port, or 0 for any free one")
    assert "fcn-edge run:" not in out  # the model was never opened


def test_the_page_figures_and_several_streams_while_a_run_goes(onnx_artifact, tmp_path):
    from fcn_edge.data import PROCEDURAL_CLASSES, voc_palette

    config = RunConfig(str(onnx_artifact("rawio_argmax")), live_video(tmp_path / "in.avi"),
                       live=True, serve="0", progress_every=0)
    with running(config) as view:
        page = get(view.url).decode()
        for name, (r, g, b) in zip(PROCEDURAL_CLASSES, voc_palette(len(PROCEDURAL_CLASSES))):
            assert f'data-rgb="{r},{g},{b}" style="background: rgb({r}, {g}, {b})"></span>' \
                   f'{name}</li>' in page
        assert '<img class="stream" id="stream-0"' in page and 'src="/stream.mjpg"' in page
        readers = [MjpegReader(view.port) for _ in range(3)]
        first = json.loads(get(view.url + "stats.json"))
        while first["frames"] == 0 and view.thread.is_alive():  # the first frame is coming
            first = json.loads(get(view.url + "stats.json"))
        time.sleep(1.0)
        second = json.loads(get(view.url + "stats.json"))
        view.thread.join(30)  # to the video's end
    assert second["frames"] > first["frames"] > 0 and second["uptime"] > first["uptime"]
    assert second["viewers"] == 3 and second["running"]
    stream = second["streams"][0]
    assert stream["name"] == config.source and stream["fps"] > 0
    assert {"capture", "infer", "write"} <= set(stream["latency_p50_ms"])
    assert stream["encoded"] <= stream["frames"]  # once per frame, however many watch
    for reader in readers:
        reader.join(10)  # the run's end closes every stream
        assert not reader.is_alive()
        assert b"multipart/x-mixed-replace; boundary=fcn-edge-frame" in reader.header
        assert len(reader.frames) >= 3
        assert all(f is not None and f.shape == (96, 128, 3) for f in reader.frames)
    assert view.stats.frames >= 20 and not view.stats.interrupted
    assert refused(view.port)  # the server stopped with the run


def test_a_viewer_that_reads_nothing_never_slows_the_run(onnx_artifact, tmp_path):
    video, model = live_video(tmp_path / "in.avi", frames=30), str(onnx_artifact("rawio_argmax"))
    config = RunConfig(model, video, live=True, serve="0", progress_every=0)
    with running(config) as alone:
        alone.thread.join(30)
    with running(config) as view:
        stalled, watching = MjpegReader(view.port, stalled=True), MjpegReader(view.port)
        started = time.monotonic()
        view.thread.join(30)
    assert time.monotonic() - started < 10  # 3 s of video
    assert view.stats.frames >= alone.stats.frames - 3, (view.stats, alone.stats)
    watching.join(10)
    assert len(watching.frames) >= view.stats.frames // 2  # the other viewer kept getting them
    assert refused(view.port)
    stalled.close()


def test_interrupting_the_run_stops_the_server(onnx_artifact, tmp_path):
    config = RunConfig(str(onnx_artifact("rawio_argmax")),
                       live_video(tmp_path / "in.avi", frames=100), live=True, serve="0",
                       progress_every=0)
    with running(config) as view:
        reader = MjpegReader(view.port)
        time.sleep(1.0)
        view.stop.set()
        view.thread.join(15)
    assert view.stats.interrupted and view.stats.frames < 100
    reader.join(5)
    assert not reader.is_alive() and reader.frames and refused(view.port)


def _result(image: np.ndarray, index: int) -> Result:
    return Result(Frame(index, image, time.perf_counter(), f"{index:06d}"), None, image)


def test_a_stalled_viewer_is_dropped_and_writes_never_wait(tmp_path):
    """Large frames fill a viewer's socket that reads nothing; the sink's write stays a
    reference swap, the viewer is dropped after send_timeout, and close is bounded."""
    lines: list[str] = []
    view = LiveView(("127.0.0.1", 0), legend=[("road", (128, 64, 128))], log=lines.append,
                    send_timeout=0.5, close_timeout=3.0)
    sink = view.sink(0, "noise")
    assert lines == [f"live view: http://127.0.0.1:{view.port}/"]
    stalled, watching = MjpegReader(view.port, stalled=True), MjpegReader(view.port)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
    slowest = 0.0
    for i in range(60):
        started = time.perf_counter()
        sink.write(_result(images[i % 4], i))
        slowest = max(slowest, time.perf_counter() - started)
        time.sleep(1 / 30)
    figures = view.figures()["streams"][0]
    assert slowest < 0.05, slowest
    assert figures["dropped_viewers"] == 1 and figures["viewers"] == 1, figures
    assert len(watching.frames) >= 10
    late = MjpegReader(view.port, stalled=True)  # still connected when the view closes
    time.sleep(0.3)
    started = time.monotonic()
    sink.close()  # the last sink: the server stops
    assert time.monotonic() - started < 3.0
    assert refused(view.port)
    for reader in (stalled, watching, late):
        reader.close()


def test_streams_are_named_and_numbered_for_several_sources():
    view = LiveView(("127.0.0.1", 0), log=lambda line: None)
    sinks = [view.sink(0, "front"), view.sink(1, "back")]
    with pytest.raises(InputError, match="expected stream 2, got 5"):
        view.sink(5, "side")
    page = get(view.url).decode()
    assert 'src="/stream.mjpg"' in page and 'src="/stream/1.mjpg"' in page
    assert "<b>front</b>" in page and "<b>back</b>" in page
    image = np.full((8, 8, 3), 200, np.uint8)
    sinks[1].write(_result(image, 0))
    reader = MjpegReader(view.port, "/stream/1.mjpg")
    time.sleep(0.3)
    sinks[1].write(_result(image, 1))
    deadline = time.monotonic() + 5
    while not reader.frames and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.frames and reader.frames[0].shape == (8, 8, 3)
    with pytest.raises(urllib.error.HTTPError, match="404"):
        get(view.url + "stream/2.mjpg")
    sinks[0].close()
    assert not refused(view.port)  # one stream still open
    sinks[1].close()
    assert refused(view.port)
    reader.close()


def test_a_view_reachable_from_the_network_says_so():
    lines: list[str] = []
    view = LiveView(("0.0.0.0", 0), log=lines.append)
    view.close()
    assert lines[1] == ("--serve 0.0.0.0: the live view is reachable from the network, with no "
                        "authentication; give 127.0.0.1:PORT to keep it on this machine")
    assert refused(view.port)


def test_close_ends_a_viewer_blocked_in_a_send_at_once(tmp_path):
    """A viewer stuck in a send (it reads nothing, the frame is larger than the socket
    buffers) with a long send_timeout: close() still returns at once, its thread joined."""
    view = LiveView(("127.0.0.1", 0), log=lambda line: None, send_timeout=60,
                    close_timeout=30)
    sink = view.sink(0, "noise")
    image = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    stalled = MjpegReader(view.port, stalled=True)
    deadline = time.monotonic() + 10
    while view.figures()["viewers"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    for i in range(8):  # ~2 MB of JPEG each: the sends fill the socket buffers, then block
        sink.write(_result(image, i))
        time.sleep(0.3)
    assert view.figures()["streams"][0]["encoded"] < 8  # the viewer stopped taking frames
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 3.0
    assert not view._clients and refused(view.port)
    stalled.close()


def test_an_ipv6_view_serves_its_page():
    try:
        check_address("[::1]:0")
    except InputError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    view = LiveView(("::1", 0), log=lambda line: None)
    try:
        assert view.url == f"http://[::1]:{view.port}/"
        assert b"<title>fcn-edge</title>" in get(view.url)
    finally:
        view.close()


def test_sigterm_to_a_cli_run_stops_its_server(onnx_artifact, tmp_path):
    """``fcn-edge run --serve 0`` in a child process: the URL line comes first, a viewer gets
    frames, and SIGTERM ends the run (exit 143) with the stream closed and the port free."""
    import signal

    from faults import ChildOutput, assert_stopped_by, start_cli

    child = start_cli(["run", live_video(tmp_path / "in.avi", frames=300), "--live", "--model",
                       onnx_artifact("rawio_argmax"), "--serve", "0", "--progress-every", "0"])
    output = ChildOutput(child)
    port = int(output.wait_for(r"^live view: http://127\.0\.0\.1:\d+/$").strip()
               .rsplit(":", 1)[1].strip("/"))
    assert output.out[0].startswith("live view: ")  # the first line the run prints
    reader = MjpegReader(port)
    deadline = time.monotonic() + 60
    while len(reader.frames) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    code, out, err = output.finish(60)
    assert_stopped_by(signal.SIGTERM, "run", code, err)
    reader.join(10)
    assert not reader.is_alive() and len(reader.frames) >= 3 and refused(port)
