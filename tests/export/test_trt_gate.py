"""The accuracy gate's TensorRT-free half (fcn_edge/export/trt_gate.py): bounds, shapes, frames,
the comparison of one output, the verdict, the refusal and the reference backend.

Real fcn-edge ONNX artifacts (the exporter's, small) run in real ONNX Runtime on both sides: the
"engine" is a second ONNX Runtime session on the same ONNX, faithful or with one fault put into
its outputs (NaN, Inf, labels moved on a share of pixels, the wrong shape), as a broken TensorRT
engine would give them. Frames come from the procedural scenes, or from real image files.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.errors import BackendUnavailable, InputError, ModelFormatError
from fcn_edge.export import frames, parity, trt_gate
from fcn_edge.export.trt_gate import (GateBounds, OutputCheck, compare_output, failure_advice,
                                      gate_bounds, gate_feeds, gate_shapes, judge,
                                      reference_backend, refuse, run_gate)
from fcn_edge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from fcn_edge.runtime.metadata import Shapes
from fcn_edge.runtime.onnx_file import read_onnx_metadata

from support_multi_io import export_artifact, make_multi_checkpoint

#: A small profile: three distinct corners, batches of 1 and 2, no multiple of 32 but the first.
SHAPES = Shapes((1, 32, 32), (2, 48, 64), (2, 56, 72))
BOUNDS = GateBounds("fp32", 0.999)


@pytest.fixture(scope="module")
def plain(checkpoint, tmp_path_factory) -> Path:
    """FCN-8s ResNet18, 8 classes, logits out."""
    return export_artifact(checkpoint, tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def labels_out(checkpoint, tmp_path_factory) -> Path:
    """The same model with ArgMax in the graph: N×H×W labels out."""
    return export_artifact(checkpoint, tmp_path_factory.mktemp("argmax"), argmax=True)


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory) -> Path:
    """RGB + depth + HHA in, two heads out (paper §5)."""
    tmp = tmp_path_factory.mktemp("rgbd")
    ckpt = make_multi_checkpoint(tmp / "rgbd.pt",
                                 inputs=(("rgb", 3), ("depth", 1), ("hha", 3)))
    return export_artifact(ckpt, tmp)


def _sessions(path: Path):
    """(engine, reference): two ONNX Runtime CPU sessions on ``path``, the second the gate's."""
    return OnnxRuntimeBackend(path, provider="cpu"), reference_backend(path)


def _gate(path: Path, fault=None, shapes: Shapes = SHAPES, **options):
    """run_gate with an "engine" that is ONNX Runtime plus ``fault(outputs, feed)``."""
    engine, reference = _sessions(path)
    with engine, reference:
        run = engine.run if fault is None else (lambda feed: fault(engine.run(feed), feed))
        return run_gate(engine.meta, run, reference.run, shapes, **options)


# --- torch stays out ----------------------------------------------------------------------------

