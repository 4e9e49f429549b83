"""`fcn-edge export` and `fcn-edge build` run the TensorRT compatibility check: on every
artifact meant for TensorRT before anything is written, and before TensorRT parses."""
from __future__ import annotations

import json
import sys
import types

import onnx
import pytest

from fcn_edge.cli import main
from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.export import tensorrt as trt_build
from fcn_edge.export.exporter import ExportConfig, export
from fcn_edge.export.tensorrt import BuildOptions, build_engine
from fcn_edge.export.trt_support import TRT_VERSIONS

QUIET = {"log": lambda line: None}
FAST = {"parity_sizes": ((48, 48),), "calib_images": 2, "eval_images": 1}


def test_a_tensorrt_export_checks_and_reports_every_artifact(checkpoint, tmp_path):
    lines = []
    result = export(ExportConfig(str(checkpoint), out_dir=str(tmp_path), fp16=True, int8=True,
                                 raw_io=True, argmax=True, target="tensorrt", **FAST),
                    log=lines.append)
    assert set(result.artifacts) >= {"fp32", "fp16", "int8"}
    report = json.loads(result.artifacts["report"].read_text())
    for precision in ("fp32", "fp16", "int8"):
        verdicts = report[precision]["tensorrt"]
        assert set(verdicts) == set(TRT_VERSIONS)
        assert all(v == {"builds": True, "warnings": []} for v in verdicts.values())
        assert f"{precision}: passes the TensorRT 8.6, 10, 11 compatibility check" in lines
    int8 = onnx.load(str(result.artifacts["int8"]), load_external_data=False)
    assert result.meta.export_options["int8_target"] == "tensorrt"  # followed the target
    assert not any(n.op_type == "DequantizeLinear" and "bias" in n.name.lower()
                   for n in int8.graph.node)


def test_a_plain_export_checks_only_what_tensorrt_will_build(checkpoint, tmp_path):
    result = export(ExportConfig(str(checkpoint), out_dir=str(tmp_path), fp16=True, int8=True,
                                 **FAST), **QUIET)
    report = json.loads(result.artifacts["report"].read_text())
    assert report["fp32"]["tensorrt"] is None      # for ONNX Runtime: not checked
    assert report["int8"]["tensorrt"] is None      # --int8-target cpu (the default here)
    assert set(report["fp16"]["tensorrt"]) == set(TRT_VERSIONS)


@pytest.mark.parametrize("options, failing", [
    ({"target": "tensorrt", "trt_versions": ("8.6",)}, "the fp32 artifact"),
    ({"fp16": True}, "the fp16 artifact"),   # default: all three releases, 8.6 among them
])
def test_an_artifact_tensorrt_cannot_build_writes_nothing(checkpoint, tmp_path, options,
                                                          failing):
    # Opset 18 is past what TensorRT 8.6's parser reads (1–17).
    with pytest.raises(ModelFormatError) as info:
        export(ExportConfig(str(checkpoint), out_dir=str(tmp_path), opset=18, **FAST,
                            **options), **QUIET)
    text = str(info.value)
    assert text.startswith(f"{failing} would not build with TensorRT 8.6:")
    assert "[opset]" in text and "fix: export with --opset 17" in text
    assert "nothing was written" in text
    assert not list(tmp_path.iterdir())
    export(ExportConfig(str(checkpoint), out_dir=str(tmp_path), opset=18, **FAST,
                        **{**options, "trt_versions": ("10", "11")}), **QUIET)
    assert list(tmp_path.glob("*.onnx"))  # the releases deployed to read opset 18


def test_contradictory_targets_are_refused():
    with pytest.raises(InputError, match="--int8-target cpu .* --target tensorrt"):
        ExportConfig("x.pt", int8=True, int8_target="cpu", target="tensorrt")
    with pytest.raises(InputError, match="target 'trt'"):
        ExportConfig("x.pt", target="trt")
    with pytest.raises(InputError, match="older than 8.6"):
        ExportConfig("x.pt", trt_versions=("8.0",))
    assert ExportConfig("x.pt", trt_versions=("10.3.0", "11")).trt_versions == ("10", "11")
    assert ExportConfig("x.pt").int8_target == "cpu"
    assert ExportConfig("x.pt", target="tensorrt").int8_target == "tensorrt"


def test_cli_export_for_tensorrt(checkpoint, tmp_path, capsys):
    code = main(["export", str(checkpoint), "-o", str(tmp_path), "--target", "tensorrt",
                 "--trt-version", "8.6", "--opset", "18", "--parity-sizes", "48x48"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "the fp32 artifact would not build with TensorRT 8.6: [opset]" in err
    assert main(["export", str(checkpoint), "-o", str(tmp_path), "--target", "tensorrt",
                 "--int8", "--int8-target", "cpu"]) == 1
    assert "--int8-target cpu" in capsys.readouterr().err


# --- fcn-edge build: the check before TensorRT parses ---------------------------------------

class _Parsed(Exception):
    """Raised where the build would go on to query the GPU and parse: the check let it by."""


@pytest.fixture
def tensorrt_version(monkeypatch):
    """A stand-in for the tensorrt module (none can be installed here): only its version is
    read before the check; the build stops, by _Parsed, where it would touch the GPU."""
    def install(version: str):
        monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
        monkeypatch.setattr(trt_build, "query_gpu", lambda *a, **k: (_ for _ in ()).throw(
            _Parsed()))
    return install


@pytest.fixture(scope="module")
def rawio_argmax(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("rawio")
    return export(ExportConfig(str(checkpoint), out_dir=str(out), raw_io=True, argmax=True,
                               **FAST), **QUIET).artifacts["fp32"]


def _transpose_first(model: onnx.ModelProto) -> onnx.ModelProto:
    """The raw-IO graph as fcn-edge exported it before: frames → Transpose → Cast → …"""
    nodes = list(model.graph.node)
    cast = next(n for n in nodes if n.op_type == "Cast" and n.input[0] == "frames")
    transpose = next(n for n in nodes if n.op_type == "Transpose" and n.input[0] == cast.output[0])
    for node in nodes:  # whatever read the transposed floats now reads the Cast's output
        node.input[:] = [cast.output[0] if i == transpose.output[0] else i for i in node.input]
    transpose.input[0], cast.input[0] = "frames", transpose.output[0]
    i, j = nodes.index(cast), nodes.index(transpose)
    nodes[i], nodes[j] = nodes[j], nodes[i]
    del model.graph.node[:], model.graph.value_info[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def test_build_checks_for_the_installed_tensorrt_before_parsing(rawio_argmax, tmp_path,
                                                                 tensorrt_version):
    stale_model = _transpose_first(onnx.load(str(rawio_argmax)))
    stale = tmp_path / "stale.onnx"
    onnx.save(stale_model, str(stale))
    tensorrt_version("10.3.0")
    with pytest.raises(ModelFormatError) as info:
        build_engine(stale, BuildOptions(cache_dir=tmp_path / "cache"))
    assert "would not build with TensorRT 10: [uint8-input]" in str(info.value)
    assert "--no-check" in str(info.value)
    with pytest.raises(_Parsed):  # --no-check: on to TensorRT's own parser
        build_engine(stale, BuildOptions(cache_dir=tmp_path / "cache", check=False))
    with pytest.raises(_Parsed):  # today's export passes and goes on to the build
        build_engine(rawio_argmax, BuildOptions(cache_dir=tmp_path / "cache"))
