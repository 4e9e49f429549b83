"""`fcn-edge bench` end to end: a real checkpoint exported and run on ONNX Runtime and PyTorch
(CPU), the backends this machine lacks reported as unavailable, exports reused, a given ONNX
benched with and without a reference, a broken ONNX caught by the regression bounds (exit 1),
and bad input refused in one line.

One bench of the checkpoint (module fixture) is shared by most tests: small frames, two images,
three timed calls, one thread, so the whole file takes seconds rather than minutes."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from fcn_edge.bench.artifacts import ArtifactStore
from fcn_edge.bench.plan import ArtifactKey
from fcn_edge.cli import main
from fcn_edge.errors import BackendUnavailable, InputError
from fcn_edge.data import render_scene
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.onnx_file import read_onnx_metadata

pytestmark = pytest.mark.usefixtures("restore_torch_threads")
FAST = ["--sizes", "64x96", "--images", "2", "--runs", "3", "--warmup", "1", "--threads", "1"]
BACKENDS = "onnxruntime:cpu,torch:cpu,tensorrt,onnxruntime:cuda"
ORT_ROWS = {("fp32", "plain"): "best.onnx", ("fp32", "raw"): "best_rawio_argmax.onnx",
            ("int8", "plain"): "best.int8.onnx", ("int8", "raw"): "best_rawio_argmax.int8.onnx"}
FIGURES = ("model_p50_ms", "model_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "fps", "gflops_per_s",
           "vs_torch", "mean_iou", "delta_miou", "agreement")


def bench(*args) -> SimpleNamespace:
    """``fcn-edge bench ARGS`` in this process: exit code, stdout, stderr, the JSON report
    (None when none was written) and the text of each file written to the ``--out`` folder
    (read now: a later bench into the same folder replaces them)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["bench", *map(str, args)]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    out = Path(argv[argv.index("--out") + 1])
    report = out / "bench.json"
    data = json.loads(report.read_text(encoding="utf-8"))["fcn_edge_bench"] \
        if report.is_file() else None
    files = {name: (out / name).read_text(encoding="utf-8")
             for name in ("bench.txt", "bench.csv", "bench.json") if (out / name).is_file()}
    return SimpleNamespace(code=code, stdout=stdout.getvalue(), stderr=stderr.getvalue(),
                           json=data, out=out, files=files)


def rows_by(result) -> dict[tuple[str, str, str, str], dict]:
    rows = {(r["backend"], r["precision"], r["io"], r["size"]): r for r in result.json["rows"]}
    assert len(rows) == len(result.json["rows"]), "one row per backend, precision, IO, size"
    return rows


@pytest.fixture(scope="module")
def first(checkpoint, tmp_path_factory):
    """The checkpoint benched on ORT CPU and PyTorch CPU, with TensorRT and ORT CUDA asked for,
    fp32 and int8, plain and raw IO: every export made here."""
    out = tmp_path_factory.mktemp("bench")
    result = bench(checkpoint, "--backends", BACKENDS, "--precisions", "fp32,int8",
                   "--io", "plain,raw", *FAST, "--out", out)
    result.mtimes = {p: p.stat().st_mtime_ns for p in (out / "artifacts").rglob("*.onnx")}
    return result


@pytest.fixture(scope="module")
def labelled(checkpoint, tmp_path_factory, write_folder) -> Path:
    """Two 64×96 scenes whose masks are the PyTorch fp32 reference's own labels (a top row
    ignored): the reference scores mean IU 1 on them, so a worse artifact shows as a drop."""
    rng = np.random.default_rng(7)
    frames = [np.ascontiguousarray(render_scene(rng, 64, 96)[0][..., ::-1]) for _ in range(2)]
    with Segmenter(checkpoint, backend="torch:cpu", profile=None, threads=1) as seg:
        masks = [np.asarray(seg(frame), np.uint8).copy() for frame in frames]
    for mask in masks:
        assert len(np.unique(mask)) > 1, "labels vary across the image"
        mask[0] = 255
    return write_folder(tmp_path_factory.mktemp("labelled") / "data", frames, masks)