def test_frames_and_the_gate_import_without_torch():
    code = ("import sys, fcn_edge.export.frames, fcn_edge.export.trt_gate; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_moved_names_are_still_importable_from_their_old_homes():
    from fcn_edge.bench import accuracy
    from fcn_edge import metrics

    assert (parity.scene_arrays, parity.sample_arrays, parity.artifact_feed,
            parity.artifact_input, parity.Infer) == (
        frames.scene_arrays, frames.sample_arrays, frames.artifact_feed, frames.artifact_input,
        frames.Infer)
    assert accuracy.THRESHOLDS is metrics.THRESHOLDS and accuracy.Threshold is metrics.Threshold


# --- bounds and shapes --------------------------------------------------------------------------

def test_bounds_come_from_the_bench_thresholds_per_precision():
    assert {p: gate_bounds(p).min_agreement for p in ("fp32", "fp16", "int8")} == {
        "fp32": 0.999, "fp16": 0.995, "int8": 0.98}
    assert gate_bounds("fp16") == GateBounds("fp16", 0.995)
    with pytest.raises(InputError) as refused:
        gate_bounds("bf16")
    assert str(refused.value) == "no accuracy bound for precision 'bf16'; known: fp32, fp16, int8"
    with pytest.raises(InputError, match="bf16"):
        failure_advice("bf16")


def test_gate_shapes_are_min_opt_max_without_duplicates_in_order():
    assert gate_shapes(SHAPES) == [(1, 32, 32), (2, 48, 64), (2, 56, 72)]
    assert gate_shapes(Shapes((1, 32, 32), (1, 32, 32), (4, 64, 64))) == [(1, 32, 32),
                                                                          (4, 64, 64)]
    assert gate_shapes(Shapes((1, 64, 64), (2, 64, 64), (2, 64, 64))) == [(1, 64, 64),
                                                                          (2, 64, 64)]
    assert gate_shapes(Shapes((2, 48, 48), (2, 48, 48), (2, 48, 48))) == [(2, 48, 48)]


# --- the frames ---------------------------------------------------------------------------------

def test_procedural_feeds_are_the_runtime_preprocessing_of_scenes_batched_per_shape(plain):
    meta = read_onnx_metadata(plain)
    feeds = gate_feeds(meta, SHAPES)
    assert [shape for shape, _ in feeds] == gate_shapes(SHAPES)
    for (n, h, w), feed in feeds:
        assert list(feed) == ["images"]
        assert feed["images"].shape == (n, 3, h, w) and feed["images"].dtype == np.float32
    two = feeds[1][1]["images"]
    assert not np.array_equal(two[0], two[1])  # a batch of different scenes
    first = frames.scene_arrays(meta, [(48, 64)] * 2, 2024 + 1)[0]
    np.testing.assert_array_equal(two[0], frames.artifact_feed(meta, first)["images"][0])
    again = gate_feeds(meta, SHAPES)
    assert all(np.array_equal(a[1]["images"], b[1]["images"]) for a, b in zip(feeds, again))
    raw = gate_feeds(meta.with_(raw_io=True), SHAPES)[2][1]
    assert list(raw) == ["frames"] and raw["frames"].shape == (2, 56, 72, 3)
    assert raw["frames"].dtype == np.uint8


def test_rgbd_models_get_depth_and_hha_with_their_scenes(rgbd):
    meta = read_onnx_metadata(rgbd)
    assert meta.modalities == ("rgb", "depth", "hha")
    (n, h, w), feed = gate_feeds(meta, SHAPES)[1]
    assert list(feed) == list(meta.input_names)
    rgb, depth, hha = (feed[name] for name in meta.input_names)
    assert rgb.shape == (n, 3, h, w) and depth.shape == (n, 1, h, w) and hha.shape == (n, 3, h, w)
    expected = frames.scene_arrays(meta, [(h, w)] * n, 2024 + 1)
    for i, arrays in enumerate(expected):
        one = frames.artifact_feed(meta, arrays)
        for name in meta.input_names:
            np.testing.assert_array_equal(feed[name][i], one[name][0])
    assert np.std(depth[0]) > 0 and np.std(hha[0]) > 0  # real depth, not a constant


def _write(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return path


def _flat(colour, h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), colour, np.uint8)


def test_verify_data_reads_sorted_images_as_rgb_resized_and_cycled(plain, tmp_path):
    meta = read_onnx_metadata(plain)
    _write(tmp_path / "b.jpg", _flat((0, 200, 0), 40, 50))       # green
    _write(tmp_path / "a.png", _flat((250, 0, 0), 30, 20))       # red: first by name
    (tmp_path / "c.png").write_bytes(b"not a png")                # unreadable: passed over
    (tmp_path / "notes.txt").write_text("not an image")
    feeds = gate_feeds(meta, SHAPES, tmp_path)
    red, green = (frames.artifact_input(meta, _flat(c, 32, 32))[0]
                  for c in ((250, 0, 0), (0, 200, 0)))
    first = feeds[0][1]["images"]
    assert first.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(first[0], red, atol=1e-6)
    # Five frames over three shapes, from two images: red, green, red, green, red.
    order = [int(np.argmax(batch[i, :, 0, 0])) for _, f in feeds
             for batch in [f["images"]] for i in range(len(batch))]
    assert order == [0, 1, 0, 1, 0]  # channel 0 (R) or 1 (G) is the brightest, after the mean
    np.testing.assert_allclose(feeds[1][1]["images"][0], frames.artifact_input(
        meta, _flat((0, 200, 0), 48, 64))[0], atol=0.05)  # JPEG: near, not exact


def test_verify_data_with_a_real_photo_passes_a_faithful_engine(plain, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip(f"no sample photo at {photo}")
    (tmp_path / "photo.jpg").write_bytes(photo.read_bytes())
    report = _gate(plain, data_dir=tmp_path)
    assert report.passed and report.frames == str(tmp_path)
    labels = [c for c in report.checks]
    assert len(labels) == 3 and all(c.agreement == 1.0 for c in labels)


def test_verify_data_refusals_are_one_line(plain, rgbd, tmp_path):
    meta = read_onnx_metadata(plain)
    cases = {tmp_path / "missing": "not a folder",
             _write(tmp_path / "one.png", _flat((1, 2, 3), 8, 8)): "not a folder"}
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (empty / "readme.txt").write_text("no images here")
    cases[empty] = "no readable image"
    for folder, why in cases.items():
        with pytest.raises(InputError) as refused:
            gate_feeds(meta, SHAPES, folder)
        assert str(refused.value).startswith(f"--verify-data {folder}: {why}")
        assert "\n" not in str(refused.value)
    photos = tmp_path / "photos"
    photos.mkdir()
    _write(photos / "x.png", _flat((9, 9, 9), 16, 16))
    with pytest.raises(InputError) as refused:
        gate_feeds(read_onnx_metadata(rgbd), SHAPES, photos)
    assert str(refused.value) == (
        f"--verify-data {photos}: the model takes rgb + depth + hha inputs, not RGB images "
        f"alone; leave out --verify-data to use procedural RGB-D scenes")


# --- one output at one shape --------------------------------------------------------------------

def test_compare_output_counts_labels_nan_inf_and_the_relative_difference(plain):
    meta = read_onnx_metadata(plain)
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 8, 5, 6)).astype(np.float32)
    same = compare_output(meta, "logits", ref.copy(), ref)
    assert same == OutputCheck("logits", 2, 5, 6, 1.0, 0, 0, 0, 0, 0.0)
    ours = ref.copy()
    ours[0, :, 0, 0] = np.nan       # one pixel's logits: 8 NaN values
    ours[1, 3, 4, 5] = np.inf       # one Inf
    ours[1, :, 2, 2] = ref[1, :, 2, 2] + 0.5  # a finite change, labels kept
    theirs = ref.copy()
    theirs[0, 0, 1, 1] = -np.inf
    check = compare_output(meta, "logits", ours, theirs)
    assert (check.nan, check.inf, check.reference_nan, check.reference_inf) == (8, 1, 0, 1)
    assert check.rel_max_abs == pytest.approx(0.5 / float(np.abs(ref).max()), rel=1e-6)
    assert 0.9 < check.agreement < 1.0 and check.engine_shape is None
    cropped = compare_output(meta, "logits", ref[:, :, :, :5], ref)
    assert (cropped.agreement, cropped.engine_shape, cropped.rel_max_abs) == (0.0, (2, 8, 5, 5),
                                                                              None)


