"""The edge backbones through every command, as a user types them: train, export (fp16, int8,
raw IO), run and bench, each a real child process (``fcn-edge …``), on tiny procedural runs."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from fcn_edge.data import render_scene

from faults import run_cli

TRAIN = ["--model", "fcn8s", "--num-images", "8", "--val-images", "4", "--image-size", "64x64",
         "--epochs", "1", "--batch-size", "4", "--optimizer", "adamw"]
#: backbone → its export flags and the artifact then run: the MobileNet's int8 (depthwise
#: convolutions, hardswish and squeeze-excitation quantized for ONNX Runtime's CPU), and
#: GoogLeNet's raw-IO + argmax fp16 (uint8 frames in, labels out; inception concatenations).
CASES = {"mobilenet_v3_large": (["--fp16", "--int8", "--calib-images", "4", "--eval-images", "2"],
                                "best.int8.onnx"),
         "googlenet": (["--fp16", "--raw-io", "--argmax", "--eval-images", "2"],
                       "best_rawio_argmax.fp16.onnx")}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(CASES))
def test_train_export_run_and_bench(tmp_path, backbone):
    flags, artifact = CASES[backbone]
    train = run_cli(["train", "--backbone", backbone, *TRAIN, "--out", str(tmp_path / "train")])
    assert train.returncode == 0, train.stderr
    checkpoint = tmp_path / "train" / "best.pt"
    export = run_cli(["export", str(checkpoint), "-o", str(tmp_path / "out"), "--no-engine",
                      *flags])
    assert export.returncode == 0, export.stderr
    assert "passes the TensorRT 8.6, 10, 11 compatibility check" in export.stdout
    onnx_path = tmp_path / "out" / artifact
    assert onnx_path.is_file(), sorted(p.name for p in (tmp_path / "out").iterdir())

    frame = np.ascontiguousarray(render_scene(np.random.default_rng(5), 72, 100)[0][..., ::-1])
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    run = run_cli(["run", str(tmp_path / "frame.png"), "--model", str(onnx_path),
                   "--output", str(tmp_path / "overlay.png"),
                   "--save-masks", str(tmp_path / "masks")])
    assert run.returncode == 0, run.stderr
    overlay = cv2.imread(str(tmp_path / "overlay.png"))
    assert overlay is not None and overlay.shape == frame.shape
    masks = list((tmp_path / "masks").iterdir())
    assert len(masks) == 1
    labels = np.asarray(Image.open(masks[0]))   # a palette PNG: class ids
    assert labels.shape == frame.shape[:2] and labels.max() < 8

    bench = run_cli(["bench", str(checkpoint), "--backends", "onnxruntime:cpu,torch:cpu",
                     "--precisions", "fp32", "--io", "plain", "--sizes", "48x64", "--runs", "2",
                     "--warmup", "1", "--images", "2", "--out", str(tmp_path / "bench")])
    assert bench.returncode == 0, bench.stderr
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())["fcn_edge_bench"]["rows"]
    assert {(r["backend"], r["status"]) for r in rows} == {("onnxruntime:cpu", "ok"),
                                                            ("torch:cpu", "ok")}
