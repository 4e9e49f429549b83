"""Every numeric flag of every command is bounded while parsing (one line naming the flag and
its range, exit 1, before any work); the configs refuse the same values from Python; outputs
that cannot be written are refused before the work; an exported model given where a
checkpoint belongs says so (issue 16, items 4, 6 and 7)."""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pytest

from faults import read_only_folder, run_cli
from fcn_edge.bench.runner import BenchConfig
from fcn_edge.cli import build_parser, main
from fcn_edge.cli.args import FlagValue
from fcn_edge.config import EvalConfig, ModelConfig, TrainConfig
from fcn_edge.demo.state import DemoConfig
from fcn_edge.errors import InputError
from fcn_edge.export.exporter import ExportConfig
from fcn_edge.export.trt_options import BuildOptions
from fcn_edge.models.registry import resolve
from fcn_edge.runtime.backends.base import max_threads
from fcn_edge.runtime.bounds import Bound
from fcn_edge.runtime.run import RunConfig

CPUS = max_threads()

#: (argv, the one line fcn-edge prints): each command's numeric flags at and past their ends.
BAD_FLAGS = [
    # train (and eval's shared data flags)
    (["train", "--threads", "-2"],
     f"fcn-edge train: --threads must be an integer from 1 to {CPUS} (4 per CPU here), got -2"),
    (["train", "--threads", "100000"], "--threads must be an integer from 1 to"),
    (["train", "--workers", "-1"],
     f"fcn-edge train: --workers must be an integer from 0 to {CPUS} (4 per CPU here) "
     f"(0: load data in the training process), got -1"),
    (["train", "--max-steps", "-1"],
     "fcn-edge train: --max-steps must be an integer from 0 to 1000000000 (0: no training "
     "step; leave it out for no limit), got '-1'"),
    (["train", "--epochs", "0"], "--epochs must be an integer from 1 to 100000, got '0'"),
    (["train", "--epochs", "ten"], "--epochs must be an integer from 1 to 100000, got 'ten'"),
    (["train", "--batch-size", "0"], "--batch-size must be an integer from 1 to 4096"),
    (["train", "--num-images", "0"], "--num-images must be an integer from 1 to 1000000"),
    (["train", "--val-images", "-3"], "--val-images must be an integer from 1 to 1000000"),
    (["train", "--lr", "0"], "--lr must be positive and at most 10, got '0'"),
    (["train", "--lr", "nan"], "--lr must be positive and at most 10, got 'nan'"),
    (["train", "--momentum", "1"], "--momentum must be a number from 0 to below 1, got '1'"),
    (["train", "--weight-decay=-1e-4"], "--weight-decay must be a number from 0 to 1"),
    (["train", "--loss-sample-p", "inf"], "--loss-sample-p must be a number from 0 to below 1"),
    (["train", "--translate", "-1"], "--translate must be an integer from 0 to 4096"),
    (["train", "--scale", "0,2"], "--scale must be positive and at most 16, got '0'"),
    (["train", "--scale", "1"], "--scale takes 2 comma-separated numbers, got '1'"),
    (["train", "--class-weights", "1,nan"], "--class-weights must be a finite number ≥ 0"),
    (["train", "--task-weights", "-1"], "--task-weights must be a finite number ≥ 0"),
    (["train", "--image-size", "0x0"],
     "fcn-edge train: --image-size must have each side an integer from 1 to 16384, got '0x0'"),
    (["train", "--crop", "0x0"], "fcn-edge train: --crop must have each side an integer from 1"),
    (["train", "--crop", "big"], "--crop must look like HEIGHTxWIDTH (e.g. 512x1024), got 'big'"),
    (["train", "--seed", "-1"], "--seed must be an integer from 0 to 4294967295, got '-1'"),
    (["eval", "m.pt", "--num-images", "0"], "fcn-edge eval: --num-images must be an integer"),
    (["eval", "m.pt", "--image-size", "64x0"], "fcn-edge eval: --image-size must have each side"),
    (["eval", "m.pt", "--seed", "2.5"], "fcn-edge eval: --seed must be an integer from 0"),
    # export and build
    (["export", "m.pt", "--int8", "--calib-images", "0"],
     "fcn-edge export: --calib-images must be an integer from 1 to 100000, got '0'"),
    (["export", "m.pt", "--eval-images", "-1"], "--eval-images must be an integer from 1"),
    (["export", "m.pt", "--opset", "11"], "--opset must be an integer from 17 to 20, got '11'"),
    (["export", "m.pt", "--workspace", "-1"],
     "fcn-edge export: --workspace must be positive and at most 1024, got '-1'"),
    (["export", "m.pt", "--parity-sizes", "64x64,0x0"],
     "fcn-edge export: --parity-sizes must have each side an integer from 1 to 16384, "
     "got '0x0'"),
    (["build", "m.onnx", "--workspace", "inf"], "fcn-edge build: --workspace must be positive"),
    # run and bench
    (["run", "v.mp4", "--progress-every", "-1"],
     "fcn-edge run: --progress-every must be a number from 0 to 86400 (0: no progress lines), "
     "got '-1'"),
    (["run", "v.mp4", "--progress-every", "nan"], "--progress-every must be a number from 0"),
    (["run", "v.mp4", "--threads", "100000"], "fcn-edge run: --threads must be an integer"),
    (["run", "v.mp4", "--threads", "0"], "fcn-edge run: --threads must be an integer from 1"),
    (["run", "v.mp4", "--alpha", "1.5"], "--alpha must be a number from 0 to 1, got '1.5'"),
    (["run", "v.mp4", "--max-frames", "0"], "--max-frames must be an integer from 1"),
    (["run", "v.mp4", "--queue-size", "0"], "--queue-size must be an integer from 1 to 64"),
    (["run", "v.mp4", "--reconnect-timeout", "-5"], "--reconnect-timeout must be a number"),
    (["run", "--camera", "-1"], "fcn-edge run: --camera must be an integer from 0 to 99"),
    (["bench", "m.pt", "--images", "0"], "fcn-edge bench: --images must be an integer from 1"),
    (["bench", "m.pt", "--runs", "0"], "--runs must be an integer from 1 to 1000000"),
    (["bench", "m.pt", "--warmup", "-1"], "--warmup must be an integer from 0 to 100000"),
    (["bench", "m.pt", "--max-seconds", "0"], "--max-seconds must be positive"),
    (["bench", "m.pt", "--threads", "-1"],
     f"fcn-edge bench: --threads must be an integer from 0 to {CPUS} (4 per CPU here) "
     f"(0: every core), got -1"),
    (["bench", "m.pt", "--sizes", "64x64,0x10"], "--sizes must have each side an integer"),
    # models and demo
    (["models", "--num-classes", "0"], "fcn-edge models: --num-classes must be an integer"),
    (["models", "--size", "0x0"], "fcn-edge models: --size must have each side an integer"),
    (["demo", "--minutes", "-1"], "fcn-edge demo: --minutes must be positive and at most 10080"),
    (["demo", "--minutes", "inf"], "fcn-edge demo: --minutes must be positive"),
]