def test_compare_output_takes_an_argmax_artifacts_labels_as_they_are(labels_out):
    meta = read_onnx_metadata(labels_out)
    ref = np.arange(2 * 4 * 5).reshape(2, 4, 5).astype(np.uint8) % 8
    moved = ref.copy()
    moved[0, 0, :4] = (moved[0, 0, :4] + 1) % 8  # 4 of 40 pixels
    check = compare_output(meta, "labels", moved, ref)
    assert (check.batch, check.height, check.width) == (2, 4, 5)
    assert check.agreement == pytest.approx(0.9)
    assert (check.nan, check.inf, check.rel_max_abs) == (0, 0, None)


# --- the verdict --------------------------------------------------------------------------------

GOOD = OutputCheck("logits", 2, 48, 64, 0.9995, 0, 0, 0, 0, 1e-3)


AT = "logits at 2×48×64: "


@pytest.mark.parametrize("fault, clause", [
    ({"nan": 3}, AT + "the engine's output has 3 NaN and 0 Inf values"),
    ({"inf": 1}, AT + "the engine's output has 0 NaN and 1 Inf values"),
    ({"reference_nan": 2}, AT + "ONNX Runtime's own output has 2 NaN and 0 Inf values (the ONNX "
                                "itself overflows)"),
    ({"reference_inf": 5}, AT + "ONNX Runtime's own output has 0 NaN and 5 Inf values (the ONNX "
                                "itself overflows)"),
    ({"agreement": 0.998}, AT + "labels agree with ONNX Runtime on 99.800% of pixels, below "
                                "99.90% (fp32)"),
    ({"agreement": 0.0, "engine_shape": (2, 8, 48, 63)},
     AT + "the engine's output has shape 2×8×48×63, not ONNX Runtime's (labels counted as "
          "disagreeing)"),
])
def test_judge_names_each_failure_with_output_and_shape(fault, clause):
    from dataclasses import replace

    assert judge([GOOD], BOUNDS) == ()
    assert judge([GOOD, replace(GOOD, output="logits_geometric", **fault)], BOUNDS) == (
        clause.replace("logits at", "logits_geometric at"),)


