"""``fcn-edge build`` verifies before it writes: the accuracy gate, INT8 engines and DLA, end to end
through the builder's own code against the TensorRT stand-in (tests/support_tensorrt.py).

The stand-in's "plan" is the ONNX it parsed, run by ONNX Runtime behind the runtime's real
TensorRT backend code; a ``fault`` makes that engine return NaN or wrong labels, as an FP16
overflow or a bad fusion would. The gate runs the real ONNX Runtime on the real ONNX export.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.cli import main
from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.export import tensorrt as trt_build
from fcn_edge.export.exporter import ExportConfig, export
from fcn_edge.export.tensorrt import BuildOptions, build_engine
from fcn_edge.runtime.engine_file import read_engine

from support_tensorrt import install_stand_in, nan_output, negated_logits

SHAPES = "32x32:48x48:2x64x64"


@pytest.fixture(scope="module")
def exports(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """fp32, fp16 and TensorRT int8 exports of one checkpoint, plus an ONNX Runtime (CPU) int8."""
    quiet = dict(parity_sizes=((48, 48),), shapes=SHAPES, calib_images=4,
                 eval_images=1, build_engine=False)
    out = tmp_path_factory.mktemp("exports")
    made = export(ExportConfig(str(checkpoint), out_dir=str(out / "trt"), fp16=True, int8=True,
                               int8_target="tensorrt", **quiet), log=lambda line: None)
    cpu = export(ExportConfig(str(checkpoint), out_dir=str(out / "cpu"), int8=True,
                              int8_target="cpu", **quiet), log=lambda line: None)
    return {**made.artifacts, "int8-cpu": cpu.artifacts["int8"]}


@pytest.fixture
def stand_in(monkeypatch):
    """``stand_in(version, **kwargs)``: installs a StandInTensorRT for the builder and the
    runtime backend (the gate opens the engine with it), on the stand-in GPU."""
    return lambda version="10.3.0.26", **kwargs: install_stand_in(monkeypatch, version, **kwargs)


def _copy(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    target.write_bytes(source.read_bytes())
    return target


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- the gate -------------------------------------------------------------------------------

def test_a_faithful_engine_passes_and_its_figures_go_into_the_header(exports, stand_in, tmp_path,
                                                                     capsys):
    stand_in()
    onnx_path = _copy(exports["fp32"], tmp_path)
    out = build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache"))
    assert out == onnx_path.with_name(onnx_path.stem.removesuffix(".fp32") + ".fp32.engine") \
        or out.name.endswith(".fp32.engine")
    header, _ = read_engine(out)
    gate = header["verification"]
    assert gate["passed"] is True and gate["frames"] == "procedural"
    assert gate["reference"] == "onnxruntime cpu" and gate["min_agreement"] == 0.999
    shapes = {(c["batch"], c["height"], c["width"]) for c in gate["checks"]}
    assert shapes == {(1, 32, 32), (1, 48, 48), (2, 64, 64)}  # the profile's min, opt, max
    assert all(c["agreement"] == 1.0 and c["nan"] == 0 == c["inf"] for c in gate["checks"])
    assert header["meta"]["parity"]["sizes"]  # the ONNX's own figures, beside the engine's
    err = capsys.readouterr().err
    assert "passed the accuracy gate" in err and "2×64×64" in err


@pytest.mark.parametrize("fault, precision, says", [
    (nan_output, "fp16", r"NaN.*--keep-fp32"),
    (negated_logits, "fp32", r"labels agree with ONNX Runtime on \d+\.\d+% .*below 99\.90%"),
    (negated_logits, "int8", r"below 98\.00%.*--calib"),
])
def test_a_wrong_engine_is_neither_cached_nor_written(exports, stand_in, tmp_path, fault,
                                                      precision, says):
    trt = stand_in(fault=fault)
    onnx_path = _copy(exports[precision], tmp_path / "model")
    output = tmp_path / "model" / "deployed.engine"
    output.write_bytes(b"the engine deployed yesterday")
    with pytest.raises(ModelFormatError, match=says) as info:
        build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache", output=output))
    message = str(info.value)
    assert "\n" not in message and "logits at " in message and "--no-verify" in message
    assert "neither cached nor written" in message
    assert len(trt.builds) == 1                       # it was built, then refused
    assert _leftovers(tmp_path / "cache") == ["timing-trt10.3.0-sm86.cache"]
    assert output.read_bytes() == b"the engine deployed yesterday"
    assert _leftovers(tmp_path / "model") == sorted([onnx_path.name, "deployed.engine"])


def test_no_verify_writes_it_and_a_verified_build_then_refuses_the_cached_engine(
        exports, stand_in, tmp_path, capsys):
    trt = stand_in(fault=nan_output)
    onnx_path = _copy(exports["fp32"], tmp_path)
    options = BuildOptions(cache_dir=tmp_path / "cache", verify=False)
    out = build_engine(onnx_path, options)
    assert read_engine(out)[0]["verification"] == {"skipped": True}
    assert "was not verified (--no-verify)" in capsys.readouterr().err
    (cached,) = (tmp_path / "cache").glob("*.engine")
    with pytest.raises(ModelFormatError, match="NaN"):
        build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache"))
    assert len(trt.builds) == 1          # the cached engine was verified, not rebuilt ...
    assert not cached.exists()           # ... and, refused, it left the cache


def test_a_verified_cached_engine_is_reused_and_other_frames_verify_it_again(
        exports, stand_in, tmp_path, capsys):
    trt = stand_in()
    onnx_path = _copy(exports["fp32"], tmp_path)
    build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache"))
    capsys.readouterr()
    again = build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache",
                                                 output=tmp_path / "again.engine"))
    assert len(trt.builds) == 1 and "accuracy gate" not in capsys.readouterr().err
    images = tmp_path / "mine"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 255, (40, 60, 3), np.uint8))
    build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache", verify_data=images,
                                         output=again))
    assert len(trt.builds) == 1 and "passed the accuracy gate" in capsys.readouterr().err
    assert read_engine(again)[0]["verification"]["frames"] == str(images)


def test_an_interrupted_gate_leaves_nothing_behind(exports, stand_in, tmp_path, monkeypatch):
    stand_in()
    onnx_path = _copy(exports["fp32"], tmp_path / "model")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM, which the CLI turns into it) mid-gate
    monkeypatch.setattr(trt_build, "run_gate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache"))
    assert _leftovers(tmp_path / "cache") == ["timing-trt10.3.0-sm86.cache"]
    assert _leftovers(tmp_path / "model") == [onnx_path.name]


def test_a_bad_verify_data_folder_is_refused_before_the_build(exports, stand_in, tmp_path):
    trt = stand_in()
    onnx_path = _copy(exports["fp32"], tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache",
                                             verify_data=tmp_path / "empty"))
    assert trt.builds == []


# --- INT8 engines ---------------------------------------------------------------------------

@pytest.mark.parametrize("version, network_flags, flags", [
    ("10.3.0.26", 0, [1]),          # weakly typed, BuilderFlag.INT8: the Q/DQ nodes decide
    ("8.6.1", 1, [1]),              # EXPLICIT_BATCH + INT8
    ("11.0.0", 0, []),              # always strongly typed: no precision flag
])
def test_int8_engines_from_a_tensorrt_qdq_export(exports, stand_in, tmp_path, version,
                                                 network_flags, flags):
    trt = stand_in(version)
    onnx_path = _copy(exports["int8"], tmp_path)
    out = build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache"))
    assert out.name.endswith(".int8.engine")
    (build,) = trt.builds
    assert (build["network_flags"], build["flags"]) == (network_flags, flags)
    header = read_engine(out)[0]
    assert header["precision"] == "int8" and header["verification"]["min_agreement"] == 0.98
    assert header["verification"]["passed"]


def test_an_onnx_runtime_int8_export_is_refused_before_tensorrt_builds(exports, stand_in,
                                                                       tmp_path):
    trt = stand_in()
    onnx_path = _copy(exports["int8-cpu"], tmp_path)
    with pytest.raises(InputError, match=r"--int8-target tensorrt") as info:
        build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache", check=False))
    assert "\n" not in str(info.value) and trt.builds == []


def test_an_fp32_export_is_no_int8_engine(exports, stand_in, tmp_path):
    stand_in()
    with pytest.raises(InputError, match=r"int8 Q/DQ ONNX"):
        build_engine(_copy(exports["fp32"], tmp_path),
                     BuildOptions(precision="int8", cache_dir=tmp_path / "cache"))


# --- DLA ------------------------------------------------------------------------------------

def test_a_dla_build_sets_core_fallback_and_reports_the_gpu_layers(exports, stand_in, tmp_path,
                                                                   capsys):
    trt = stand_in(dla_cores=2, gpu_only=frozenset({"LayerType.RESIZE"}))
    onnx_path = _copy(exports["fp16"], tmp_path)
    out = build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache", dla_core=1))
    assert out.name.endswith(".fp16.dla1.engine")
    (build,) = trt.builds
    assert build["device"] == "DeviceType.DLA" and build["dla_core"] == 1
    assert 3 in build["flags"]  # GPU_FALLBACK
    header = read_engine(out)[0]
    assert header["dla"]["core"] == 1 and header["key_fields"]["dla_core"] == 1
    assert header["dla"]["gpu_fallback"]  # the Resize layers, by name
    assert all(layer["type"] == "RESIZE" for layer in header["dla"]["gpu_fallback"])
    assert "DLA core 1" in capsys.readouterr().err
    gpu = build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache"))
    assert len(trt.builds) == 2 and gpu != out  # a GPU engine is another cache entry


@pytest.mark.parametrize("cores, precision, core, says", [
    (0, "fp16", 0, "has no DLA"),
    (2, "fp16", 2, "2 DLA cores"),
    (2, "fp32", 0, "fp16 and int8"),
])
def test_dla_refusals_come_before_the_build(exports, stand_in, tmp_path, cores, precision, core,
                                            says):
    trt = stand_in(dla_cores=cores)
    onnx_path = _copy(exports[precision], tmp_path)
    with pytest.raises(InputError, match=says) as info:
        build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache", dla_core=core))
    assert "\n" not in str(info.value) and trt.builds == []


# --- the command ----------------------------------------------------------------------------

def test_fcn_edge_build_refuses_a_nan_engine_in_one_line_and_no_verify_writes_it(
        exports, stand_in, tmp_path, capsys):
    stand_in(fault=nan_output)
    onnx_path = _copy(exports["fp32"], tmp_path)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["build", str(onnx_path), *cache]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fcn-edge build: ") and "NaN" in err[-1]
    assert not list(tmp_path.glob("*.engine"))
    assert main(["build", str(onnx_path), "--no-verify", *cache]) == 0
    assert len(list(tmp_path.glob("*.engine"))) == 1


def test_fcn_edge_build_takes_verify_data_and_dla_core(exports, stand_in, tmp_path, capsys):
    trt = stand_in(dla_cores=1)
    onnx_path = _copy(exports["fp16"], tmp_path)
    images = tmp_path / "frames"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), np.full((50, 70, 3), 90, np.uint8))
    assert main(["build", str(onnx_path), "--dla-core", "0", "--verify-data", str(images),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    (engine,) = tmp_path.glob("*.dla0.engine")
    header = read_engine(engine)[0]
    assert header["verification"]["frames"] == str(images) and trt.builds[0]["dla_core"] == 0
    assert main(["build", str(onnx_path), "--dla-core", "-1"]) == 1
    assert "--dla-core" in capsys.readouterr().err


def test_the_header_is_json_all_the_way(exports, stand_in, tmp_path):
    stand_in()
    out = build_engine(_copy(exports["fp32"], tmp_path), BuildOptions(cache_dir=tmp_path / "c"))
    header = read_engine(out)[0]
    assert json.loads(json.dumps(header)) == header


def test_an_export_keeps_its_onnx_when_the_engine_it_builds_fails_the_gate(checkpoint, stand_in,
                                                                            tmp_path,
                                                                            monkeypatch):
    stand_in(fault=nan_output)
    monkeypatch.setenv("FCN_EDGE_CACHE", str(tmp_path / "cache"))
    logged: list[str] = []
    result = export(ExportConfig(str(checkpoint), out_dir=str(tmp_path / "out"), fp16=True,
                                 parity_sizes=((48, 48),), shapes=SHAPES, eval_images=1),
                    log=logged.append)
    assert set(result.artifacts) == {"fp32", "fp16", "report"}  # no "engine"; the rest written
    assert all(path.is_file() for path in result.artifacts.values())
    assert not list((tmp_path / "out").glob("*.engine"))
    (line,) = [line for line in logged if line.startswith("no engine: ")]
    assert "failed the accuracy gate" in line and "NaN" in line