@pytest.mark.parametrize("argv, message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_bad_number_is_one_line_naming_the_flag_and_range(argv, message, capsys, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written: the folder stays empty
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"fcn-edge {argv[0]}: ") and message in err
    assert list(tmp_path.iterdir()) == []


def test_every_numeric_flag_of_every_command_is_read_by_its_range():
    """No flag is a bare int or float (argparse's type=int takes -1, nan, 100000)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bounded = set()
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.type not in (int, float), f"fcn-edge {name} {action.option_strings}"
            if isinstance(action.type, FlagValue):
                bounded.add(f"{name} {action.option_strings[-1]}")
    assert {"train --threads", "train --workers", "run --progress-every", "export --workspace",
            "train --max-steps", "export --calib-images", "bench --sizes", "models --size",
            "export --parity-sizes", "train --crop", "run --camera"} <= bounded


def test_a_flag_reads_the_rule_of_the_config_field_it_sets():
    """One rule: a flag's range is its config field's (``BOUNDS[dest]``), not a second copy."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    configs = 0
    for sub in commands.choices.values():
        for action in sub._actions:
            if isinstance(action.type, FlagValue):
                rules = resolve(action.type.rules)
                assert hasattr(rules, "BOUNDS") or hasattr(rules, "parse"), action.dest
                if hasattr(rules, "BOUNDS"):
                    assert action.dest in rules.BOUNDS, (sub.prog, action.dest)
                    configs += 1
    assert configs >= 40


