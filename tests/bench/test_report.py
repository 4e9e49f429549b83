"""The bench's table, CSV and JSON, on a report built by hand; files written atomically."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import fields

import pytest

from fcn_edge.bench.report import format_table, to_csv, to_json, write_report
from fcn_edge.bench.runner import BenchReport, BenchRow

CAST = "ORT CPU inserts casts and computes fp16 convolutions in fp32"
NO_CUDA = 'onnxruntime has no CUDAExecutionProvider: pip install "fcn-edge[gpu]"'
RAW = "raw-IO + argmax is an exported graph; PyTorch runs the checkpoint (plain IO)"
INT8 = "no PyTorch int8 path; int8 runs as a QDQ ONNX"


def _report(sgemm: float | None = None, reference: str = "best.pt") -> BenchReport:
    rows = [
        BenchRow("onnxruntime:cpu", "fp32", "plain", "64x96", artifact="best.onnx",
                 artifact_mb=44.8, model_p50_ms=5.43, model_p99_ms=7.36, e2e_p50_ms=5.55,
                 e2e_p99_ms=5.7, fps=180.2, gflops_per_s=82.0, vs_torch=3.66, mean_iou=0.6125,
                 delta_miou=-0.04, agreement=0.99951, check="pass"),
        BenchRow("onnxruntime:cpu", "fp16", "plain", "64x96", reason=CAST, model_p50_ms=9.5,
                 model_p99_ms=10.25, delta_miou=0.31, check="pass"),
        BenchRow("onnxruntime:cpu", "fp16", "raw", "64x96", reason=CAST, model_p50_ms=123.4,
                 model_p99_ms=130.0, check="pass"),
        BenchRow("onnxruntime:cuda", "fp32", "plain", "all", "unavailable", NO_CUDA),
        BenchRow("onnxruntime:cuda", "int8", "plain", "all", "unavailable", NO_CUDA),
        BenchRow("onnxruntime:cpu", "int8", "plain", "64x96", reason=CAST + "; mean IU -3.00",
                 delta_miou=-3.0, check="FAIL"),
    ]
    machine = {"processor": "Test CPU", "cpus": 2, "threads": 1, "fcn_edge": "0.1.0",
               "date": "2026-01-02"}
    if sgemm is not None:
        machine["sgemm_gflops"] = sgemm
    return BenchReport(rows, machine, eval_data=["2 scenes of 64×96", "2 scenes of 64×96"],
                       reference=reference, model_gflops={"64x96": 1.234, "128x192": None},
                       not_run=[("torch:cpu fp32 raw", RAW), ("torch:cpu int8 plain", INT8),
                                ("torch:cpu int8 raw", RAW)])


def test_table_has_a_header_and_one_line_per_row():
    lines = format_table(_report()).splitlines()
    assert lines[0].split() == ["backend", "prec", "io", "size", "status", "MB", "model", "ms",
                                "p50/p99", "e2e", "ms", "p50/p99", "FPS", "GFLOP/s", "×torch",
                                "mIoU", "ΔmIoU", "agree", "%", "check"]
    assert lines[1].split() == ["onnxruntime:cpu", "fp32", "plain", "64x96", "ok", "44.80",
                                "5.43/7.36", "5.55/5.70", "180.2", "82.00", "3.66", "0.6125",
                                "-0.04", "99.95", "pass"]
    assert lines[2].split()[6:] == ["9.50/10.25", "-", "-", "-", "-", "-", "+0.31", "-",
                                    "pass", "[1]"]
    assert "123.4/130.0" in lines[3]


def test_notes_are_numbered_once_per_distinct_reason():
    lines = format_table(_report()).splitlines()
    rows = lines[1:7]
    assert [r.rsplit("  ", 1)[-1] if "[" in r else "" for r in rows] == [
        "", "[1]", "[1]", "[2]", "[2]", "[3]"]
    assert lines[7:10] == [f"[1] {CAST}", f"[2] {NO_CUDA}", f"[3] {CAST}; mean IU -3.00"]
    assert not any(line.startswith("[4]") for line in lines)


def test_not_run_is_grouped_by_reason():
    lines = format_table(_report()).splitlines()
    not_run = [line for line in lines if line.startswith("not run:")]
    assert not_run == [f"not run: torch:cpu fp32 raw, torch:cpu int8 raw: {RAW}",
                       f"not run: torch:cpu int8 plain: {INT8}"]


def test_the_setting_follows_the_table():
    text = format_table(_report())
    assert "machine: Test CPU, 2 CPUs, 1 threads for every CPU backend; fcn-edge 0.1.0, " \
           "2026-01-02" in text.splitlines()
    assert "model GFLOPs per inference: 64x96: 1.2" in text.splitlines()  # None left out
    assert "reference: best.pt in PyTorch fp32 on the CPU" in text.splitlines()
    assert text.splitlines()[-1] == "data: 2 scenes of 64×96"  # said once
    assert text.count("data: ") == 1


def test_sgemm_line_only_when_measured():
    assert "sgemm" not in format_table(_report())
    text = format_table(_report(sgemm=140.3))
    assert ("sgemm ceiling on 1 threads: 140.3 GFLOP/s (model GFLOP/s above is achieved "
            "arithmetic at the model-only median)") in text.splitlines()


def test_without_a_reference_the_table_says_how_to_get_one():
    assert "reference: none (pass --reference CHECKPOINT for ΔmIoU and agreement)" in \
        format_table(_report(reference="")).splitlines()


def test_csv_header_is_the_row_fields_and_parses_back():
    text = to_csv(_report())
    assert text.splitlines()[0].split(",") == [f.name for f in fields(BenchRow)]
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 6
    assert parsed[0]["backend"] == "onnxruntime:cpu" and parsed[0]["model_p50_ms"] == "5.43"
    assert float(parsed[0]["agreement"]) == 0.99951 and parsed[0]["check"] == "pass"
    assert parsed[3]["status"] == "unavailable" and parsed[3]["reason"] == NO_CUDA  # quoted
    assert parsed[3]["model_p50_ms"] == ""  # None
    assert parsed[5]["reason"] == CAST + "; mean IU -3.00"


def test_json_parses_with_every_part_of_the_report():
    data = json.loads(to_json(_report(sgemm=1.5)))
    assert list(data) == ["fcn_edge_bench"]
    bench = data["fcn_edge_bench"]
    assert [r["status"] for r in bench["rows"]] == ["ok"] * 3 + ["unavailable"] * 2 + ["ok"]
    assert bench["rows"][0]["fps"] == 180.2 and bench["rows"][3]["fps"] is None
    assert set(bench["rows"][0]) == {f.name for f in fields(BenchRow)}
    assert bench["machine"]["sgemm_gflops"] == 1.5
    assert bench["not_run"][1] == ["torch:cpu int8 plain", INT8]
    assert bench["model_gflops"] == {"64x96": 1.234, "128x192": None}
    assert "64×96" in to_json(_report())  # written as text, not escaped


def test_write_report_writes_three_files_atomically(tmp_path):
    out = tmp_path / "nested" / "out"
    report = _report()
    written = write_report(report, out)
    assert written == {name: out / name for name in ("bench.txt", "bench.csv", "bench.json")}
    assert sorted(p.name for p in out.iterdir()) == ["bench.csv", "bench.json", "bench.txt"]
    assert (out / "bench.txt").read_text(encoding="utf-8") == format_table(report) + "\n"
    assert (out / "bench.csv").read_text(encoding="utf-8") == to_csv(report)
    assert json.loads((out / "bench.json").read_text(encoding="utf-8")) == \
        json.loads(to_json(report))
    # Written again over the old files: replaced, still no temporary left beside them.
    report.rows = report.rows[:1]
    write_report(report, out)
    assert sorted(p.name for p in out.iterdir()) == ["bench.csv", "bench.json", "bench.txt"]
    assert len((out / "bench.csv").read_text().splitlines()) == 2


def test_a_report_that_cannot_be_written_leaves_the_old_files(tmp_path):
    write_report(_report(), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    broken = _report()
    broken.machine["sgemm_gflops"] = object()  # not JSON
    with pytest.raises(TypeError):
        write_report(broken, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_speed_ratios_keep_two_decimals_below_one():
    """×torch and ×base are ratios: 0.59, not the 0.5900 the mean IU column is given."""
    row = BenchRow("torch:cpu", "fp32", "plain", "64x96", vs_torch=0.59, vs_baseline=0.5,
                   mean_iou=0.59)
    cells = format_table(BenchReport([row])).splitlines()[1].split()
    assert cells.count("0.59") == 1 and "0.5900" in cells and "0.5000" not in cells
