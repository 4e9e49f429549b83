"""`fcn-edge bench`'s TensorRT int8 rows: the engine is built from the checkpoint's
`--int8-target tensorrt` export (symmetric int8 Q/DQ), never from ONNX Runtime's cpu flavour
(uint8 activations, which TensorRT cannot build), while ONNX Runtime's int8 rows keep the cpu one.

TensorRT is absent here, so one test runs against the TensorRT stand-in
(tests/support_tensorrt.py, named as such): `fcn-edge build`'s own code — its compatibility
check and accuracy gate included — builds the engine from the ONNX the bench's store exported,
and the runtime's own TensorRT backend runs it in the row (the stand-in's "engine" is the ONNX it
parsed, run by ONNX Runtime). Without the stand-in the row says what to install, and nothing is
exported for it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fcn_edge.bench.artifacts import ArtifactStore
from fcn_edge.bench.plan import ArtifactKey
from fcn_edge.bench.runner import BenchConfig, bench
from fcn_edge.errors import BackendUnavailable
from fcn_edge.io import file_sha256
from fcn_edge.runtime.engine_file import read_engine_header
from fcn_edge.runtime.onnx_file import read_onnx_metadata

from support_tensorrt import StandInTensorRT, install_stand_in, negated_logits

pytestmark = pytest.mark.usefixtures("restore_torch_threads")
INT8_ENGINE = ArtifactKey("engine", "int8", "plain", int8_target="tensorrt")
FAST = dict(sizes=((64, 96),), images=2, runs=3, warmup=1, threads=1)


@pytest.fixture(scope="module")
def artifacts(checkpoint, tmp_path_factory) -> Path:
    """A bench artifacts folder holding the checkpoint's ONNX Runtime (cpu) int8 export, made
    quickly (one parity size, 4 calibration images): the bench reuses it."""
    from fcn_edge.export.exporter import ExportConfig, export

    folder = tmp_path_factory.mktemp("artifacts")
    export(ExportConfig(str(checkpoint), out_dir=str(folder / "plain-int8cpu"), int8=True,
                        int8_target="cpu", simplify=False, parity_sizes=((64, 64),),
                        calib_images=4, eval_images=1, build_engine=False),
           log=lambda line: None)
    return folder


@pytest.fixture
def stand_in(monkeypatch, tmp_path) -> StandInTensorRT:
    """The TensorRT stand-in for the build and for the runtime's backend, on the stand-in GPU,
    with an engine cache of this test's own."""
    monkeypatch.setenv("FCN_EDGE_CACHE", str(tmp_path / "cache"))
    return install_stand_in(monkeypatch)


def test_the_int8_engine_row_is_built_from_the_tensorrt_flavour_and_runs(
        checkpoint, artifacts, stand_in, tmp_path):
    logged: list[str] = []
    report = bench(BenchConfig(str(checkpoint), backends=("tensorrt", "onnxruntime:cpu"),
                               precisions=("int8",), io=("plain",), out_dir=str(tmp_path / "out"),
                               artifacts_dir=str(artifacts), **FAST), log=logged.append)
    trt_onnx = artifacts / "plain-int8tensorrt" / "best.int8.onnx"
    cpu_onnx = artifacts / "plain-int8cpu" / "best.int8.onnx"
    assert read_onnx_metadata(trt_onnx).parity["target"] == "tensorrt"
    assert read_onnx_metadata(cpu_onnx).parity["target"] == "cpu"
    # The cpu flavour's export is reused for ONNX Runtime; the tensorrt one made for the engine.
    assert [line for line in logged if line.startswith("exporting")] == [
        f"exporting plain int8 artifacts to {artifacts / 'plain-int8tensorrt'}"]

    # One build, from the tensorrt flavour's ONNX; the engine beside it.
    assert stand_in.parsed == [str(trt_onnx)] and len(stand_in.builds) == 1
    engine = trt_onnx.with_name("best.int8.engine")
    header = read_engine_header(engine)
    assert header["precision"] == "int8" and header["onnx_file"] == "best.int8.onnx"
    assert header["onnx_sha256"] == file_sha256(trt_onnx) != file_sha256(cpu_onnx)

    rows = {(r.backend, r.precision, r.io): r for r in report.rows}
    assert set(rows) == {("tensorrt", "int8", "plain"), ("onnxruntime:cpu", "int8", "plain")}
    row = rows[("tensorrt", "int8", "plain")]
    assert row.status == "ok" and row.reason == "", row
    assert (row.artifact, row.path) == ("best.int8.engine", str(engine))
    assert row.artifact_mb == round(engine.stat().st_size / 1e6, 1)
    assert row.model_p50_ms > 0 and row.fps > 0
    assert row.check == "pass" and row.delta_miou >= -2.0  # held to the int8 bounds
    assert rows[("onnxruntime:cpu", "int8", "plain")].path == str(cpu_onnx)
    assert report.not_run == []

    # The engine given as the model: its own row, nothing exported or built again.
    given = bench(BenchConfig(str(engine), backends=("tensorrt", "onnxruntime:cpu"),
                              reference=str(checkpoint), out_dir=str(tmp_path / "given"),
                              **FAST), log=lambda line: None)
    (row,) = given.rows
    assert (row.backend, row.precision, row.status, row.check) == \
        ("tensorrt", "int8", "ok", "pass")
    assert len(stand_in.builds) == 1 and not (tmp_path / "given" / "artifacts").exists()


def test_without_tensorrt_the_int8_row_names_the_extra_and_nothing_is_exported(
        checkpoint, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    store = ArtifactStore(tmp_path, checkpoint=checkpoint, log=print)
    store.prepare([INT8_ENGINE])
    for _ in range(2):  # remembered: asked again, the same one line
        with pytest.raises(BackendUnavailable) as info:
            store.path(INT8_ENGINE)
        message = str(info.value)
        assert message.startswith("building this row's TensorRT engine needs TensorRT")
        assert 'pip install "fcn-edge[trt]"' in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no export for an engine that cannot be built
    assert store.size_bytes(INT8_ENGINE) is None


def test_a_given_int8_onnx_of_the_cpu_flavour_makes_no_tensorrt_row(checkpoint, artifacts,
                                                                    tmp_path):
    cpu_int8 = artifacts / "plain-int8cpu" / "best.int8.onnx"
    report = bench(BenchConfig(str(cpu_int8), backends=("tensorrt", "onnxruntime:cpu"),
                               reference=str(checkpoint), out_dir=str(tmp_path / "out"),
                               **FAST), log=lambda line: None)
    (row,) = report.rows
    assert (row.backend, row.precision, row.status, row.check) == \
        ("onnxruntime:cpu", "int8", "ok", "pass")
    assert report.not_run == [(
        "tensorrt int8 plain",
        "runs a TensorRT engine built from an `--int8-target tensorrt` export; the model given "
        "is an ONNX of `--int8-target cpu`, whose uint8 activations TensorRT cannot build")]



def test_an_int8_engine_the_gate_refuses_is_a_fail_row(checkpoint, stand_in, tmp_path):
    stand_in.fault = negated_logits  # every label wrong: the gate refuses the engine
    report = bench(BenchConfig(str(checkpoint), backends=("tensorrt",), precisions=("int8",),
                               io=("plain",), out_dir=str(tmp_path / "out"),
                               artifacts_dir=str(tmp_path / "artifacts"), **FAST),
                   log=lambda line: None)
    (row,) = report.rows
    assert (row.status, row.check) == ("failed", "FAIL")  # `fcn-edge bench` exits 1 on it
    assert "failed the accuracy gate" in row.reason
    assert not list(tmp_path.rglob("*.engine"))