# --- the checkpoint, every backend asked for ------------------------------------------------

def test_bench_exits_0_and_writes_the_table_csv_and_json(first):
    assert first.code == 0, first.stderr
    table = first.files["bench.txt"]
    assert first.stdout.startswith(table)  # the table printed is the table written
    assert first.stdout.splitlines()[-1] == (f"wrote {first.out / 'bench.txt'}, "
                                             f"{first.out / 'bench.csv'}, "
                                             f"{first.out / 'bench.json'}")
    csv_lines = first.files["bench.csv"].splitlines()
    assert len(csv_lines) == 1 + len(first.json["rows"]) == 14
    assert table.splitlines()[0].startswith("backend")
    assert "reference: " + f"{first.json['reference']} in PyTorch fp32 on the CPU" in table


def test_onnx_runtime_rows_run_with_figures(first):
    rows = rows_by(first)
    for (precision, io_kind), artifact in ORT_ROWS.items():
        row = rows[("onnxruntime:cpu", precision, io_kind, "64x96")]
        assert row["status"] == "ok" and row["reason"] == "", row
        assert row["artifact"] == artifact and row["check"] == "pass"
        assert all(isinstance(row[k], float) for k in FIGURES), row
        assert 0 < row["model_p50_ms"] <= row["model_p99_ms"]
        assert 0 < row["e2e_p50_ms"] <= row["e2e_p99_ms"]
        assert row["fps"] == pytest.approx(1000 / row["e2e_p50_ms"], rel=0.02)
        assert row["gflops_per_s"] > 0 and 0 <= row["mean_iou"] <= 1
        torch_ms = rows[("torch:cpu", "fp32", "plain", "64x96")]["model_p50_ms"]
        assert row["vs_torch"] == pytest.approx(torch_ms / row["model_p50_ms"], rel=0.02)
    for io_kind in ("plain", "raw"):
        fp32 = rows[("onnxruntime:cpu", "fp32", io_kind, "64x96")]
        int8 = rows[("onnxruntime:cpu", "int8", io_kind, "64x96")]
        assert abs(fp32["delta_miou"]) <= 0.1 and fp32["agreement"] >= 0.999
        assert int8["delta_miou"] >= -2.0 and 0.5 < int8["agreement"] <= 1.0
        assert int8["artifact_mb"] < fp32["artifact_mb"] / 3  # int8 weights: a quarter


def test_pytorch_cpu_fp32_is_the_reference_row(first):
    rows = rows_by(first)
    row = rows[("torch:cpu", "fp32", "plain", "64x96")]
    assert row["status"] == "ok" and row["artifact"] == "best.pt"
    assert row["vs_torch"] == 1.0 and row["delta_miou"] == 0.0 and row["agreement"] == 1.0
    assert row["check"] == "pass" and row["model_p50_ms"] > 0 and row["fps"] > 0


def test_missing_backends_are_unavailable_once_with_what_to_install(first):
    rows = rows_by(first)
    trt = importlib.util.find_spec("tensorrt") is not None
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if trt or cuda:
        pytest.skip("this machine has TensorRT or ORT CUDA: those rows run here")
    unavailable = {k: r for k, r in rows.items() if r["status"] == "unavailable"}
    assert set(unavailable) == {
        (b, p, io, "all") for b in ("tensorrt", "onnxruntime:cuda") for p in ("fp32", "int8")
        for io in ("plain", "raw")}
    for (backend, *_), row in unavailable.items():
        assert all(row[k] is None for k in FIGURES) and row["check"] == ""
        if backend == "tensorrt":  # int8 too, said before its source is exported
            assert row["reason"].startswith("building this row's TensorRT engine needs "
                                            "TensorRT (No module named 'tensorrt')")
            assert 'pip install "fcn-edge[trt]"' in row["reason"]
            assert "\n" not in row["reason"] and row["artifact"] == ""
        else:
            assert "no CUDAExecutionProvider" in row["reason"]
            assert "onnxruntime-gpu" in row["reason"]
    assert [r["status"] for r in first.json["rows"]].count("ok") == 5
    assert len(first.json["rows"]) == 13


