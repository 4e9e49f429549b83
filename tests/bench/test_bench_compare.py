"""`fcn-edge bench --baseline` and `--profile`: a second real checkpoint (a ResNet18 FCN-32s
beside the FCN-8s of conftest) through the same rows in the same run, and ONNX Runtime's own
profiler on every ONNX Runtime CPU row, on real exports. Tiny frames, two images, three timed
calls: one bench (module fixture) serves most tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from fcn_edge.bench.report import format_table, profile_text, to_csv, write_report
from fcn_edge.bench.runner import BenchConfig, bench
from fcn_edge.errors import InputError
from faults import limit_file_size, run_cli
from support import make_checkpoint

pytestmark = pytest.mark.usefixtures("restore_torch_threads")
SIZE = "32x64"
FAST = dict(backends=("onnxruntime:cpu", "torch:cpu"), precisions=("fp32",), io=("plain",),
            sizes=((32, 64),), images=2, runs=3, warmup=1, threads=1)
CLI_FAST = ["--backends", "onnxruntime:cpu,torch:cpu", "--precisions", "fp32", "--io", "plain",
            "--sizes", SIZE, "--images", "2", "--runs", "3", "--warmup", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """A second real checkpoint: the same trunk as an FCN-32s (one upsampling, no skips)."""
    return make_checkpoint(tmp_path_factory.mktemp("baseline") / "fcn32s.pt", name="fcn32s")


@pytest.fixture(scope="module")
def compared(checkpoint, baseline, tmp_path_factory):
    """The FCN-8s benched with the FCN-32s as its baseline, five profiled calls per ORT row."""
    out = tmp_path_factory.mktemp("compare")
    logged: list[str] = []
    config = BenchConfig(str(checkpoint), baseline=str(baseline), profile=5, out_dir=str(out),
                         **FAST)
    report = bench(config, log=logged.append)
    write_report(report, out)
    data = json.loads((out / "bench.json").read_text(encoding="utf-8"))["fcn_edge_bench"]
    return report, data, logged, out


def _by_row(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["backend"], r["precision"], r["io"], r["size"]): r for r in rows}


def test_vs_baseline_is_the_baseline_median_over_the_rows_from_the_reports_numbers(compared):
    _, data, _, _ = compared
    ours, theirs = _by_row(data["rows"]), _by_row(data["baseline_rows"])
    assert set(ours) == set(theirs) == {("onnxruntime:cpu", "fp32", "plain", SIZE),
                                        ("torch:cpu", "fp32", "plain", SIZE)}
    for key, row in ours.items():
        assert row["status"] == theirs[key]["status"] == "ok"
        assert row["vs_baseline"] == pytest.approx(
            theirs[key]["e2e_p50_ms"] / row["e2e_p50_ms"], abs=0.006)  # rounded to 2 places
        assert theirs[key]["vs_baseline"] is None
        assert theirs[key]["fps"] > 0 and theirs[key]["agreement"] == pytest.approx(1, abs=1e-3)
    # Each model has its own PyTorch reference row: ×torch is within each model's rows.
    assert ours[("torch:cpu", "fp32", "plain", SIZE)]["vs_torch"] == 1.0
    assert theirs[("torch:cpu", "fp32", "plain", SIZE)]["vs_torch"] == 1.0


def test_each_baseline_row_is_opened_and_timed_with_the_models_row(compared, checkpoint, baseline):
    _, _, logged, out = compared
    rows = [line for line in logged if line.startswith(("onnxruntime:cpu ", "torch:cpu "))]
    assert rows == [f"onnxruntime:cpu fp32 plain {SIZE}: {checkpoint.stem}.onnx",
                    f"onnxruntime:cpu fp32 plain {SIZE}: {baseline.stem}.onnx",
                    f"torch:cpu fp32 plain {SIZE}: {checkpoint.name}",
                    f"torch:cpu fp32 plain {SIZE}: {baseline.name}"]
    # The baseline's exports have their own folder: two best.pt never overwrite each other.
    assert (out / "artifacts" / "baseline" / "plain-int8cpu" / f"{baseline.stem}.onnx").is_file()


def test_the_table_shows_the_ratio_and_the_baselines_rows_under_their_heading(compared,
                                                                            baseline):
    report, data, _, out = compared
    lines = format_table(report).splitlines()
    header = lines[0].split()
    assert header[header.index("×torch") + 1] == "×base"
    heading = lines.index(f"baseline {baseline}:")
    assert heading == 1 + len(report.rows)
    ratio = header.index("×base") - 4  # each "… ms p50/p99" header is 3 words, a cell 1
    assert float(lines[1].split()[ratio]) == report.rows[0].vs_baseline
    assert [line.split()[0] for line in lines[heading + 1:heading + 3]] == [
        "onnxruntime:cpu", "torch:cpu"]
    assert any(line.startswith(f"baseline: {baseline}, run through the same rows")
               for line in lines)
    assert data["baseline"] == str(baseline) and data["baseline_gflops"][SIZE] > 0
    csv_lines = to_csv(report).splitlines()
    assert csv_lines[0].endswith(",vs_torch,vs_baseline,mean_iou,delta_miou,agreement,check,"
                                 "model")
    assert [line.rsplit(",", 1)[1] for line in csv_lines[1:]] == ["model"] * 2 + ["baseline"] * 2


def test_the_profile_accounts_for_the_time_per_node_and_op_type(compared):
    report, data, _, _ = compared
    assert [(p["model"], p["row"]) for p in data["profiles"]] == [
        ("model", f"onnxruntime:cpu fp32 plain {SIZE}"),
        ("baseline", f"onnxruntime:cpu fp32 plain {SIZE}")]
    for profile in data["profiles"]:
        assert profile["error"] == "" and profile["calls"] == 5
        node_ms = sum(o["ms"] for o in profile["by_op"])
        assert node_ms == pytest.approx(profile["node_ms"], rel=1e-6)
        assert 0 < profile["node_ms"] <= profile["run_ms"]  # the nodes inside the profiled runs
        assert sum(o["share"] for o in profile["by_op"]) == pytest.approx(1.0, abs=1e-6)
        assert sum(n["ms"] for n in profile["top"]) <= profile["node_ms"] + 1e-9
        assert profile["top"] == sorted(profile["top"], key=lambda n: -n["ms"])
        ops = {o["op"]: o for o in profile["by_op"]}
        # The final bilinear upsampling is exported as a Resize (cells on the output grid,
        # upsample.grid_upsample); FCN-8s's two skips' are ConvTransposes, one group a class.
        # (ONNX Runtime runs a Resize of constant scales as its own Upsample kernel at times)
        final = ops.get("Resize") or ops.get("Upsample")
        assert final and final["nodes"] == 1 and final["ms"] > 0, list(ops)
        if profile["model"] == "model":
            assert ops["ConvTranspose depthwise"]["gflops_per_s"] > 0
        assert ops["Conv"]["gflops"] > 0 and ops["Conv"]["nodes"] >= 20
    # FLOPs from ORT's graph and trace agree with the ONNX file's count (ORT pads the score
    # layers' 8 channels to its block size: a little more, never less).
    gflops = data["profiles"][0]["gflops"]
    assert data["model_gflops"][SIZE] <= gflops <= data["model_gflops"][SIZE] * 1.05


def test_the_trace_is_onnx_runtimes_own_file_moved_under_out(compared):
    _, data, _, out = compared
    for profile in data["profiles"]:
        trace = Path(profile["trace"])
        assert trace.parent == out / "profile" and trace.is_file()
        events = json.loads(trace.read_text(encoding="utf-8"))
        runs = [e for e in events if e.get("name") == "model_run"]
        assert len(runs) == 5 + 1  # the warm-up call is in the file, not in the summary
        assert any(e.get("cat") == "Node" and e["args"]["op_name"] in ("Resize", "Upsample")
                   for e in events)
    assert sorted(p.name for p in (out / "profile").iterdir()) == [
        f"baseline-onnxruntime-cpu-fp32-plain-{SIZE}.json",
        f"model-onnxruntime-cpu-fp32-plain-{SIZE}.json"]  # no temporary left beside them


def test_the_profile_text_is_written_and_reads_per_op_then_per_node(compared):
    report, _, _, out = compared
    text = (out / "bench_profile.txt").read_text(encoding="utf-8")
    assert text == profile_text(report) + "\n"
    lines = text.splitlines()
    assert lines[0].startswith(f"profile of model onnxruntime:cpu fp32 plain {SIZE}: 5 calls, ")
    assert lines[1].split() == ["op", "type", "nodes", "ms", "share", "GFLOPs", "GFLOP/s", "%",
                                "of", "sgemm"]
    assert lines[2].split()[0] == report.profiles[0].by_op[0].op
    assert sum(line.strip().startswith("slowest nodes") for line in lines) == 2


def test_a_bad_baseline_is_one_error_before_any_work(checkpoint, tmp_path):
    for given, message in ((tmp_path / "missing.pt", "no such model file"),
                           (tmp_path / "notes.onnx", "")):
        if given.suffix == ".onnx":
            given.write_text("not a model")
        config = BenchConfig(str(checkpoint), baseline=str(given), out_dir=str(tmp_path / "out"),
                             **FAST)
        with pytest.raises(Exception) as raised:
            bench(config, log=lambda line: None)
        assert str(raised.value).startswith(f"--baseline {given}")
        assert message in str(raised.value) and "\n" not in str(raised.value)
        assert not (tmp_path / "out").exists()  # nothing exported, nothing written
    with pytest.raises(InputError, match="--baseline .*missing.pt: no such model file"):
        bench(BenchConfig(str(checkpoint), baseline=str(tmp_path / "missing.pt"),
                          out_dir=str(tmp_path / "out"), **FAST))


def test_the_cli_end_to_end_with_a_baseline_and_a_profile(checkpoint, baseline, tmp_path):
    done = run_cli(["bench", checkpoint, *CLI_FAST, "--baseline", baseline, "--profile", "5",
                    "--out", "out", "--quiet"], cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert "×base" in out.splitlines()[0] and f"baseline {baseline}:" in out
    assert f"profile of model onnxruntime:cpu fp32 plain {SIZE}: 5 calls" in out
    assert f"profile of baseline onnxruntime:cpu fp32 plain {SIZE}: 5 calls" in out
    assert out.index("data: ") < out.index("profile of model")  # after the table's setting
    assert out.splitlines()[-1] == ("wrote out/bench.txt, out/bench.csv, out/bench.json, "
                                    "out/bench_profile.txt")


def test_the_cli_refuses_a_missing_baseline_in_one_line(checkpoint, tmp_path):
    done = run_cli(["bench", checkpoint, *CLI_FAST, "--baseline", "missing.pt", "--out", "out"],
                   cwd=tmp_path, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "fcn-edge bench: --baseline missing.pt: no such model file\n"
    assert not (tmp_path / "out").exists()


def test_a_profile_that_cannot_be_written_is_said_and_the_bench_goes_on(compared, tmp_path):
    """Files capped at 2 MB: the profiling session cannot save its optimised graph (45 MB), so
    that row's profile says why; the table and its files are written all the same."""
    _, _, _, out = compared
    model = out / "artifacts" / "plain-int8cpu" / "best.onnx"
    done = run_cli(["bench", model, *CLI_FAST, "--profile", "3", "--out", "out", "--quiet"],
                   cwd=tmp_path, timeout=120, preexec_fn=limit_file_size(2_000_000))
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("profile of model"))
    assert line.startswith(f"profile of model onnxruntime:cpu fp32 plain {SIZE}: none "
                           f"(onnxruntime's profiler failed on best.onnx: ")
    profile, = json.loads((tmp_path / "out" / "bench.json").read_text())["fcn_edge_bench"][
        "profiles"]
    assert profile["error"] and profile["calls"] == 0 and profile["trace"] == ""
    assert list((tmp_path / "out" / "profile").iterdir()) == []  # nothing half-written left


