"""Several inputs and heads in the runtime (paper §5): backends fed by name, the Segmenter with
depth and HHA, a dict of labels per head — on real ONNX Runtime and PyTorch, held to the
PyTorch model's own argmax per head."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcn_edge.errors import FcnEdgeError, InputError
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.backends import InputSpec, check_feed, open_backend
from fcn_edge.runtime.modalities import DEPTH_MEAN_M, DEPTH_STD_M, encode_depth

from support_multi_io import (GEOMETRIC_PALETTE, export_artifact, make_multi_checkpoint,
                              scene_depth, torch_reference)

KINDS = {"plain": {}, "argmax": {"argmax": True}, "rawio_argmax": {"raw_io": True,
                                                                  "argmax": True}}
TASKS = ("semantic", "geometric")
SIZES = [(48, 48), (37, 53), (1, 9)]


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    """An RGB-D (early fusion) FCN-16s with semantic and geometric heads: its checkpoint,
    each ONNX kind exported, and its PyTorch reference."""
    tmp = tmp_path_factory.mktemp("rgbd")
    checkpoint = make_multi_checkpoint(tmp / "two.pt")
    onnx = {kind: export_artifact(checkpoint, tmp / kind, **options)
            for kind, options in KINDS.items()}
    return checkpoint, onnx, torch_reference(checkpoint)


@pytest.fixture(scope="module")
def segmenters(rgbd):
    checkpoint, onnx, _ = rgbd
    made = {kind: Segmenter(path, "onnxruntime:cpu", threads=1) for kind, path in onnx.items()}
    made["torch"] = Segmenter(checkpoint, "torch:cpu", threads=1)
    yield made
    for seg in made.values():
        seg.close()


def _frame(scene, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    frame = scene(h, w, seed=seed)
    return frame, scene_depth(frame, seed)


def assert_agrees(labels: np.ndarray, reference: tuple[np.ndarray, np.ndarray]) -> None:
    """Equal to the reference wherever its top two scores are not tied (fp32 rounding may
    pick either of a near-tie), and on at least 99.9 % of all pixels."""
    expected, margin = reference
    assert labels.shape == expected.shape and labels.dtype == np.uint8
    clear = margin > 1e-4
    assert np.array_equal(labels[clear], expected[clear])
    assert (labels == expected).mean() >= 0.999


# --- the Segmenter on each artifact kind -----------------------------------------------------

@pytest.mark.parametrize("kind", [*KINDS, "torch"])
def test_every_head_matches_the_torch_model(segmenters, rgbd, scene, kind):
    seg, reference = segmenters[kind], rgbd[2]
    assert seg.tasks == TASKS and seg.inputs == ("rgb", "depth")
    for h, w in SIZES:
        frame, depth = _frame(scene, h, w, seed=h + w)
        labels = seg(frame, depth=depth)
        assert set(labels) == set(TASKS)
        expected = reference(frame, depth=depth)
        for task in TASKS:
            assert_agrees(labels[task], expected[task])
    frame, depth = _frame(scene, 48, 48)
    labels = seg(frame, depth=depth)  # the checks above can fail: labels vary, per head
    assert len(np.unique(labels["semantic"])) > 2 and len(np.unique(labels["geometric"])) > 1


def test_depth_changes_the_labels(segmenters, scene):
    # Without this, the depth tests below could pass on a model that ignores depth.
    seg = segmenters["argmax"]
    frame, depth = _frame(scene, 48, 48)
    near = seg(frame, depth=np.full_like(depth, 500))
    far = seg(frame, depth=np.full_like(depth, 9000))
    assert (near["semantic"] != far["semantic"]).mean() > 0.05


def test_uint16_millimetres_and_float_metres_give_the_same_labels(segmenters, scene):
    seg = segmenters["rawio_argmax"]
    frame, depth_mm = _frame(scene, 41, 57, seed=3)
    metres = depth_mm / 1000.0                # float64 metres
    metres[depth_mm == 0] = np.nan           # a hole, as float depth marks it
    for a, b in [(seg(frame, depth=depth_mm), seg(frame, depth=metres)),
                 (seg(frame, depth=depth_mm), seg(frame, depth=metres.astype(np.float32)))]:
        assert all(np.array_equal(a[t], b[t]) for t in TASKS)


def test_batches_of_mixed_sizes_equal_single_calls(segmenters, scene):
    seg = segmenters["argmax"]
    pairs = [_frame(scene, h, w, seed=i) for i, (h, w) in enumerate([(48, 48), (33, 40),
                                                                     (48, 48)])]
    seg.reset_stats()
    results = seg.batch([f for f, _ in pairs], depth=[d for _, d in pairs])
    assert seg.stats.inferences == 2 and seg.stats.frames == 3  # equal sizes ran together
    for (frame, depth), got in zip(pairs, results):
        single = seg(frame, depth=depth)
        assert all(np.array_equal(got[t], single[t]) for t in TASKS)
    frames = np.stack([pairs[0][0], pairs[2][0]])  # an N×H×W×3 array, depth N×H×W
    stacked = seg.batch(frames, depth=np.stack([pairs[0][1], pairs[2][1]]))
    assert np.array_equal(stacked[1]["geometric"], results[2]["geometric"])
    with pytest.raises(InputError, match="2 depth arrays for 3 frames"):
        seg.batch([f for f, _ in pairs], depth=[d for _, d in pairs[:2]])


def test_depth_is_resized_into_the_profile_by_nearest_neighbour(rgbd, scene, monkeypatch):
    # Two depths only (1 m and 4 m, sharp edges): nearest neighbour keeps exactly those two
    # encoded values; any interpolation would invent depths in between.
    frame = scene(97, 131)
    depth = np.full((97, 131), 1000, np.uint16)
    depth[:, 50:] = 4000
    depth[30:70, 20:90] = 1000
    with Segmenter(rgbd[1]["argmax"], profile="32x32:48x48:64x64") as seg:
        fed = []
        run = seg.backend.run
        monkeypatch.setattr(seg.backend, "run", lambda feed: fed.append(feed) or run(feed))
        labels = seg(frame, depth=depth)
    assert labels["geometric"].shape == (97, 131) and seg.stats.resized == 1
    sent = fed[0]["depth"]
    assert sent.shape[2:] == fed[0]["images"].shape[2:] and max(sent.shape[2:]) <= 64
    expected = {round((m - DEPTH_MEAN_M) / DEPTH_STD_M, 5) for m in (1.0, 4.0)}
    assert {round(float(v), 5) for v in np.unique(sent)} == expected


@pytest.mark.parametrize("kind,copies", [("plain", 4), ("argmax", 2), ("rawio_argmax", 1)])
def test_copies_per_frame_are_as_documented(segmenters, scene, kind, copies):
    # Normalising (plain) or none (raw IO), + 1 encoding depth, + 1 argmax per head (logits).
    seg = segmenters[kind]
    seg.reset_stats()
    frame, depth = _frame(scene, 40, 44)
    seg(frame, depth=depth)
    assert seg.stats.copies == copies


# --- refusals that say what to do ----------------------------------------------------------

def test_missing_misfit_or_unwanted_modalities_are_refused(segmenters, scene, onnx_artifact):
    seg = segmenters["argmax"]
    frame, depth = _frame(scene, 48, 48)
    with pytest.raises(InputError, match=r"takes rgb \+ depth: pass depth= \(H×W float metres"):
        seg(frame)
    with pytest.raises(InputError, match="depth is 24×48 but its frame is 48×48"):
        seg(frame, depth=depth[:24])
    with pytest.raises(InputError, match="depth must be H×W float metres or uint16.*uint8"):
        seg(frame, depth=depth.astype(np.uint8))
    with pytest.raises(InputError, match=r"takes rgb \+ depth, not hha"):
        seg(frame, depth=depth, hha=frame)
    with Segmenter(onnx_artifact("plain")) as rgb_only:  # an RGB model given depth
        with pytest.raises(InputError, match="takes rgb, not depth: leave depth= out"):
            rgb_only(frame, depth=depth)


def test_tasks_classes_palettes_and_overlays_per_head(segmenters, scene):
    from fcn_edge.data import PROCEDURAL_CLASSES
    from fcn_edge.data.procedural_multi import GEOMETRIC_CLASSES

    seg = segmenters["rawio_argmax"]
    assert seg.classes_of("geometric") == tuple(GEOMETRIC_CLASSES)
    assert seg.classes == seg.classes_of() == tuple(PROCEDURAL_CLASSES)
    assert seg.palette_of("geometric") == GEOMETRIC_PALETTE
    frame, depth = _frame(scene, 48, 48)
    labels = seg(frame, depth=depth)
    shown = seg.overlay(frame, labels, alpha=1.0, task="geometric")  # colours only, BGR
    expected = np.asarray(GEOMETRIC_PALETTE, np.uint8)[labels["geometric"]][..., ::-1]
    assert np.array_equal(shown, expected)
    assert np.array_equal(seg.overlay(frame, labels, alpha=1.0),  # default: the first head
                          seg.colorize(labels["semantic"]))
    assert np.array_equal(seg.colorize(labels, task="geometric"), expected)
    with pytest.raises(InputError, match="no task 'depth'; its tasks are semantic, geometric"):
        seg.overlay(frame, labels, task="depth")
    info = seg.info()
    assert info["tasks"] == TASKS and info["inputs"] == ("rgb", "depth")
    assert info["input"] == "frames NHWC uint8, depth NCHW float32"
    assert "rgb + depth, heads semantic, geometric" in repr(seg)


def test_a_one_task_model_keeps_one_array_and_refuses_tasks(onnx_artifact, scene):
    with Segmenter(onnx_artifact("rawio_argmax")) as seg:
        assert seg.tasks == () and seg.inputs == ("rgb",)
        labels = seg(scene(20, 30))
        assert isinstance(labels, np.ndarray) and labels.shape == (20, 30)
        with pytest.raises(InputError, match="has one task: leave the task out"):
            seg.overlay(scene(20, 30), labels, task="geometric")


# --- backends fed by name --------------------------------------------------------------------

def test_backends_take_a_feed_by_name_and_give_every_head(rgbd, scene):
    checkpoint, onnx, _ = rgbd
    frame, depth = _frame(scene, 32, 40)
    from fcn_edge.runtime.processing import frames_to_input

    meta_mean_std = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    feed = {"images": frames_to_input(frame, *meta_mean_std), "depth": encode_depth(depth)}
    with open_backend(onnx["plain"], "onnxruntime:cpu") as ort_backend, \
            open_backend(checkpoint, "torch:cpu") as torch_backend:
        assert ort_backend.input_specs == {
            "images": InputSpec("images", "NCHW", np.dtype(np.float32)),
            "depth": InputSpec("depth", "NCHW", np.dtype(np.float32), None, 1, "depth")}
        assert torch_backend.input_specs == ort_backend.input_specs
        got = ort_backend.run(feed)
        ref = torch_backend.run(feed)
        assert set(got) == set(ref) == {"logits_semantic", "logits_geometric"}
        assert got["logits_geometric"].shape == (1, 3, 32, 40)
        for name in got:
            np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-4)
        with pytest.raises(InputError, match=r"takes 2 input\(s\) \(images, depth\) and gives 2 "
                                             r"output\(s\).*use run\(feed\)"):
            ort_backend.infer(feed["images"])
    with open_backend(checkpoint, "torch:cpu", argmax=True) as backend:
        labels = backend.run(feed)
        assert set(labels) == {"labels_semantic", "labels_geometric"}
        assert np.array_equal(labels["labels_geometric"], ref["logits_geometric"].argmax(1))
    with pytest.raises(FcnEdgeError, match="closed"):
        ort_backend.run(feed)


def test_feeds_are_checked_by_name_channel_and_size(rgbd):
    with open_backend(rgbd[1]["rawio_argmax"], "onnxruntime:cpu") as backend:
        specs = backend.input_specs
        frames = np.zeros((1, 16, 16, 3), np.uint8)
        depth = np.zeros((1, 1, 16, 16), np.float32)
        assert check_feed(specs, {"frames": frames, "depth": depth}) == (1, 16, 16)
        with pytest.raises(InputError, match="inputs are frames, depth; the feed lacks depth"):
            backend.run({"frames": frames})
        with pytest.raises(InputError, match="has unknown images"):
            backend.run({"frames": frames, "depth": depth, "images": depth})
        with pytest.raises(InputError, match="'depth' takes 1 channel"):
            backend.run({"frames": frames, "depth": np.zeros((1, 3, 16, 16), np.float32)})
        with pytest.raises(InputError, match="one batch size, height and width.*depth 1×16×8"):
            backend.run({"frames": frames, "depth": depth[..., :8]})


# --- RGB + HHA, late fusion, one head --------------------------------------------------------

def test_rgb_hha_late_fusion_matches_the_torch_model(tmp_path, scene):
    checkpoint = make_multi_checkpoint(tmp_path / "hha.pt", inputs=(("rgb", 3), ("hha", 3)),
                                       heads=(), fusion="late")
    reference = torch_reference(checkpoint)
    frame = scene(40, 52, seed=5)
    hha = scene(40, 52, seed=6)[..., ::-1].copy()  # any 3-channel uint8 image
    with Segmenter(export_artifact(checkpoint, tmp_path), "onnxruntime:cpu") as seg:
        assert seg.inputs == ("rgb", "hha") and seg.tasks == ()
        labels = seg(frame, hha=hha)
        assert isinstance(labels, np.ndarray)
        assert_agrees(labels, reference(frame, hha=hha)[None])
        assert not np.array_equal(labels, seg(frame, hha=np.zeros_like(hha)))  # HHA matters
        with pytest.raises(InputError, match="pass hha="):
            seg(frame)


def test_the_new_runtime_modules_do_not_import_torch():
    root = Path(__file__).resolve().parents[2]
    code = ("import sys, fcn_edge.runtime.heads, fcn_edge.runtime.modalities, "
            "fcn_edge.runtime.backends.cuda, fcn_edge.runtime.segmenter; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "False"