def test_unsupported_combinations_are_listed_as_not_run(first):
    not_run = dict(map(tuple, first.json["not_run"]))
    raw = "raw-IO + argmax is an exported graph; PyTorch runs the checkpoint (plain IO)"
    assert not_run == {  # TensorRT int8 is a row (built from the tensorrt flavour), not here
        "torch:cpu fp32 raw": raw, "torch:cpu int8 raw": raw,
        "torch:cpu int8 plain": "no PyTorch int8 path; int8 runs as a QDQ ONNX"}
    assert f"not run: torch:cpu fp32 raw, torch:cpu int8 raw: {raw}" in first.stdout


def test_the_setting_is_recorded(first, checkpoint):
    assert first.json["reference"] == str(checkpoint)
    assert first.json["eval_data"] == ["2 procedural standard validation scenes of 64×96"]
    assert first.json["model_gflops"]["64x96"] > 0
    machine = first.json["machine"]
    assert machine["threads"] == 1 and machine["sgemm_gflops"] > 0
    assert f"sgemm ceiling on 1 threads: {machine['sgemm_gflops']} GFLOP/s" in first.stdout


def test_each_flavour_is_exported_once(first):
    artifacts = first.out / "artifacts"
    assert first.stderr.count("exporting plain fp32/int8 artifacts") == 1
    assert first.stderr.count("exporting raw-IO + argmax fp32/int8 artifacts") == 1
    for int8 in artifacts.glob("*-int8cpu/*.int8.onnx"):  # ONNX Runtime's int8 flavour
        assert read_onnx_metadata(int8).parity["target"] == "cpu"
    if importlib.util.find_spec("tensorrt") is not None:
        return  # the TensorRT rows export their int8 flavour too (test_bench_trt_int8.py)
    # ... but not on a machine that cannot build its engine.
    assert first.stderr.count("exporting") == 2
    assert sorted(p.name for p in first.mtimes) == sorted(ORT_ROWS.values())
    assert {p.parent.name for p in first.mtimes} == {"plain-int8cpu", "raw-int8cpu"}


def test_a_second_bench_reuses_the_exports(first, checkpoint):
    again = bench(checkpoint, "--backends", "onnxruntime:cpu", "--precisions", "fp32,int8",
                  "--io", "plain,raw", *FAST, "--out", first.out)
    assert again.code == 0, again.stderr
    assert "exporting" not in again.stderr
    assert {p: p.stat().st_mtime_ns for p in first.mtimes} == first.mtimes
    rows = rows_by(again)
    assert {k[1:3] for k, r in rows.items() if r["status"] == "ok"} == set(ORT_ROWS)
    assert {r["artifact"] for r in rows.values()} == set(ORT_ROWS.values())
    assert all(r["vs_torch"] is None for r in rows.values())  # no PyTorch row to compare with


def test_the_store_remembers_a_failure_as_the_error_it_was(first, checkpoint, tmp_path):
    """A missing TensorRT stays BackendUnavailable (an "unavailable" row) when asked again."""
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    onnx_key = ArtifactKey("onnx", "fp32", "plain")
    source = first.out / "artifacts" / "plain-int8cpu" / "best.onnx"
    logged = []
    store = ArtifactStore(tmp_path, checkpoint=checkpoint, given=(onnx_key, source),
                          log=logged.append)
    assert store.path(onnx_key) == source and store.path(ArtifactKey("checkpoint")) == checkpoint
    for _ in range(2):
        with pytest.raises(BackendUnavailable, match="needs TensorRT"):
            store.path(ArtifactKey("engine", "fp32", "plain"))
    assert logged == []  # an engine is logged once built; none was
    assert not list(tmp_path.rglob("*.engine"))

    alone = ArtifactStore(tmp_path, given=(onnx_key, source))
    for _ in range(2):
        with pytest.raises(InputError, match="needs an export of the checkpoint"):
            alone.path(ArtifactKey("onnx", "int8", "plain"))
    assert alone.size_bytes(onnx_key) == source.stat().st_size
    assert alone.size_bytes(ArtifactKey("onnx", "int8", "plain")) is None