def test_judge_lists_every_failure_and_holds_agreement_at_the_bound():
    from dataclasses import replace

    assert judge([replace(GOOD, agreement=0.999)], BOUNDS) == ()  # the bound itself passes
    assert judge([replace(GOOD, agreement=0.999)], GateBounds("fp32", 0.9991)) != ()
    both = judge([replace(GOOD, nan=1, agreement=0.5)], BOUNDS)
    assert len(both) == 2 and "NaN" in both[0] and "99.90%" in both[1]


# --- the gate on real sessions ------------------------------------------------------------------

def _with(name: str, change):
    """A fault: ``change(array)`` applied to output ``name`` (a copy)."""
    def fault(outputs, feed):
        outputs = dict(outputs)
        outputs[name] = change(np.array(outputs[name]))
        return outputs
    return fault


def _move_labels(share: float, seed: int = 0):
    """Logits rolled by one channel on ``share`` of the pixels: their label changes."""
    def change(logits):
        rng = np.random.default_rng(seed)
        pick = rng.random((logits.shape[0],) + logits.shape[2:]) < share
        rolled = np.roll(logits, 1, axis=1)
        return np.where(pick[:, None], rolled, logits)
    return change


def test_a_faithful_engine_passes_and_reports_every_output_and_shape(plain):
    report = _gate(plain)
    assert report.passed and report.failures == () and report.frames == "procedural"
    assert [(c.output, c.batch, c.height, c.width) for c in report.checks] == [
        ("logits", 1, 32, 32), ("logits", 2, 48, 64), ("logits", 2, 56, 72)]
    assert all(c.agreement == 1.0 and c.rel_max_abs == 0.0 for c in report.checks)
    header = json.loads(json.dumps(report.to_header()))
    assert {k: header[k] for k in ("passed", "reference", "frames", "precision",
                                   "min_agreement", "failures")} == {
        "passed": True, "reference": "onnxruntime cpu", "frames": "procedural",
        "precision": "fp32", "min_agreement": 0.999, "failures": []}
    assert header["checks"][1] == {
        "output": "logits", "batch": 2, "height": 48, "width": 64, "agreement": 1.0, "nan": 0,
        "inf": 0, "reference_nan": 0, "reference_inf": 0, "rel_max_abs": 0.0,
        "engine_shape": None}
    assert report.lines()[1] == ("gate 2×48×64 logits: labels agree 100.00% (≥ 99.90%), NaN 0, "
                                 "Inf 0, rel max|Δ| 0.0e+00")
    refuse(report, "the engine")  # passed: nothing raised


def test_nan_in_one_head_fails_the_gate_naming_that_head(rgbd):
    def nan_corner(logits):
        logits[:, :, :2, :2] = np.nan
        return logits

    report = _gate(rgbd, _with("logits_geometric", nan_corner))
    assert not report.passed
    assert {c.output for c in report.checks if c.nan} == {"logits_geometric"}
    assert report.failures[0] == ("logits_geometric at 1×32×32: the engine's output "
                                  "has 12 NaN and 0 Inf values")
    assert all("logits_geometric" in f for f in report.failures)
    assert len(report.checks) == 6  # two heads at three shapes


def test_inf_fails_the_gate(plain):
    def inf_once(logits):
        logits[0, 2, 5, 7] = np.inf
        return logits

    report = _gate(plain, _with("logits", inf_once))
    assert [f for f in report.failures if "Inf" in f] == [
        f"logits at {n}×{h}×{w}: the engine's output has 0 NaN and 1 Inf values"
        for n, h, w in gate_shapes(SHAPES)]


