"""The command line, run as users run it: a real ``fcn-edge`` process."""
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from fcn_edge.checks import environment, smoke
from fcn_edge.cli import main
from fcn_edge.models.registry import backbones

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcn_edge.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_help_lists_the_commands_that_exist():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("checks", "models", "train", "eval", "export", "build", "run"):
        assert command in result.stdout


def test_no_command_prints_help_and_fails():
    result = run_cli()
    assert result.returncode == 2 and "usage: fcn-edge" in result.stdout


def test_models_json_lists_every_buildable_model():
    result = run_cli("models", "--json", "--size", "224x224", "--num-classes", "21")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    keys = {(r["name"], r["backbone"], r["layout"]) for r in rows}
    # 3 variants × each registered backbone's layouts (vgg16: edge and reference) + 4 published
    assert len(rows) == 3 * sum(len(b.layouts) for b in backbones()) + 4
    assert {r["backbone"] for r in rows} >= {b.name for b in backbones()}
    assert {("fcn_resnet18", "resnet18", "edge"), ("fcn_resnet50", "resnet50", "edge")} <= keys
    tv50 = next(r for r in rows if r["name"] == "fcn_resnet50")
    # torchvision's published 35,322,218 less the aux head (FCNHead(1024, 21): 3×3 conv
    # 2,359,296 + BN 512 + 1×1 conv 5,397 = 2,365,205):
    # the deployed model, which exports leave the aux head out of.
    assert (tv50["params"], tv50["output_stride"]) == (35_322_218 - 2_365_205, 8)
    assert ("fcn8s", "vgg16", "reference") in keys and ("fcn8s", "resnet18", "reference") not in keys
    vgg8 = next(r for r in rows if r["name"] == "fcn8s" and r["backbone"] == "vgg16"
                and r["layout"] == "edge")
    assert vgg8["trainable_params"] == 134_362_751  # the paper's "134M"
    ref8 = next(r for r in rows if r["name"] == "fcn8s" and r["layout"] == "reference")
    # The 100-pixel padding makes the reference layout compute much more for the same image.
    assert ref8["gflops"] > 1.5 * vgg8["gflops"]


def test_bad_argument_is_one_line_and_nonzero():
    result = run_cli("models", "--size", "big")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "fcn-edge models: --size must look like HEIGHTxWIDTH (e.g. 512x1024), got 'big'"]
    assert "Traceback" not in result.stderr


def test_checks_without_smoke_reports_engines(capsys):
    assert main(["checks", "--no-smoke"]) == 0
    out = capsys.readouterr().out
    for name in ("numpy", "opencv", "onnxruntime", "pillow", "torch", "tensorrt"):
        assert name in out
    # TensorRT cannot be installed on these machines: the report names the extra instead.
    if "tensorrt" not in {c.name for c in environment() if "not installed" not in c.detail}:
        assert "pip install 'fcn-edge[trt]'" in out
    # pip's OpenCV, which this venv has, is built without GStreamer: csi:// cannot be read
    gstreamer = re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None
    assert ("opencv gstreamer" in out and
            ("yes: csi://" if gstreamer else "no: csi:// and GStreamer pipelines") in out)
    # the serve extra (dev takes it) bundles tritonserver with a stub for this Python
    assert re.search(r"triton server\s+yes: fcn-edge serve starts \S+/bin/tritonserver", out), out


def test_smoke_builds_runs_and_fits():
    checks = smoke(size=(33, 47), backbones=("resnet18",), steps=40)
    forward, fit, edge = checks
    assert forward.ok and "(1, 3, 33, 47)" in forward.detail
    assert fit.ok, fit.detail  # mean IU after fitting > 0.5 and better than before
    assert edge.ok and "Segmenter" in edge.detail, edge.detail


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed here: build would run")
def test_build_without_tensorrt_exits_2_naming_the_extra(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from fcn_edge.runtime.metadata import ArtifactMeta

    dims = ["N", 3, "H", "W"]
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = ArtifactMeta(model="fcn8s", backbone="resnet18", num_classes=3,
                        classes=("a", "b", "c"), palette=((0, 0, 0),) * 3,
                        mean=(0.5,) * 3, std=(0.25,) * 3)
    onnx.helper.set_model_props(model, meta.to_props())
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = run_cli("build", str(tmp_path / "m.onnx"), "--fp16")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and 'pip install "fcn-edge[trt]"' in result.stderr


@pytest.mark.parametrize("command", [[], ["run"], ["train"], ["bench"]])
def test_help_imports_no_torch(command):
    code = ("import sys\nfrom fcn_edge.cli import main\n"
            f"try:\n    main({[*command, '--help']!r})\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: fcn-edge" in result.stdout and result.stdout.splitlines()[-1] == "False"
    if command in (["train"], ["bench"]):  # --data-layout's choices, read from the data package
        assert "cityscapes, voc, sbd, nyud, siftflow, folder" in " ".join(result.stdout.split())