# --- a given ONNX --------------------------------------------------------------------------

def test_an_exported_onnx_with_its_reference(first, checkpoint, labelled, tmp_path):
    model = first.out / "artifacts" / "plain-int8cpu" / "best.onnx"
    result = bench(model, "--reference", checkpoint, "--data", labelled, "--backends",
                   "onnxruntime:cpu,torch:cpu,tensorrt", *FAST, "--out", tmp_path / "out")
    assert result.code == 0, result.stderr
    (key, row), = rows_by(result).items()
    assert key == ("onnxruntime:cpu", "fp32", "plain", "64x96") and row["status"] == "ok"
    assert row["artifact"] == "best.onnx" and row["mean_iou"] >= 0.99  # truth = reference
    assert abs(row["delta_miou"]) <= 0.1 and row["agreement"] >= 0.999
    assert row["check"] == "pass"
    assert dict(map(tuple, result.json["not_run"])) == {
        "torch:cpu fp32 plain": "runs a checkpoint; the model given is an ONNX",
        "tensorrt fp32 plain": "runs a TensorRT engine; the model given is an ONNX"}
    assert result.json["reference"] == str(checkpoint)
    assert result.json["eval_data"] == [f"2 images of {labelled} (val)"]
    assert not (tmp_path / "out" / "artifacts").exists()  # nothing exported


def test_an_exported_onnx_without_a_reference(first, tmp_path):
    model = first.out / "artifacts" / "raw-int8cpu" / "best_rawio_argmax.onnx"
    result = bench(model, "--backends", "onnxruntime:cpu", *FAST, "--out", tmp_path / "out")
    assert result.code == 0, result.stderr
    (key, row), = rows_by(result).items()
    assert key == ("onnxruntime:cpu", "fp32", "raw", "64x96") and row["status"] == "ok"
    assert row["delta_miou"] is None and row["agreement"] is None and row["check"] == ""
    assert isinstance(row["mean_iou"], float) and row["fps"] > 0
    assert result.json["reference"] == ""
    assert "reference: none (pass --reference CHECKPOINT for ΔmIoU and agreement)" in \
        result.stdout.splitlines()


def _negate_score_layers(source: Path, target: Path) -> list[str]:
    """``source`` with every score layer's weights negated (logits × −1: argmax becomes argmin),
    its metadata kept; the names of the initializers changed."""
    model = onnx.load(str(source))
    changed = []
    for init in model.graph.initializer:
        if init.name.startswith("model.score") and init.name.endswith(".weight"):
            init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
            changed.append(init.name)
    onnx.save(model, str(target))
    return changed


def test_a_broken_onnx_fails_the_regression_bounds(first, checkpoint, labelled, tmp_path):
    source = first.out / "artifacts" / "plain-int8cpu" / "best.onnx"
    broken = tmp_path / "broken.onnx"
    changed = _negate_score_layers(source, broken)
    assert "model.score_fr.weight" in changed and len(changed) == 3
    props = {p.key: p.value for p in onnx.load(str(broken), load_external_data=False)
             .metadata_props}
    assert props == {p.key: p.value for p in onnx.load(str(source)).metadata_props}

    result = bench(broken, "--reference", checkpoint, "--data", labelled,
                   "--backends", "onnxruntime:cpu", *FAST, "--out", tmp_path / "out")
    assert result.code == 1, result.stderr
    (row,) = result.json["rows"]
    assert row["status"] == "ok" and row["check"] == "FAIL"
    assert row["delta_miou"] < -10 and row["agreement"] < 0.9
    assert f"mean IU {row['delta_miou']:+.2f} points vs the reference (allowed -0.1)" \
        in row["reason"]
    assert "labels agree on" in row["reason"]
    assert "FAIL  [1]" in result.stdout and f"[1] {row['reason']}" in result.stdout
    assert set(result.files) == {"bench.txt", "bench.csv", "bench.json"}  # written, then exit 1


