"""``fcn-edge demo`` end to end, shrunk: every stage really runs (training, export, ONNX
Runtime, the video through OpenCV), on tiny sizes so that it takes about a minute."""
from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.demo import STAGE_NAMES, STAGES, DemoConfig, DemoState, run_demo
from fcn_edge.demo.media import overlay_grid, plot_curves, write_demo_video
from fcn_edge.errors import InputError
from support import read_video

TINY = dict(train_images=16, image_size=(64, 64), epochs=2, batch_size=4, val_images=6,
            eval_images=6, bench_sizes=((64, 96),), bench_images=2, bench_runs=3,
            bench_seconds=0.3, video_size=(64, 96), video_frames=10, samples=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    result = run_demo(DemoConfig(out_dir=str(out), **TINY), log=lines.append)
    return result, lines


def test_every_stage_runs_in_order_with_progress(demo):
    result, lines = demo
    headers = [line for line in lines if line.startswith("[")]
    assert [h.split("] ")[1].split(" ")[0] for h in headers] == list(STAGE_NAMES)
    assert headers[0].startswith("[1/7] data") and headers[-1].startswith("[7/7] report")
    assert set(result.seconds) == set(STAGE_NAMES) | {"total"}
    stages = sum(v for k, v in result.seconds.items() if k != "total")
    assert stages - 0.5 <= result.seconds["total"] <= stages + 5  # rounded to 0.1 s each


def test_training_is_announced_with_its_time_and_counts_down(demo):
    """Before training: the fixed work and its estimated time; after each epoch: time left."""
    result, lines = demo
    first = lines.index(next(line for line in lines if line.startswith("[1/7]")))
    assert lines[first + 1].startswith("  training: 16 scenes × 2 epochs at 64×64, about ")
    epochs = [line for line in lines if line.startswith("  epoch ")]
    assert epochs[0].startswith("  epoch 1/2: validation mean IU ")
    assert "training ends in about " in epochs[0] and epochs[1].endswith("training done")
    assert result.figures["sizing"] == "fixed" and result.figures["train_images"] == 16
    assert result.figures["train_estimate_s"] > 0
    assert result.figures["train_threads"] in (None, 1)
    assert "a fixed amount of work" in result.report.read_text(encoding="utf-8")


def test_the_report_has_every_section_and_its_pictures(demo):
    result, _ = demo
    text = result.report.read_text()
    for heading in ("## Evaluation", "## Training", "## Samples", "## Benchmark", "## Runtime"):
        assert heading in text
    for name in ("disc", "wire", "background"):  # per-class IoU rows
        assert f"| {name} |" in text
    assert "| onnxruntime:cpu | int8 | raw |" in text and "| torch:cpu | fp32 | plain |" in text
    for png in ("training_curve.png", "samples.png"):
        assert f"({png})" in text
        image = cv2.imread(str(result.out_dir / png))
        assert image is not None and image.std() > 5  # a picture, not a blank canvas
    samples = cv2.imread(str(result.out_dir / "samples.png"))
    assert samples.shape[1] >= 3 * 96 and samples.shape[0] >= 2 * 64  # 2 rows × 3 columns


def test_outputs_are_real_artifacts(demo):
    result, _ = demo
    out = result.out_dir
    assert (out / "train" / "best.pt").is_file()
    assert len(list((out / "data" / "JPEGImages").glob("*.jpg"))) == TINY["val_images"]
    for path in json.loads((out / "demo.json").read_text())["figures"]["artifacts"].values():
        assert path.endswith(".onnx") and (out / "artifacts") in Path(path).parents
    bench = json.loads((out / "bench" / "bench.json").read_text())["fcn_edge_bench"]
    ok = [r for r in bench["rows"] if r["status"] == "ok"]
    assert {r["precision"] for r in ok} == {"fp32", "fp16", "int8"}
    assert all(r["check"] == "pass" for r in ok)
    frames = read_video(out / "demo_overlay.avi")
    assert len(frames) == TINY["video_frames"] and frames[0].shape == (64, 96, 3)
    stats = json.loads((out / "run_stats.json").read_text())
    assert stats["fcn_edge_run"]["frames"] == TINY["video_frames"]


def test_the_video_pans_across_scenes(tmp_path):
    path = write_demo_video(tmp_path / "v.avi", 8, (48, 64))
    frames = read_video(path)
    assert len(frames) == 8 and frames[0].shape == (48, 64, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 5  # it moves


def test_curves_and_grid(tmp_path):
    history = [{"mean_iou": 0.2 + 0.1 * i, "pixel_accuracy": 0.8, "train_loss": 1.0 / (i + 1)}
               for i in range(4)]
    curve = cv2.imread(str(plot_curves(tmp_path / "c.png", history)))
    assert curve.shape == (360, 640, 3) and (curve < 128).any()
    tile = np.full((10, 12, 3), 50, np.uint8)
    grid = cv2.imread(str(overlay_grid(tmp_path / "g.png", [[tile, tile]], ("a", "b"))))
    assert grid.shape[1] == 2 * (12 + 4)
    with pytest.raises(ValueError):
        overlay_grid(tmp_path / "empty.png", [], ("a",))


def test_the_grid_names_the_colours_in_a_legend(tmp_path):
    """A column at the right of the sample grid: each class's swatch, in its palette colour."""
    tile = np.full((64, 96, 3), 50, np.uint8)
    classes, palette = ("background", "disc", "wire"), [(0, 0, 0), (200, 30, 40), (20, 220, 60)]
    plain = cv2.imread(str(overlay_grid(tmp_path / "p.png", [[tile] * 3] * 2, "abc")))
    grid = cv2.imread(str(overlay_grid(tmp_path / "g.png", [[tile] * 3] * 2, "abc",
                                       legend=(classes, palette))))
    assert grid.shape[0] == plain.shape[0] and grid.shape[1] >= plain.shape[1] + 120
    assert (grid[:, :plain.shape[1]] == plain).all()  # the pictures are untouched
    column = grid[:, plain.shape[1]:]
    for r, g, b in palette[1:]:
        assert (column == (b, g, r)).all(-1).sum() >= 25  # a swatch, BGR on disk


def test_the_grid_at_the_demo_s_own_sizes_has_its_legend(tmp_path):
    """The report's grid: DemoConfig's samples rows of video_size tiles and the scenes' 8
    classes (the legend column once ran past its right edge here and the demo crashed)."""
    from fcn_edge.data.procedural import PROCEDURAL_CLASSES as CLASSES

    config = DemoConfig()
    tile = np.full((*config.video_size, 3), 50, np.uint8)
    palette = [(40 * i % 256, 90, 200 - 20 * i) for i in range(len(CLASSES))]
    grid = cv2.imread(str(overlay_grid(tmp_path / "g.png", [[tile] * 3] * config.samples,
                                       ("image", "ground truth", "prediction"),
                                       legend=(CLASSES, palette))))
    column = grid[:, 3 * (config.video_size[1] + 4):]
    assert (column[:, -1] == 255).all()  # the legend ends inside its column
    for r, g, b in palette[1:]:
        assert (column == (b, g, r)).all(-1).sum() >= 25


def test_bad_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match="--minutes"):
        run_demo(DemoConfig(out_dir=str(tmp_path / "x"), minutes=0))
    assert not (tmp_path / "x").exists()
    done = subprocess.run([sys.executable, "-m", "fcn_edge", "demo", "--minutes", "-1",
                           "--out", str(tmp_path / "y")], capture_output=True, text=True)
    assert done.returncode == 1 and "--minutes must be positive" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_stages_are_named_functions_in_order_and_nothing_imports_the_pipeline():
    assert STAGE_NAMES == ("data", "train", "evaluate", "export", "bench", "run", "report")
    assert [name for name, _ in STAGES] == list(STAGE_NAMES)
    assert all(callable(stage) for _, stage in STAGES)
    demo = Path(__file__).resolve().parents[2] / "fcn_edge" / "demo"
    for module in ("stages.py", "report.py", "media.py", "state.py"):
        tree = ast.parse((demo / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and node.level == 1 and not node.module for alias in node.names}
        assert not {m for m in imported if m in ("pipeline", "fcn_edge.demo.pipeline")}, \
            f"demo/{module} imports the pipeline: a cycle"


def test_the_state_the_stages_share_is_typed_fields():
    names = {f.name for f in dataclasses.fields(DemoState)}
    assert {"checkpoint", "history", "metrics", "bench", "run_model", "run_stats",
            "report"} <= names
    state = DemoState(Path("out"))
    with pytest.raises(AttributeError):  # a misspelt name fails where it is written
        state.chekpoint = Path("best.pt")


def test_the_demo_takes_any_registered_backbone(tmp_path):
    """``--backbone``: the same pipeline on an edge trunk, named in the report; a name that
    is not registered is refused before any work, in one line."""
    out = tmp_path / "mnv3"
    result = run_demo(DemoConfig(out_dir=str(out), backbone="mobilenet_v3_small", **TINY),
                      log=lambda line: None)
    report = result.report.read_text(encoding="utf-8")
    assert "FCN-8s mobilenet_v3_small" in report
    config = json.loads((out / "train" / "config.json").read_text(encoding="utf-8"))
    assert config["model"]["backbone"] == "mobilenet_v3_small"
    with pytest.raises(InputError, match="--backbone 'resnet19' is not a backbone"):
        run_demo(DemoConfig(out_dir=str(tmp_path / "x"), backbone="resnet19"))
    assert not (tmp_path / "x").exists()
