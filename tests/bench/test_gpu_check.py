"""benchmarks/gpu_check.py and its gpu_check_* modules on a CPU: the statistics, the section
runner (failures, budgets, skips, the JSON rewritten atomically), section parsing, the torchvision
comparison against a stand-in reference (our own classifiers, which carry torchvision's key
names, since torchvision does not import here), and one run of the whole CPU flow as a
subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fcn_edge.errors import InputError
from fcn_edge.models import AlexNet, ResNet18

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.py"
# The script's modules import each other by name, as Python finds them when it runs the script
# (its folder first on sys.path).
sys.path.insert(0, str(BENCHMARKS))

import gpu_check as gc  # noqa: E402  the command: SECTIONS, parse_sections, main
import gpu_check_gate as gate  # noqa: E402  the accuracy gate with PyTorch as the engine
import gpu_check_machine as machine  # noqa: E402  install, cuda_buffers, pytest_gpu
import gpu_check_models as models  # noqa: E402  latency, training, torchvision_parity
import gpu_check_runner as runner  # noqa: E402  the runner and its statistics
import gpu_check_segmentation as segmentation  # noqa: E402  the published FCNs' parity


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors: on 2 shared cores a second OpenMP thread spins more than it helps (as
    tests/models' fixture of the same name measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- statistics ---------------------------------------------------------------------------------

def test_figures_are_median_nearest_rank_p99_and_fps_from_the_median():
    samples = [float(v) for v in range(100, 0, -1)]  # 1 … 100 ms, in reverse
    assert runner.figures(samples) == {"p50_ms": 50.5, "p99_ms": 99.0, "mean_ms": 50.5,
                                   "fps": round(1000 / 50.5, 1), "runs": 100}
    slow_tail = runner.figures([2.0] * 98 + [40.0, 50.0])
    assert (slow_tail["p50_ms"], slow_tail["p99_ms"], slow_tail["fps"]) == (2.0, 40.0, 500.0)


def test_the_goal_takes_the_fastest_fp16_figure_at_512x256():
    results = {"512x256 fp32": {"fps": 5000.0},  # not fp16: never counts
               "512x256 fp16": {"fps": 900.0},
               "512x256 fp16+graph": {"fps": 1500.0},
               "1024x512 fp16+graph": {"fps": 2000.0}}  # another size: never counts
    goal = runner.goal_check(results)
    assert (goal["best"], goal["fps"], goal["meets_goal"]) == ("512x256 fp16+graph", 1500.0, True)
    results["512x256 fp16+graph"] = {"error": "RuntimeError: capture failed"}
    assert runner.goal_check(results)["meets_goal"] is False
    assert runner.goal_check({})["meets_goal"] is None


def test_label_agreement_counts_equal_labels_and_refuses_a_one_class_reference():
    reference = torch.tensor([[0, 1], [2, 3]])
    assert runner.label_agreement(reference.clone(), reference) == 1.0
    assert runner.label_agreement(torch.tensor([[0, 1], [0, 0]]), reference) == 0.5
    with pytest.raises(RuntimeError, match="one class everywhere"):
        runner.label_agreement(torch.zeros(2, 2), torch.zeros(2, 2))


def test_time_calls_stops_at_the_deadline_but_times_at_least_one_call():
    calls = []
    ctx = runner.Context("cpu", cuda=False)
    assert len(runner.time_calls(calls.append, ctx, iters=7, warmup=2)) == 7
    assert calls == [0, 1, 0, 1, 2, 3, 4, 5, 6]  # warm-up, then the timed calls
    late = replace(ctx, deadline=time.monotonic() - 1)
    assert len(runner.time_calls(lambda i: None, late, iters=7, warmup=0)) == 1


def test_pytest_summary_reads_counts_failures_and_skips():
    text = "\n".join([
        ".sF",
        "=========================== short test summary info ===========================",
        "SKIPPED [1] tests/runtime/test_backends.py:302: needs onnxruntime-gpu",
        "FAILED tests/train/test_train_cli.py::test_cuda_training - AssertionError: nan",
        "ERROR tests/regression/test_latency.py::test_x - RuntimeError: CUDA out of memory",
        "1 failed, 1 passed, 1 skipped, 900 deselected, 2 warnings, 1 error in 41.02s"])
    summary = machine.pytest_summary(text)
    assert summary["counts"] == {"failed": 1, "passed": 1, "skipped": 1, "deselected": 900,
                                 "warnings": 2, "errors": 1}
    assert [line.split()[0] for line in summary["failures"]] == ["FAILED", "ERROR"]
    assert summary["skips"] == ["SKIPPED [1] tests/runtime/test_backends.py:302: needs "
                                "onnxruntime-gpu"]


# --- the runner ---------------------------------------------------------------------------------

def _ok(ctx, record):
    record["figure"] = 42


def _fails_after_a_figure(ctx, record):
    record["measured"] = 1.5
    raise ValueError("boom\nsecond line")


def _sleeps(ctx, record):
    time.sleep(5)


def _skips(ctx, record):
    raise runner.SkipSection("nothing to do here")


def test_one_failure_never_stops_the_others_and_the_json_is_rewritten_each_time(tmp_path):
    out = tmp_path / "gpu_check.json"
    report = {"sections": {}}
    seen = []

    def save():
        runner.write_report(out, report)
        seen.append({k: r["status"] for k, r in json.loads(out.read_text())["sections"].items()})

    sections = [runner.Section("a", _fails_after_a_figure, 10), runner.Section("b", _ok, 10),
                runner.Section("c", _skips, 10), runner.Section("d", _ok, 10, needs="cuda"),
                runner.Section("e", _ok, 10, needs="device")]
    ctx = runner.Context("cuda", cuda=False, save=save)
    runner.run_sections(sections, ctx, runner.DEFAULT_BUDGET_S, report["sections"])
    records = json.loads(out.read_text())["sections"]
    assert records["a"]["status"] == "failed"
    assert records["a"]["error"] == "ValueError: boom"  # one line
    assert records["a"]["measured"] == 1.5              # what it measured before failing stays
    assert (records["b"]["status"], records["b"]["figure"]) == ("ok", 42)
    assert (records["c"]["status"], records["c"]["reason"]) == ("skipped", "nothing to do here")
    assert (records["d"]["status"], records["d"]["reason"]) == ("skipped", "no CUDA device")
    assert records["e"]["status"] == "skipped" and "--device cpu" in records["e"]["reason"]
    assert all(r["wall_s"] >= 0 for r in (records["a"], records["b"]))
    # Saved before and after each section that runs, and once for each skipped one:
    assert seen[:4] == [{"a": "running"}, {"a": "failed"},
                        {"a": "failed", "b": "running"}, {"a": "failed", "b": "ok"}]
    assert len(seen) == 8  # a, b, c: before and after; d, e: skipped
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_check.json"]  # no temporary left


def test_a_section_over_its_budget_is_stopped_and_reported_and_the_next_still_runs():
    records = {}
    scale = 3.0 / runner.DEFAULT_BUDGET_S  # caps scale with the total budget, here 3 s
    sections = [runner.Section("slow", _sleeps, 0.3 / scale),
                runner.Section("next", _ok, 0.3 / scale)]
    start = time.monotonic()
    runner.run_sections(sections, runner.Context("cpu", cuda=False), 3.0, records)
    assert time.monotonic() - start < 2.0  # the sleep of 5 s was cut short
    slow = records["slow"]
    assert slow["status"] == "failed" and slow["error"] == "stopped: over its budget of 0.3 s"
    assert slow["over_budget"] is True and 0.3 < slow["wall_s"] < 1.0
    assert records["next"]["status"] == "ok" and records["next"]["figure"] == 42


def test_sections_past_the_total_budget_are_skipped_with_the_reason():
    records = {}
    sections = [runner.Section("first", lambda ctx, record: time.sleep(0.3), 480),
                runner.Section("late", _ok, 480)]
    runner.run_sections(sections, runner.Context("cpu", cuda=False), 1.2, records)
    assert records["first"]["status"] == "ok"  # under a second is left: too little to start
    assert records["late"] == {"status": "skipped", "reason": "the total budget of 1 s is spent"}


def test_attempt_keeps_every_measurement_and_the_section_fails_on_any_error():
    results, ctx = {}, runner.Context("cpu", cuda=False)
    runner.attempt(ctx, results, "one", lambda: {"fps": 10.0})
    runner.attempt(ctx, results, "two", lambda: 1 / 0)
    assert results == {"one": {"fps": 10.0},
                       "two": {"error": "ZeroDivisionError: division by zero"}}
    with pytest.raises(RuntimeError, match="1 of 2 failed; first two: ZeroDivisionError"):
        runner.raise_failures(results)
    runner.attempt(replace(ctx, deadline=time.monotonic() - 1), results, "three", lambda: {"x": 1})
    assert results["three"]["status"] == "skipped"


def test_cuda_buffers_is_skipped_without_cuda():
    records = {}
    runner.run_sections([gc.SECTIONS["cuda_buffers"], gc.SECTIONS["pytest_gpu"]],
                    runner.Context("cpu", cuda=False), runner.DEFAULT_BUDGET_S, records)
    assert {k: (r["status"], r["reason"]) for k, r in records.items()} == {
        "cuda_buffers": ("skipped", "no CUDA device"), "pytest_gpu": ("skipped", "no CUDA device")}


# --- parsing ------------------------------------------------------------------------------------

def test_sections_are_parsed_into_run_order_and_bad_names_refused(capsys):
    assert gc.parse_sections(None) == list(gc.SECTIONS)
    assert gc.parse_sections("pytest_gpu, install") == ["install", "pytest_gpu"]
    with pytest.raises(InputError, match="unknown section.s. bogus; choose from install, "):
        gc.parse_sections("install,bogus")
    assert gc.main(["--sections", "latency,bogus", "--out", "unused.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check: unknown section(s) bogus;") and err.count("\n") == 1
    assert not Path("unused.json").exists()


# --- torchvision parity, against a stand-in reference -------------------------------------------

def test_parity_passes_for_the_same_weights_and_finds_the_first_tap_that_differs(tmp_path):
    torch.manual_seed(0)
    whole = models._parity_one(ResNet18(), "resnet18", tmp_path, "cpu")  # the section's own step
    assert "error" not in whole and len(whole["taps"]) == 3
    assert all(t["rel"] < 1e-5 for t in whole["taps"].values())
    reference = ResNet18()  # torchvision's key names: the stand-in for torchvision.models
    ours = models.load_ours(reference, "resnet18", tmp_path)
    assert len(ours.load_report.loaded) == len(reference.state_dict()) - 2  # fc is dropped
    x = torch.randn(1, 3, 64, 64)
    taps = models.compare_taps(ours, reference, "resnet18", x)
    assert all(t["ok"] and t["rel"] < 1e-5 and t["reference_scale"] > 0 for t in taps.values())
    with torch.no_grad():
        reference.layer3[0].conv1.weight.mul_(1.01)  # a 1 % change after stride 8
    taps = models.compare_taps(ours, reference, "resnet18", x)
    assert {k: t["ok"] for k, t in taps.items()} == {
        "layer2 (stride 8)": True, "layer3 (stride 16)": False, "layer4 (stride 32)": False}
    assert taps["layer3 (stride 16)"]["rel"] > 1e-3


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "mobilenet_v3_small", "googlenet"])
def test_parity_covers_the_edge_backbones(tmp_path, backbone):
    """The stand-in is our own classifier with torchvision's keys, built with the options the
    section gives torchvision's (GoogLeNet: transform_input and its auxiliary classifiers)."""
    from fcn_edge.models.googlenet import GoogLeNet
    from fcn_edge.models.mobilenet import mobilenet_v3_large, mobilenet_v3_small

    torch.manual_seed(0)
    builders = {"mobilenet_v3_large": mobilenet_v3_large, "mobilenet_v3_small": mobilenet_v3_small,
                "googlenet": GoogLeNet}
    options = {k: v for k, v in models.REFERENCE_OPTIONS.get(backbone, {}).items()
               if k != "init_weights"}   # torchvision's own switch; ours always initialises
    reference = builders[backbone](**options)
    whole = models._parity_one(reference, backbone, tmp_path, "cpu")
    assert "error" not in whole and len(whole["taps"]) == 3, whole
    assert all(t["rel"] < 1e-5 and t["reference_scale"] > 0 for t in whole["taps"].values())
    ours = models.load_ours(reference, backbone, tmp_path)
    after8 = {"mobilenet_v3_large": "features.7", "mobilenet_v3_small": "features.4",
              "googlenet": "inception4a"}[backbone]
    conv = next(m for m in dict(reference.named_modules())[after8].modules()
                if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.mul_(1.5)   # a change after the stride-8 tap: found at 16 and 32 only
    taps = models.compare_taps(ours, reference, backbone, torch.randn(1, 3, 224, 224))
    assert [t["ok"] for t in taps.values()] == [True, False, False], taps


def test_parity_compares_fc6_with_the_classifier_linear_layer(tmp_path):
    torch.manual_seed(0)
    reference = AlexNet()
    ours = models.load_ours(reference, "alexnet", tmp_path)
    x = torch.randn(1, 3, 224, 224)
    taps = models.compare_taps(ours, reference, "alexnet", x)
    assert all(t["ok"] for t in taps.values()) and taps["fc6"]["shape"] == [1, 4096]
    with torch.no_grad():
        reference.classifier[1].bias.add_(0.5)  # fc6 only: the pools still agree
    taps = models.compare_taps(ours, reference, "alexnet", x)
    assert {k: t["ok"] for k, t in taps.items()} == {
        "pool1": True, "pool2": True, "pool5": True, "fc6": False}


class _DictOut(torch.nn.Module):
    """A stand-in for torchvision's segmentation model (which does not import here): our own
    rebuild, with torchvision's keys, answering ``{"out", "aux"}`` as torchvision's does."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)

    def forward(self, x):
        return self.inner(x, aux=True)


def test_segmentation_parity_detects_the_architecture_and_finds_a_changed_head(tmp_path):
    from fcn_edge.models.torchvision_fcn import fcn_resnet18

    torch.manual_seed(0)
    reference = _DictOut(fcn_resnet18(num_classes=21))
    same = segmentation.parity_one(reference, "fcn_resnet18", tmp_path, "cpu")
    assert "error" not in same and same["detected"] == "fcn_resnet18"
    assert same["out"]["rel"] < 1e-5 and same["aux"]["rel"] < 1e-5

    class Corners(_DictOut):  # loads the same weights, upsamples differently
        def forward(self, x):
            size = x.shape[-2:]
            x3, x4 = self.inner.backbone(x)
            up = lambda t: torch.nn.functional.interpolate(  # noqa: E731
                t, size=size, mode="bilinear", align_corners=True)
            return {"out": up(self.inner.classifier(x4)), "aux": up(self.inner.aux_classifier(x3))}

    differs = segmentation.parity_one(Corners(reference.inner), "fcn_resnet18", tmp_path, "cpu")
    assert differs["error"] == "differs from torchvision at out, aux"
    assert differs["out"]["rel"] > 1e-3
    wrong = segmentation.parity_one(reference, "fcn_resnet34", tmp_path, "cpu")
    assert wrong["error"].startswith("differs from torchvision at detected as fcn_resnet18")


# --- the accuracy gate, PyTorch in the engine's place -------------------------------------------

def test_the_gate_section_runs_the_gate_on_the_cpu_stand_in_and_records_its_figures():
    records = {}
    ctx = runner.Context("cpu", cuda=False, quick=True)
    runner.run_sections([gc.SECTIONS["gate"]], ctx, runner.DEFAULT_BUDGET_S, records)
    record = records["gate"]
    assert record["status"] == "ok", record.get("error")
    assert record["engine"].startswith("PyTorch fp32 on the CPU, the stand-in")
    figures = record["results"]["fcn8s resnet18"]
    assert figures["passed"] is True and figures["failures"] == []
    assert (figures["reference"], figures["frames"], figures["precision"],
            figures["min_agreement"]) == ("onnxruntime cpu", "procedural", "fp32", 0.999)
    assert [(c["batch"], c["height"], c["width"]) for c in figures["checks"]] == [
        (1, 32, 32), (2, 48, 64), (2, 64, 96)]  # QUICK_SHAPES' min, opt, max
    assert all(c["agreement"] == 1.0 and c["rel_max_abs"] < 1e-4 and c["nan"] == 0
               for c in figures["checks"])
    assert figures["lines"][0].startswith("gate 1×32×32 logits: labels agree 100.00%")
    assert json.loads(json.dumps(record)) == record
    assert "passed True  fp32: worst agreement 100.0000%" in "\n".join(
        gc.table({"device": "cpu", "sections": records}))


def test_a_failed_gate_is_a_recorded_result_not_a_failed_section(tmp_path):
    model, onnx_path = gate.export_model(tmp_path, gate.QUICK_SHAPES)
    with torch.no_grad():  # another model than the one exported: its labels differ
        model.score_fr.weight.mul_(-1.0)
    figures = gate.gate_figures(model, onnx_path, "cpu", "fp32")
    assert figures["passed"] is False and "error" not in figures
    assert figures["failures"][0].startswith(
        "logits at 1×32×32: labels agree with ONNX Runtime on")
    assert all(c["agreement"] < 0.999 for c in figures["checks"])
    runner.raise_failures({"fcn8s resnet18": figures})  # not an error: the section stays ok


# --- the whole CPU flow -------------------------------------------------------------------------

def test_the_cpu_flow_runs_end_to_end_and_leaves_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    # One thread: two threads spin against the other tests' processes on 2 cores (2 s → 10 s).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--no-install", "--out",
         str(out), "--sections", "install,latency,training,cuda_buffers,torchvision_parity"],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["finished"] is True and report["device"] == "cpu"
    sections = report["sections"]
    assert list(sections) == ["install", "latency", "training", "cuda_buffers",
                              "torchvision_parity"]
    install = sections["install"]
    assert install["status"] == "ok" and install["torch_untouched"] is True
    assert install["pip"].startswith("not run")
    assert install["versions"]["torch"] == torch.__version__
    latency = sections["latency"]["results"]
    assert latency["64x32 fp32"]["agreement"] == 1.0 and latency["64x32 fp32"]["fps"] > 0
    assert latency["64x32 fp16"] == {"status": "skipped", "reason": "CUDA only"}
    assert sections["latency"]["goal"]["meets_goal"] is None  # 512x256 not measured in --quick
    training = sections["training"]["results"]
    assert list(training) == ["resnet18"] and training["resnet18"]["images_per_s"] > 0
    assert training["resnet18"]["loss"] > 0 and sections["training"]["batch"] == 2
    assert (sections["cuda_buffers"]["status"], sections["cuda_buffers"]["reason"]) == (
        "skipped", "no CUDA device")
    parity = sections["torchvision_parity"]
    if models.torchvision_models()[0] is None:  # as on the project's CPU machine
        assert parity["status"] == "skipped" and "torchvision" in parity["reason"]
    else:
        assert parity["status"] == "ok" and list(parity["results"]) == ["resnet18"]
    assert done.stdout.rstrip().endswith(f"JSON: {out}")  # the table comes last