def test_unlabelled_frames_still_catch_a_broken_onnx_by_agreement(first, checkpoint, tmp_path):
    # --data none: no mean IU, but the label agreement with the reference holds the bound.
    source = first.out / "artifacts" / "plain-int8cpu" / "best.onnx"
    broken = tmp_path / "broken.onnx"
    _negate_score_layers(source, broken)
    result = bench(broken, "--reference", checkpoint, "--data", "none",
                   "--backends", "onnxruntime:cpu", *FAST, "--out", tmp_path / "out")
    assert result.code == 1, result.stderr
    (row,) = result.json["rows"]
    assert row["mean_iou"] is None and row["delta_miou"] is None
    assert row["agreement"] < 0.9 and row["check"] == "FAIL"
    assert "labels agree on" in row["reason"]
    good = bench(source, "--reference", checkpoint, "--data", "none",
                 "--backends", "onnxruntime:cpu", *FAST, "--out", tmp_path / "good")
    assert good.code == 0 and good.json["rows"][0]["check"] == "pass"
    assert "unlabelled" in good.json["eval_data"][0]


def test_a_model_not_trained_on_the_scenes_benches_unlabelled_by_default(tmp_path):
    # A jetson-inference trainer's checkpoint (5 DeepScene classes): the procedural scenes'
    # 8 classes are not its own, so the bench times it and compares it with its reference.
    import sys as _sys
    _sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from test_jetson_fcn import BLOCKS, jetson_layout, random_state, trainer_checkpoint

    state = random_state(jetson_layout(BLOCKS["fcn_resnet18"], 5))
    model = trainer_checkpoint(tmp_path / "model_best.pth", state, dataset="deepscene",
                               classes=5)
    result = bench(model, "--backends", "onnxruntime:cpu,torch:cpu", "--precisions", "fp32",
                   "--io", "plain", *FAST, "--out", tmp_path / "out")
    assert result.code == 0, result.stderr
    rows = rows_by(result)
    ort_row = rows[("onnxruntime:cpu", "fp32", "plain", "64x96")]
    assert ort_row["status"] == "ok" and ort_row["mean_iou"] is None
    assert ort_row["agreement"] > 0.999 and ort_row["check"] == "pass"
    assert "no labelled data for mean IU (pass --data FOLDER)" in result.stderr


# --- bad input ------------------------------------------------------------------------------

def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcn_edge.cli", "bench", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--backends", "onnxruntime:cpu,tensorflow"],
     "fcn-edge bench: --backends: unknown tensorflow; choose from tensorrt, "
     "onnxruntime:tensorrt, onnxruntime:cuda, onnxruntime:cpu, torch:cuda+graphs, torch:cuda, "
     "torch:cpu or all"),
    (["--sizes", "0x10"], "fcn-edge bench: --sizes must have each side an integer from 1 to "
                          "16384, got '0x10'"),
    (["--precisions", "fp64"], "fcn-edge bench: --precisions: unknown fp64; choose from fp32, "
                               "fp16, int8 or all"),
])
def test_bad_options_exit_1_with_one_line(args, message, checkpoint, tmp_path):
    done = _cli(checkpoint, *args, "--out", "out", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == "" and done.stderr == message + "\n"
    assert not (tmp_path / "out").exists()


def test_a_model_that_does_not_exist_exits_1(tmp_path):
    done = _cli("missing.pt", "--backends", "onnxruntime:cpu", "--out", "out", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "fcn-edge bench: missing.pt: no such model file\n"
    assert not (tmp_path / "out").exists()
