"""``fcn-edge run`` against faults real deployments send, with real files, real file systems
and the real CLI in a child process: outputs that cannot be written (refused before the model
loads), an output name that is no known kind, out-of-range settings, unreadable images (named),
a disk that fills while the video is written (one line, no partial video left), and leftovers
of unfinished writes that ``run`` without ``--model`` must not pick up."""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.cli.run import _latest_artifact
from fcn_edge.errors import InputError
from fcn_edge.runtime.run import RunConfig, run

from faults import limit_file_size, read_only_folder, run_cli, small_filesystem
from support import numbered_frame, read_video, write_numbered_video, write_video


@pytest.fixture(scope="module")
def model(onnx_artifact) -> Path:
    return onnx_artifact("plain")


def _one_error_line(done, *needles: str) -> str:
    """The child failed with exit 1 and one ``fcn-edge run:`` line holding every needle."""
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("fcn-edge run:")]
    assert len(ours) == 1 and done.stderr.strip().endswith(ours[0]), done.stderr
    for needle in needles:
        assert needle in ours[0], ours[0]
    return ours[0]


# --- outputs that cannot be written: refused before the model loads --------------------------

@contextlib.contextmanager
def _unwritable(tmp_path: Path, how: str):
    """A folder that cannot be written into: a read-only file system, or a path under a file."""
    if how == "read-only":
        with read_only_folder(tmp_path / "ro") as folder:
            yield folder
    else:
        (tmp_path / "a-file").write_text("not a folder")
        yield tmp_path / "a-file"


@pytest.mark.parametrize("how", ["read-only", "under a file"])
@pytest.mark.parametrize("flag, name", [("--output", "out.mp4"), ("--output", "frames/"),
                                        ("--save-masks", "masks"), ("--stats", "stats.json")])
def test_an_unwritable_output_fails_before_the_work_in_one_line(tmp_path, model, how, flag,
                                                                name):
    # Before: --output claimed that OpenCV cannot encode mp4v, --save-masks and --stats gave
    # tracebacks, --stats only at the end of the run.
    source = write_numbered_video(tmp_path / "in.mp4", 30)
    with _unwritable(tmp_path, how) as folder:
        target = f"{folder}/{name}"
        done = run_cli(["run", source, "--model", model, flag, target, "--progress-every", "0"],
                       cwd=tmp_path)
        line = _one_error_line(done, flag, target.rstrip("/"))
        assert "encode" not in line
        assert "frames in" not in done.stdout  # nothing was processed
        assert not list(tmp_path.glob("*.avi"))


def test_output_with_an_unknown_suffix_is_refused_and_a_slash_makes_a_folder(tmp_path, model):
    source = write_numbered_video(tmp_path / "in.mp4", 3)
    done = run_cli(["run", source, "--model", model, "--output", tmp_path / "out.xyz"])
    _one_error_line(done, "--output", "unknown suffix .xyz", ".mp4", ".avi", ".png",
                    "end it with /")
    assert not (tmp_path / "out.xyz").exists()  # before: silently a folder of overlays
    stats = run(RunConfig(model=str(model), source=str(source),
                          output=f"{tmp_path}/out.xyz/", progress_every=0), log=lambda m: None)
    assert stats.frames == 3 and len(list((tmp_path / "out.xyz").glob("*.jpg"))) == 3


@pytest.mark.parametrize("field, value, flag", [
    ("progress_every", -1.0, "--progress-every"), ("progress_every", math.nan, "--progress-every"),
    ("reconnect_timeout", math.inf, "--reconnect-timeout"),
    ("reconnect_timeout", -1.0, "--reconnect-timeout"),
    ("queue_size", 0, "--queue-size"), ("queue_size", 100_000, "--queue-size"),
    ("threads", 100_000, "--threads"), ("threads", -2, "--threads"),
])
def test_run_settings_out_of_range_name_the_flag_and_the_range(tmp_path, field, value, flag):
    config = RunConfig(model="m.onnx", source=str(tmp_path), **{field: value})
    with pytest.raises(InputError, match=f"^{flag} must be .*(from|≥) .*got") as info:
        config.check()
    assert len(str(info.value).splitlines()) == 1


# --- unreadable images are named ---------------------------------------------------------------

def test_unreadable_images_are_named_in_the_log_and_the_stats(tmp_path, model):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"ok{i}.png"), numbered_frame(i))
    for name in ("broken.png", "empty.jpg", "truncated.png"):
        (images / name).write_bytes(b"" if name == "empty.jpg" else b"\x89PNG\r\n\x1a\nxx")
    messages: list[str] = []
    stats = run(RunConfig(model=str(model), source=str(images), stats=str(tmp_path / "s.json"),
                          progress_every=0), log=messages.append)
    bad = [str(images / n) for n in ("broken.png", "empty.jpg", "truncated.png")]
    assert stats.frames == 2 and stats.skipped == 3 and stats.skipped_files == bad
    for path in bad:
        assert sum(m.startswith(f"skipping {path}:") for m in messages) == 1
    assert any("\nskipped: " + bad[0] in m for m in messages)  # the end summary names them
    figures = json.loads((tmp_path / "s.json").read_text())["fcn_edge_run"]
    assert figures["skipped"] == 3 and figures["skipped_files"] == bad


