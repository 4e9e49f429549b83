"""`fcn-edge run` from the command line: a real video in, a playable video, masks and stats out."""
from __future__ import annotations

import json
import os
import re

import cv2
import numpy as np

from fcn_edge.cli import main


def _video(path, frames: int = 12, size=(48, 64)) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size[::-1])
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, size + (3,), dtype=np.uint8))
    writer.release()
    return str(path)


def test_run_video_to_video_masks_and_stats(onnx_artifact, tmp_path, capsys):
    source = _video(tmp_path / "in.avi")
    out, masks, stats = tmp_path / "out.mp4", tmp_path / "masks", tmp_path / "stats.json"
    code = main(["run", source, "--model", str(onnx_artifact("rawio_argmax")),
                 "--output", str(out), "--save-masks", str(masks), "--stats", str(stats),
                 "--progress-every", "0"])
    assert code == 0
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    ok, frame = capture.read()
    assert ok and frame.shape == (48, 64, 3)
    assert len(list(masks.glob("*.png"))) == 12
    data = json.loads(stats.read_text())["fcn_edge_run"]
    assert data["frames"] == 12 and data["dropped"] == 0
    assert {"capture", "infer", "write"} <= set(data["latency_ms"])
    assert "frames" in capsys.readouterr().out


def test_run_picks_the_newest_export_when_no_model_is_given(onnx_artifact, tmp_path,
                                                            monkeypatch, capsys):
    runs = tmp_path / "runs" / "x"
    runs.mkdir(parents=True)
    (runs / "m.onnx").write_bytes(onnx_artifact("plain").read_bytes())
    monkeypatch.chdir(tmp_path)
    source = _video(tmp_path / "in.avi", frames=3)
    assert main(["run", source, "--max-frames", "2", "--progress-every", "0"]) == 0
    assert "runs/x/m.onnx" in capsys.readouterr().out


def test_run_without_model_or_source_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--camera", "0"]) == 1
    assert "fcn-edge export" in capsys.readouterr().err
    os.makedirs("runs")
    assert main(["run", "--model", "nothing.onnx"]) == 1
    assert "SOURCE or --camera" in capsys.readouterr().err


def test_run_inputs_by_flag_and_by_name_are_checked_before_anything_opens(tmp_path, capsys):
    from fcn_edge.runtime.run import RunConfig, input_folders

    assert input_folders(["hha=h/", "depth= d/"], {"depth": None, "hha": None}) == (
        ("hha", "h/"), ("depth", " d/"))
    assert input_folders(["thermal=t/"], {"depth": "d/"}) == (("depth", "d/"), ("thermal", "t/"))
    model = str(tmp_path / "missing.onnx")  # never opened: each line below fails first
    for args, message in [
            (["--depth", "d/", "--input", "depth=e/"],
             r"depth is given twice \(--depth DIR, --input depth=DIR\)"),
            (["--input", "rgb=r/"], "rgb is not read from files"),
            (["--input", "sonar=s/"], "unknown input modality 'sonar'; registered: rgb, depth"),
            (["--input", "depth"], "--input depth: give NAME=DIR, e.g. --input depth=depth/ "
                                   r"\(modalities: depth, hha\)")]:
        assert main(["run", str(tmp_path), "--model", model, *args]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert RunConfig(model, str(tmp_path), inputs=(("hha", "h/"),)).extras == {"hha": "h/"}