#: (config, fields, the words of the refusal): the Python API refuses what the flags refuse.
BAD_CONFIGS = [
    (TrainConfig, {"threads": -2}, "threads must be an integer from 1"),
    (TrainConfig, {"threads": 100_000}, "threads must be an integer from 1"),
    (TrainConfig, {"workers": -1}, "workers must be an integer from 0"),
    (TrainConfig, {"max_steps": -1}, "max_steps must be an integer from 0"),
    (TrainConfig, {"epochs": 0}, "epochs must be an integer from 1 to 100000, got 0"),
    (TrainConfig, {"lr": math.nan}, "lr must be positive and at most 10, got nan"),
    (TrainConfig, {"image_size": (0, 0)}, "image_size must have each side"),
    (TrainConfig, {"crop": (64, -1)}, "crop must have each side"),
    (TrainConfig, {"scale": (2.0, 0.5)}, "scale is a range MIN,MAX with MIN ≤ MAX"),
    (TrainConfig, {"class_weights": (1.0, math.inf)}, "class_weights must be a finite number"),
    (TrainConfig, {"task_weights": (0.0, 0.0)}, "task_weights must be ≥ 0 and not all 0"),
    (TrainConfig, {"seed": -1}, "seed must be an integer from 0"),
    (TrainConfig, {"epochs": True}, "epochs must be an integer"),
    (EvalConfig, {"checkpoint": "m.pt", "num_images": 0}, "num_images must be an integer"),
    (EvalConfig, {"checkpoint": "m.pt", "image_size": (8, 0)}, "image_size must have each"),
    (ModelConfig, {"num_classes": 0}, "num_classes must be an integer from 1 to 10000"),
    (ExportConfig, {"checkpoint": "m.pt", "calib_images": 0}, "calib_images must be an integer"),
    (ExportConfig, {"checkpoint": "m.pt", "workspace_gb": -1.0}, "workspace_gb must be positive"),
    (ExportConfig, {"checkpoint": "m.pt", "parity_sizes": ((0, 0),)}, "parity_sizes must have"),
    (BuildOptions, {"workspace_gb": math.inf}, "workspace_gb must be positive"),
    (BenchConfig, {"model": "m.pt", "threads": -1}, "threads must be an integer from 0"),
    (BenchConfig, {"model": "m.pt", "sizes": ((0, 10),)}, "sizes must have each side"),
    (BenchConfig, {"model": "m.pt", "max_seconds": math.nan}, "max_seconds must be positive"),
]


@pytest.mark.parametrize("config, fields, message", BAD_CONFIGS,
                         ids=[f"{c.__name__}-{f}" for c, f, _ in BAD_CONFIGS])
def test_the_configs_refuse_what_the_flags_refuse(config, fields, message):
    with pytest.raises(InputError) as info:
        config(**fields)
    assert message in str(info.value)


@pytest.mark.parametrize("fields, message", [
    ({"progress_every": -1.0}, "--progress-every must be a number from 0 to 86400"),
    ({"progress_every": math.nan}, "--progress-every must be a number from 0 to 86400"),
    ({"threads": 100_000}, "--threads must be an integer from 1"),
    ({"queue_size": 0}, "--queue-size must be an integer from 1 to 64"),
    ({"alpha": 2.0}, "--alpha must be a number from 0 to 1, got 2.0"),
])
def test_run_and_demo_configs_refuse_them_when_checked(fields, message):
    with pytest.raises(InputError, match=message):
        RunConfig(model="m.onnx", source="v.mp4", **fields).check()
    with pytest.raises(InputError, match="--minutes must be positive and at most 10080"):
        DemoConfig(minutes=-1).check()


