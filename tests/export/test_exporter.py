"""``fcn-edge export`` end to end on a real checkpoint: artifacts, metadata, parity, refusals."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch

from fcn_edge.cli import main
from fcn_edge.errors import ModelFormatError
from fcn_edge.export import parity
from fcn_edge.export.exporter import ExportConfig, export
from fcn_edge.export.runners import ort_run
from fcn_edge.models import load_model
from fcn_edge.runtime.metadata import ArtifactMeta

from support import ort_infer

SIZES = ((64, 64), (33, 47), (90, 130))  # training size, no multiple of 32, larger


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    result = export(ExportConfig(str(checkpoint), out_dir=str(out), parity_sizes=SIZES),
                    log=lambda line: None)
    return result


def _props(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_fp32_artifact_describes_itself(exported, checkpoint):
    path = exported.artifacts["fp32"]
    assert path.name == "best.onnx"
    meta = ArtifactMeta.from_props(_props(path))
    assert meta.source_sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert meta.classes[1] == "disc" and meta.num_classes == 8 and meta.output_stride == 8
    assert meta.shapes.opt == (1, 64, 64) and meta.precision == "fp32"
    assert meta.model_options["backbone"] == "resnet18" and meta.export_options["opset"] == 17
    sizes = meta.parity["sizes"]
    assert [(s["height"], s["width"]) for s in sizes] == [list(s) and s for s in SIZES]
    assert all(s["rel_max_abs"] <= 1e-4 and s["agreement"] >= 0.9999 for s in sizes)


def test_report_matches_artifacts(exported):
    report = json.loads(exported.artifacts["report"].read_text())
    assert report["fp32"]["bytes"] == exported.artifacts["fp32"].stat().st_size
    assert len(report["fp32"]["parity"]["sizes"]) == 3


def test_artifact_runs_at_any_size_like_pytorch(exported, checkpoint):
    model = load_model(checkpoint)
    meta = ArtifactMeta.from_props(_props(exported.artifacts["fp32"]))
    infer = ort_infer(exported.artifacts["fp32"])
    for image in parity.scenes([(51, 77), (128, 40)], seed=5):
        out = infer(parity.artifact_input(meta, image))
        ref = parity.reference_logits(model, image)
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_parity_catches_a_wrong_graph(exported, checkpoint):
    onnx_model = onnx.load(str(exported.artifacts["fp32"]))
    weights = next(t for t in onnx_model.graph.initializer if t.name == "model.score_fr.weight")
    array = onnx.numpy_helper.to_array(weights).copy()
    array *= 1.01  # a 1 % error in one layer
    weights.CopyFrom(onnx.numpy_helper.from_array(array, weights.name))
    meta = ArtifactMeta.from_props(_props(exported.artifacts["fp32"]))
    with pytest.raises(ModelFormatError, match="relative max"):
        parity.check_parity(load_model(checkpoint), ort_run(onnx_model), meta, SIZES[:1])


def test_cli_raw_io_argmax(checkpoint, tmp_path, capsys):
    code = main(["export", str(checkpoint), "-o", str(tmp_path), "--raw-io", "--argmax",
                 "--parity-sizes", "64x64,33x47,90x130", "--shapes", "64x64:128x128:512x512"])
    assert code == 0
    path = tmp_path / "best_rawio_argmax.onnx"
    meta = ArtifactMeta.from_props(_props(path))
    assert meta.raw_io and meta.argmax and meta.shapes.max == (1, 512, 512)
    assert "labels agree 100" in capsys.readouterr().out
    image = parity.scenes([(60, 80)], seed=9)[0]
    labels = ort_infer(path)(np.ascontiguousarray(image[None, ..., ::-1]))
    ref = parity.reference_logits(load_model(checkpoint), image).argmax(1)
    assert labels.dtype == np.uint8 and (labels == ref).mean() >= 0.9999


def _no_artifacts(folder) -> bool:
    return not [p for p in folder.iterdir() if p.suffix in (".onnx", ".json") or
                p.name.startswith(".")]


def test_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"this is not a checkpoint" * 10)
    out = tmp_path / "out"
    assert main(["export", str(bogus), "-o", str(out)]) == 1
    assert "not a readable PyTorch weights file" in capsys.readouterr().err
    assert not out.exists()  # no artifacts, and not even the folder


def test_truncated_checkpoint(checkpoint, tmp_path, capsys):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(checkpoint.read_bytes()[:4096])
    assert main(["export", str(cut), "-o", str(tmp_path / "out")]) == 1
    assert "truncated or corrupt" in capsys.readouterr().err


def test_other_format_version(checkpoint, tmp_path, capsys):
    data = torch.load(checkpoint, weights_only=True)
    data["version"] = 7
    old = tmp_path / "old.pt"
    torch.save(data, old)
    assert main(["export", str(old), "-o", str(tmp_path / "out")]) == 1
    assert "format version 7" in capsys.readouterr().err


def test_bad_shapes_and_unwritable_dir(checkpoint, tmp_path, capsys):
    assert main(["export", str(checkpoint), "-o", str(tmp_path),
                 "--shapes", "512x512:256x256:1024x1024"]) == 1
    assert "min ≤ opt ≤ max" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["export", str(checkpoint), "-o", str(blocker / "sub")]) == 1
    assert f"--output {blocker / 'sub'}: {blocker} is a file" in capsys.readouterr().err
    assert _no_artifacts(tmp_path)


def test_triton_repository_from_export(checkpoint, tmp_path):
    repo = tmp_path / "repo"
    assert main(["export", str(checkpoint), "-o", str(tmp_path), "--argmax",
                 "--parity-sizes", "64x64,33x47,90x130", "--triton-repo", str(repo)]) == 0
    model_dir = repo / "best_argmax"
    config = (model_dir / "config.pbtxt").read_text()
    assert (model_dir / "1" / "model.onnx").read_bytes() == \
        (tmp_path / "best_argmax.onnx").read_bytes()
    assert 'platform: "onnxruntime_onnx"' in config
    assert 'name: "images"' in config and "TYPE_FP32" in config
    assert 'name: "labels"' in config and "TYPE_UINT8" in config
    assert "-1" in config  # dynamic height and width


def test_fp16_and_int8_are_executed_and_reported(checkpoint, tmp_path, capsys):
    import importlib.util

    code = main(["export", str(checkpoint), "-o", str(tmp_path), "--fp16", "--int8",
                 "--calib-images", "4", "--eval-images", "2",
                 "--parity-sizes", "48x48,33x47,80x100"])
    assert code == 0
    out = capsys.readouterr().out
    fp16 = ArtifactMeta.from_props(_props(tmp_path / "best.fp16.onnx"))
    int8 = ArtifactMeta.from_props(_props(tmp_path / "best.int8.onnx"))
    assert (fp16.precision, int8.precision) == ("fp16", "int8")
    assert fp16.parity["executor"] in ("onnxruntime", "onnx.reference")
    assert all(s["agreement"] >= 0.99 and s["finite"] for s in fp16.parity["sizes"])
    assert fp16.parity["conversion"]["converted_tensors"] >= 20  # every conv weight and bias
    inputs = onnx.load(str(tmp_path / "best.fp16.onnx")).graph.input
    assert inputs[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 IO kept
    report = json.loads((tmp_path / "best.export.json").read_text())
    assert set(report["int8"]["latency_ms"]) == {"size", "fp32", "int8"}
    assert report["int8"]["dataset"]["images"] == 2
    assert abs(report["fp16"]["dataset"]["delta_miou_points"]) < 5
    sizes = {k: (tmp_path / f"best{k}.onnx").stat().st_size for k in ("", ".fp16", ".int8")}
    assert sizes[".int8"] < sizes[".fp16"] < sizes[""]
    if importlib.util.find_spec("tensorrt") is None:
        assert "build the engine on the target with `fcn-edge build" in out
