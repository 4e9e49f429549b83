"""SIGTERM and SIGHUP, as ``timeout``, systemd, Docker and Kubernetes send them, stop every
command as Ctrl-C does: outputs finished or abandoned atomically, one line, exit 128 + signal.

Real child processes (``fcn-edge`` via ``python -m``), signalled once they print a known
progress line; the outputs are then opened as a user would open them. Training's signals and
kill -9 are in tests/train/test_train_faults.py.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import cv2
import pytest

from faults import ChildOutput, assert_stopped_by, start_cli
from fcn_edge.cli import StopSignals
from fcn_edge.errors import Terminated
from support import make_checkpoint, write_numbered_video


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("signals") / "model.pt")


def _stop(child: ChildOutput, signum: int, times: int = 1) -> tuple[int, str, str]:
    for _ in range(times):  # a second one while finishing, as an impatient supervisor sends
        child.proc.send_signal(signum)
    return child.finish()


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def test_stop_signals_raise_terminated_in_the_main_thread_and_restore_handlers():
    before, caught, finished = signal.getsignal(signal.SIGTERM), None, False
    with StopSignals() as stop:
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)  # the handler raises in here, at once
            finished = True
        except Terminated as exc:
            caught = exc
        os.kill(os.getpid(), signal.SIGTERM)  # one after the command's own handling ...
        time.sleep(5)
        finished = True
    assert not finished  # ... ends the block too, recorded but not raised out of it
    assert caught.signum == stop.signum == signal.SIGHUP
    assert isinstance(caught, KeyboardInterrupt)  # what survives Ctrl-C survives it
    assert signal.getsignal(signal.SIGTERM) is before

    installed = []
    thread = threading.Thread(target=lambda: installed.append(StopSignals().__enter__()._previous))
    thread.start()
    thread.join()
    assert installed == [{}]  # Python allows handlers in the main thread only: none elsewhere


@pytest.mark.parametrize("signum,times", [(signal.SIGTERM, 1), (signal.SIGHUP, 1),
                                          (signal.SIGTERM, 2)],
                         ids=["SIGTERM", "SIGHUP", "SIGTERM-twice"])
def test_a_signalled_run_leaves_a_playable_video(checkpoint, tmp_path, signum, times):
    """Before: SIGTERM killed the process mid-write, leaving a 44-byte mp4 without a moov."""
    source = write_numbered_video(tmp_path / "in.mp4", 1500)
    out = tmp_path / "out.mp4"
    child = ChildOutput(start_cli(["run", source, "--model", checkpoint, "--output", out,
                                   "--threads", "1", "--progress-every", "0.2"]))
    child.wait_for(r"^\s+\d+ frames, .* fps")
    code, stdout, err = _stop(child, signum, times)
    assert_stopped_by(signum, "run", code, err)
    assert b"moov" in out.read_bytes()
    capture = cv2.VideoCapture(str(out))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = capture.read()
    assert ok and frame.shape == (48, 64, 3) and 0 < frames < 1500
    assert f"wrote {frames} frames to" in stdout and "(interrupted)" in stdout


def test_a_signal_before_the_run_starts_is_one_line(checkpoint):
    # A camera that refuses: the run is still connecting (retrying) when the signal comes.
    child = ChildOutput(start_cli(["run", "rtsp://127.0.0.1:9/stream", "--model", checkpoint,
                                   "--reconnect-timeout", "60"]))
    child.wait_for(r"cannot open; retry")
    code, _, err = _stop(child, signal.SIGTERM)
    assert_stopped_by(signal.SIGTERM, "run", code, err)
    assert "interrupted" not in err  # one line says why it stopped, not two


def test_a_signalled_export_writes_nothing(checkpoint, tmp_path):
    out = tmp_path / "export"
    child = ChildOutput(start_cli(["export", checkpoint, "-o", out, "--fp16"]))
    child.wait_for(r"^fp32 parity")  # verified before written: stop it between the two
    code, _, err = _stop(child, signal.SIGTERM)
    assert_stopped_by(signal.SIGTERM, "export", code, err)
    written = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert written == []


def test_a_signal_during_the_export_write_leaves_whole_files_only(checkpoint, tmp_path):
    out = tmp_path / "export"
    child = ChildOutput(start_cli(["export", checkpoint, "-o", out]))
    while child.proc.poll() is None and not _leftovers(tmp_path):
        time.sleep(0.002)  # until the temporary of model.onnx appears: its write is under way
    code, _, err = _stop(child, signal.SIGTERM, times=2)
    assert _leftovers(tmp_path) == []
    import onnx

    for model in out.glob("*.onnx"):  # finished before the signal landed: then it is whole
        onnx.checker.check_model(str(model))
    if code != 0:
        assert_stopped_by(signal.SIGTERM, "export", code, err)


def test_a_signalled_bench_stops_without_a_report(checkpoint, tmp_path):
    out = tmp_path / "bench"
    child = ChildOutput(start_cli(["bench", checkpoint, "--backends", "torch:cpu",
                                   "--precisions", "fp32", "--io", "plain", "--sizes", "32x32",
                                   "--runs", "100000", "--max-seconds", "120", "--threads", "1",
                                   "--out", out]))
    child.wait_for(r"^torch:cpu fp32 plain 32x32")  # measuring
    code, _, err = _stop(child, signal.SIGHUP)
    assert_stopped_by(signal.SIGHUP, "bench", code, err)
    assert not (out / "bench.json").exists() and _leftovers(tmp_path) == []


def test_a_signalled_demo_stops_cleanly(tmp_path):
    out = tmp_path / "demo"
    child = ChildOutput(start_cli(["demo", "--out", out, "--minutes", "5"]))
    child.wait_for(r"^\[1/7\] data")
    code, _, err = _stop(child, signal.SIGTERM)
    assert_stopped_by(signal.SIGTERM, "demo", code, err)
    assert not (out / "report.md").exists() and _leftovers(tmp_path) == []