def test_an_onnx_that_overflows_itself_is_named_first(plain):
    def overflow(outputs):
        logits = outputs["logits"].copy()
        logits[0, 1, 3, 3] = np.inf
        return {"logits": logits}

    engine, reference = _sessions(plain)
    with engine, reference:  # an ONNX that overflows: in ONNX Runtime and the engine alike
        report = run_gate(engine.meta, lambda feed: overflow(engine.run(feed)),
                          lambda feed: overflow(reference.run(feed)), SHAPES)
    at = "logits at 1×32×32: "
    assert report.failures[:2] == (
        at + "ONNX Runtime's own output has 0 NaN and 1 Inf values (the ONNX itself overflows)",
        at + "the engine's output has 0 NaN and 1 Inf values")
    assert report.checks[0].rel_max_abs == 0.0  # the finite values are all equal


def test_labels_moved_on_a_share_of_pixels_fail_by_the_precisions_bound(plain):
    moved = _with("logits", _move_labels(0.003))  # ~0.3 % of pixels change label
    fp32 = _gate(plain, moved)
    assert not fp32.passed and all("below 99.90% (fp32)" in f for f in fp32.failures)
    assert all(0.99 < c.agreement < 0.999 for c in fp32.checks if c.height > 32)
    fp16 = _gate(plain, moved, precision="fp16")  # an fp16 engine of this fp32 ONNX
    assert fp16.passed and fp16.precision == "fp16" and fp16.bounds.min_agreement == 0.995
    int8 = _gate(plain, _with("logits", _move_labels(0.05)), precision="int8")
    assert not int8.passed and "below 98.00% (int8)" in int8.failures[0]


def test_an_argmax_engine_with_moved_labels_fails(labels_out):
    def shift(labels):
        labels[:, :4, :] = (labels[:, :4, :] + 1) % 8
        return labels

    report = _gate(labels_out, _with("labels", shift))
    assert not report.passed and "labels at 1×32×32: labels agree" in report.failures[0]
    assert all(c.rel_max_abs is None for c in report.checks)


def test_a_wrong_shape_at_one_profile_corner_fails_there_only(plain):
    def crop_at_max(outputs, feed):
        if feed["images"].shape[2:] != (56, 72):
            return outputs
        return {"logits": outputs["logits"][..., 1:, :]}

    report = _gate(plain, crop_at_max)
    assert report.failures == ("logits at 2×56×72: the engine's output has shape "
                               "2×8×55×72, not ONNX Runtime's (labels counted as disagreeing)",)
    assert report.to_header()["checks"][2]["engine_shape"] == [2, 8, 55, 72]
    assert "engine output shape 2×8×55×72" in report.lines()[2]


def test_refuse_is_one_line_with_the_first_failure_the_count_and_what_to_try(plain):
    report = _gate(plain, _with("logits", _move_labels(0.02)), precision="fp16")
    with pytest.raises(ModelFormatError) as refused:
        refuse(report, "engine model.fp16.plan")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        "engine model.fp16.plan failed the accuracy gate against ONNX Runtime and was neither "
        f"cached nor written: {report.failures[0]}; +2 more; keep the failing layers in fp32: "
        "`fcn-edge export CHECKPOINT --fp16 --keep-fp32 OPS`")
    assert message.endswith("or pass --no-verify to keep the engine anyway")


@pytest.mark.parametrize("precision, hint", [
    ("fp16", "--keep-fp32 OPS"), ("int8", "--calib DIR --calib-images N"),
    ("fp32", "rebuild with --force")])
def test_failure_advice_per_precision(precision, hint):
    advice = failure_advice(precision)
    assert hint in advice and advice.endswith("or pass --no-verify to keep the engine anyway")


# --- the reference ------------------------------------------------------------------------------

def test_the_reference_is_onnx_runtime_on_the_cpu(plain):
    backend = reference_backend(plain)
    try:
        assert isinstance(backend, OnnxRuntimeBackend) and backend.name == "onnxruntime:cpu"
        (_, feed), = gate_feeds(backend.meta, Shapes(*[(1, 32, 32)] * 3))
        assert backend.run(feed)["logits"].shape == (1, 8, 32, 32)
    finally:
        backend.close()


def test_a_missing_onnx_runtime_is_one_line_naming_the_fix(plain, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(BackendUnavailable) as refused:
        reference_backend(plain)
    assert str(refused.value) == trt_gate.NO_ORT == (
        "the accuracy gate runs the ONNX in ONNX Runtime: pip install onnxruntime, or pass "
        "--no-verify")