# --- a disk that fills while the video is written ---------------------------------------------

def _noisy_video(path: Path, frames: int = 60) -> Path:
    """Frames that compress badly, so the overlay video outgrows a small disk quickly."""
    rng = np.random.default_rng(0)
    return write_video(path, (rng.integers(0, 256, (240, 320, 3), np.uint8)
                              for _ in range(frames)))


def _assert_no_video_left(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.suffix in (".mp4", ".avi") or "partial" in
            p.name]
    assert left == [], left  # neither the real name nor the temporary


def test_a_full_disk_while_writing_the_video_is_one_line_and_leaves_no_video(tmp_path, model):
    source = _noisy_video(tmp_path / "in.mp4")
    with small_filesystem(tmp_path / "disk", size="256k") as disk:
        done = run_cli(["run", source, "--model", model, "--output", disk / "out.mp4",
                        "--progress-every", "0"])
        _one_error_line(done, f"--output {disk}/out.mp4", "writing the video failed",
                        "disk is full", "removed")
        _assert_no_video_left(disk)


def test_a_file_size_limit_while_writing_the_video_is_one_line_and_leaves_no_video(tmp_path,
                                                                                   model):
    # RLIMIT_FSIZE makes every write past 150 kB fail (EFBIG), where no disk can be mounted.
    source = _noisy_video(tmp_path / "in.mp4")
    out = tmp_path / "out"
    out.mkdir()
    done = run_cli(["run", source, "--model", model, "--output", out / "out.mp4",
                    "--progress-every", "0"], preexec_fn=limit_file_size(150_000))
    _one_error_line(done, f"--output {out}/out.mp4", "writing the video failed", "removed")
    _assert_no_video_left(out)


def test_a_full_disk_while_writing_overlay_images_and_masks_leaves_only_whole_files(tmp_path,
                                                                                   model):
    # Before: a traceback (OSError from write_bytes) and a truncated last JPEG.
    source = _noisy_video(tmp_path / "in.mp4")
    with small_filesystem(tmp_path / "disk", size="256k") as disk:
        done = run_cli(["run", source, "--model", model, "--output", f"{disk}/frames/",
                        "--save-masks", disk / "masks", "--progress-every", "0"])
        _one_error_line(done, f"{disk}/", "cannot write (No space left on device)")
        written = list((disk / "frames").iterdir()) + list((disk / "masks").iterdir())
        assert written and all(not p.name.startswith(".") for p in written)  # no temporaries
        for path in written:
            assert cv2.imread(str(path)) is not None, path  # every file left is whole


def test_a_video_that_does_not_read_back_whole_is_detected(tmp_path):
    # What OpenCV 4 leaves on a full disk (its write() returns None, not False): a file
    # without its index. close() reads the count back before renaming.
    from fcn_edge.runtime.sinks import _holds_frames

    whole = write_numbered_video(tmp_path / "whole.mp4", 20)
    assert _holds_frames(whole, 20) and not _holds_frames(whole, 40)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert not _holds_frames(cut, 20)


# --- run without --model never picks an unfinished export --------------------------------------

def test_the_newest_export_is_never_a_leftover_of_an_unfinished_write(tmp_path, model, capsys):
    runs = tmp_path / "runs"
    good = runs / "exp1" / "model.onnx"
    good.parent.mkdir(parents=True)
    good.write_bytes(model.read_bytes())
    leftovers = [runs / "exp2" / ".model.onnx.k3j2x9.tmp",   # atomic_path's temporary
                 runs / "exp2" / ".model.onnx",               # a hidden file
                 runs / "exp2" / "empty.onnx",                # created, never written
                 runs / ".trash" / "model.onnx",              # inside a hidden folder
                 runs / "exp3" / ".model.engine.ab12.tmp"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"" if path.name == "empty.onnx" else model.read_bytes()[:100])
        os.utime(path, (good.stat().st_mtime + 60,) * 2)  # all newer than the good one
    assert _latest_artifact(runs) == str(good)
    assert f"model: {good}" in capsys.readouterr().out


def test_ctrl_c_during_a_cli_run_still_leaves_a_playable_video(tmp_path, model):
    import signal
    import time

    from faults import start_cli

    source = write_numbered_video(tmp_path / "in.mp4", 2000, size=(96, 128))
    child = start_cli(["run", source, "--model", model, "--output", tmp_path / "out.mp4",
                       "--progress-every", "0.2"])
    deadline = time.monotonic() + 60
    line = ""
    while not line.startswith("  ") and time.monotonic() < deadline:
        line = child.stdout.readline()  # a progress line: frames are being written
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    frames = read_video(tmp_path / "out.mp4")
    assert 0 < len(frames) < 2000 and "Traceback" not in err
    assert not list(tmp_path.glob(".*partial*"))