def _only_at(source: Path, target: Path, height: int, width: int) -> None:
    """``source`` whose logits pass through a Reshape to 1×C×``height``×``width``: the same
    model at that size, an ONNX Runtime error at any other (its metadata kept)."""
    model = onnx.load(str(source))
    graph = model.graph
    name = graph.output[0].name
    producer = next(n for n in graph.node if name in n.output)
    producer.output[list(producer.output).index(name)] = name + "_free"
    classes = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    graph.initializer.append(numpy_helper.from_array(
        np.array([1, classes, height, width], np.int64), "fixed_shape"))
    graph.node.append(helper.make_node("Reshape", [name + "_free", "fixed_shape"], [name]))
    onnx.save(model, str(target))


def test_a_baseline_failing_mid_bench_fails_its_row_and_the_models_is_measured(compared,
                                                                            tmp_path):
    """At 64×96 the baseline's ONNX Runtime call fails inside the interleaved timing: its row
    says why, the model's row of that combination is measured without it."""
    _, _, _, out = compared
    model = out / "artifacts" / "plain-int8cpu" / "best.onnx"
    _only_at(model, tmp_path / "fixed.onnx", 32, 64)
    sizes = dict(FAST, sizes=((32, 64), (64, 96)), backends=("onnxruntime:cpu",))
    config = BenchConfig(str(model), baseline=str(tmp_path / "fixed.onnx"),
                         out_dir=str(tmp_path / "out"), **sizes)
    report = bench(config, log=lambda line: None)
    ours = {r.size: r for r in report.rows}
    theirs = {r.size: r for r in report.baseline_rows}
    assert theirs[SIZE].status == "ok" and ours[SIZE].vs_baseline > 0
    assert theirs["64x96"].status == "failed" and theirs["64x96"].e2e_p50_ms is None
    assert theirs["64x96"].reason.startswith("onnxruntime failed on a 1×64×96 batch of ")
    assert ours["64x96"].status == "ok" and ours["64x96"].e2e_p50_ms > 0
    assert ours["64x96"].mean_iou is not None and ours["64x96"].vs_baseline is None