def test_values_inside_the_ranges_pass_unchanged():
    config = TrainConfig(threads=1, workers=0, max_steps=1, lr=1e-10, image_size=[32, 48],
                         scale=[0.5, 2.0], class_weights=[0.0, 2.5], seed=2**32 - 1)
    assert (config.image_size, config.scale, config.class_weights) == \
        ((32, 48), (0.5, 2.0), (0.0, 2.5))  # JSON lists become tuples
    assert BenchConfig("m.pt", sizes=((64, 64), (32, 32), (64, 64))).sizes == ((64, 64), (32, 32))
    assert Bound(0.0, 1.0, integer=False).parse("1e-3", "--x") == 0.001


# --- outputs that cannot be written: refused before the work (item 4) ------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from support import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", image_size=(32, 32))


def _one_line(argv: list[str], capsys) -> str:
    started = time.perf_counter()
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert time.perf_counter() - started < 20  # refused up front, not after the work
    return err.strip()


def test_eval_json_into_a_read_only_folder_fails_before_evaluating(checkpoint, tmp_path, capsys):
    with read_only_folder(tmp_path / "ro") as ro:
        err = _one_line(["eval", str(checkpoint), "--num-images", "2", "--image-size", "32x32",
                         "--device", "cpu", "--json", str(ro / "m.json")], capsys)
    assert err.startswith(f"fcn-edge eval: --json {ro / 'm.json'}: cannot write in {ro}")


def test_eval_predictions_under_a_file_fail_before_evaluating(checkpoint, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = _one_line(["eval", str(checkpoint), "--num-images", "2", "--device", "cpu",
                     "--save-predictions", str(tmp_path / "file" / "preds")], capsys)
    assert err.startswith(f"fcn-edge eval: --save-predictions {tmp_path / 'file' / 'preds'}: "
                          f"{tmp_path / 'file'} is a file")


def test_train_out_into_a_read_only_folder_fails_before_training(tmp_path, capsys):
    with read_only_folder(tmp_path / "ro") as ro:
        err = _one_line(["train", "--num-images", "2", "--val-images", "1", "--image-size",
                         "32x32", "--epochs", "1", "--device", "cpu", "--quiet",
                         "--out", str(ro / "run")], capsys)
    assert err.startswith(f"fcn-edge train: --out {ro / 'run'}: cannot write in {ro}")


def test_bench_out_under_a_file_fails_before_benchmarking(checkpoint, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = _one_line(["bench", str(checkpoint), "--backends", "onnxruntime:cpu", "--quiet",
                     "--out", str(tmp_path / "file" / "bench")], capsys)
    assert err == (f"fcn-edge bench: --out {tmp_path / 'file' / 'bench'}: {tmp_path / 'file'} "
                   f"is a file, not a folder; choose a path under a folder")


def test_demo_out_into_a_read_only_folder_fails_before_the_demo(tmp_path, capsys):
    with read_only_folder(tmp_path / "ro") as ro:
        err = _one_line(["demo", "--minutes", "0.1", "--out", str(ro / "demo")], capsys)
    assert err.startswith(f"fcn-edge demo: --out {ro / 'demo'}: cannot write in {ro}")


def test_build_output_into_a_read_only_folder_names_the_flag(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x07")
    with read_only_folder(tmp_path / "ro") as ro:
        err = _one_line(["build", str(model), "--output", str(ro / "m.engine")], capsys)
    assert err.startswith(f"fcn-edge build: --output {ro / 'm.engine'}: cannot write in {ro}")


# --- an exported model where the checkpoint belongs (item 7) ---------------------------------

@pytest.mark.parametrize("command", ["export", "eval"])
@pytest.mark.parametrize("name, head", [("m.onnx", None), ("renamed.pt", None),
                                        ("m.engine", b"FCNEDGE\0")])
def test_an_exported_model_is_named_as_such_not_as_a_pickle(command, name, head, tmp_path):
    from support import export_onnx, random_score_fcn8s

    onnx = export_onnx(random_score_fcn8s(), tmp_path / "export.onnx")
    path = tmp_path / name
    path.write_bytes(head + b"\0" * 64 if head else onnx.read_bytes())
    done = run_cli([command, str(path)], cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "pickled" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"fcn-edge {command}: {path} is an exported model "
        f"({'a TensorRT engine' if head else 'an ONNX model'}), not a training checkpoint: pass "
        f"the checkpoint it was exported from (the .pt fcn-edge train wrote, e.g. "
        f"runs/train/best.pt)"]
