"""Segmenter: labels equal the PyTorch reference on every artifact kind and size, frames in any
form it accepts, refusals that say what to do, resizing into profiles, copies, and threads."""
from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from fcn_edge.errors import BackendUnavailable, FcnEdgeError, InputError, ModelFormatError
from fcn_edge.runtime.engine_file import (check_engine_compatible, read_engine_header,
                                          write_engine)
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.backends import BackendBase, InputSpec
from fcn_edge.runtime.onnx_file import read_onnx_metadata
from fcn_edge.runtime.processing import fit_size, resize_frame, resize_labels

ONNX_KINDS = ("plain", "rawio", "argmax", "rawio_argmax")
SIZES = [(64, 64), (97, 131), (1, 1), (1, 37), (33, 47), (130, 90)]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean())


@pytest.fixture(scope="module")
def segmenters(onnx_artifact, checkpoint):
    """One Segmenter per artifact kind (and the torch backend), shared by the module."""
    made = {kind: Segmenter(onnx_artifact(kind), threads=1) for kind in ONNX_KINDS}
    made["torch"] = Segmenter(checkpoint, backend="torch", threads=1)
    yield made
    for seg in made.values():
        seg.close()


# --- agreement with the reference ------------------------------------------------------------

@pytest.mark.parametrize("kind", [*ONNX_KINDS, "torch"])
def test_labels_match_the_pytorch_reference(segmenters, reference, scene, kind):
    seg = segmenters[kind]
    for h, w in SIZES:
        frame = scene(h, w, seed=h * 1000 + w)
        labels = seg(frame)
        assert labels.shape == (h, w) and labels.dtype == np.uint8
        ref = reference(frame)
        assert agreement(labels, ref) >= 0.999, f"{kind} at {h}×{w}"
    assert len(np.unique(seg(scene(97, 131)))) > 1  # the check above can fail: labels vary


def test_each_kind_uses_its_own_artifact(segmenters):
    info = {kind: seg.info() for kind, seg in segmenters.items()}
    assert info["plain"]["input"] == "images NCHW float32" and not info["plain"]["argmax"]
    assert info["rawio"]["input"] == "frames NHWC uint8" and not info["rawio"]["argmax"]
    assert info["argmax"]["argmax"] and not info["argmax"]["raw_io"]
    assert info["rawio_argmax"]["raw_io"] and info["rawio_argmax"]["argmax"]
    assert info["torch"]["backend"] == "torch:cpu"
    assert all(i["backend"] == "onnxruntime:cpu" for k, i in info.items() if k != "torch")
    assert "rawio_argmax" in repr(segmenters["rawio_argmax"]) and "raw-IO, argmax" in repr(
        segmenters["rawio_argmax"])


def test_class_names_and_palette_come_from_the_artifact(segmenters):
    from fcn_edge.data import PROCEDURAL_CLASSES, voc_palette

    for seg in segmenters.values():
        assert seg.classes == tuple(PROCEDURAL_CLASSES)
        assert seg.palette == tuple(map(tuple, voc_palette(len(PROCEDURAL_CLASSES)).tolist()))


# --- copies ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,copies", [("rawio_argmax", 0), ("rawio", 1), ("argmax", 1),
                                         ("plain", 2), ("torch", 2)])
def test_copies_per_frame_are_as_documented(segmenters, scene, kind, copies):
    seg = segmenters[kind]
    frame = scene(40, 56)
    seg.reset_stats()
    seg(frame)
    assert seg.stats.copies == copies and seg.stats.frames == 1
    # An RGB or non-contiguous frame costs one copy more on raw-IO artifacts only.
    extra = 1 if kind.startswith("rawio") else 0
    seg.reset_stats()
    seg(np.asfortranarray(frame))
    assert seg.stats.copies == copies + extra


def test_raw_io_frames_go_in_without_a_copy(onnx_artifact, scene, monkeypatch):
    seg = Segmenter(onnx_artifact("rawio_argmax"))
    frame = scene(20, 30)
    seen = []
    run = seg.backend.run  # the Segmenter feeds backends by input name
    monkeypatch.setattr(seg.backend, "run", lambda feed: seen.append(feed["frames"]) or run(feed))
    seg(frame)
    assert np.shares_memory(seen[0], frame) and seen[0].shape == (1, 20, 30, 3)


def test_int32_labels_are_read_like_uint8_ones(onnx_artifact, scene):
    """An argmax artifact exported with int32 labels (``--labels-dtype int32``, e.g. for a
    TensorRT consumer that takes no uint8) gives the same labels; the Segmenter returns them
    as always (uint8 up to 256 classes)."""
    with Segmenter(onnx_artifact("rawio_argmax_int32")) as wide, \
            Segmenter(onnx_artifact("rawio_argmax")) as narrow:
        assert (wide.meta.labels_dtype, narrow.meta.labels_dtype) == ("int32", "uint8")
        frame = scene(48, 72)
        raw = wide.backend.run({"frames": frame[None]})["labels"]
        assert raw.dtype == np.int32
        labels = wide(frame)
        assert labels.dtype == np.uint8 and np.array_equal(labels, raw[0])
        assert np.array_equal(labels, narrow(frame)) and len(np.unique(labels)) > 1


# --- frames in every accepted form --------------------------------------------------------------

def test_buffer_protocol_objects_with_a_shape(segmenters, scene):
    seg = segmenters["rawio_argmax"]
    frame = scene(24, 40)
    expected = seg(frame)
    assert np.array_equal(seg(frame.tobytes(), shape=(24, 40, 3)), expected)
    assert np.array_equal(seg(bytearray(frame.tobytes()), shape=frame.shape), expected)
    assert np.array_equal(seg(memoryview(frame)), expected)  # a memoryview knows its shape
    assert np.array_equal(seg(memoryview(frame.tobytes()), shape=(24, 40, 3)), expected)
    with pytest.raises(InputError, match="cannot have shape"):
        seg(frame.tobytes(), shape=(24, 41, 3))


@pytest.mark.parametrize("kind", ["plain", "rawio_argmax"])
def test_rgb_frames_with_color_rgb(onnx_artifact, segmenters, scene, kind):
    frame = scene(33, 47)
    with Segmenter(onnx_artifact(kind), color="rgb") as rgb_seg:
        assert np.array_equal(rgb_seg(frame[..., ::-1]), segmenters[kind](frame))
        labels = np.array([[1]], np.uint8)
        assert rgb_seg.colorize(labels)[0, 0].tolist() == list(rgb_seg.palette[1])
    assert segmenters[kind].colorize(labels)[0, 0].tolist() == list(rgb_seg.palette[1])[::-1]


@pytest.mark.parametrize("kind", ["plain", "rawio_argmax"])
def test_strided_frames_are_accepted(segmenters, scene, kind):
    seg = segmenters[kind]
    big = scene(80, 120)
    view = big[10:60:2, 5:100:3]  # cropped and subsampled: not contiguous
    assert not view.flags.c_contiguous
    assert np.array_equal(seg(view), seg(np.ascontiguousarray(view)))


def test_batch_matches_single_frames(segmenters, scene):
    for kind in ("plain", "rawio_argmax"):
        seg = segmenters[kind]
        frames = [scene(30, 40, 1), scene(50, 20, 2), scene(30, 40, 3)]
        singles = [seg(f) for f in frames]
        seg.reset_stats()
        out = seg.batch(frames)
        assert [o.shape for o in out] == [(30, 40), (50, 20), (30, 40)]
        assert all(np.array_equal(a, b) for a, b in zip(out, singles))
        assert seg.stats.inferences == 2 and seg.stats.frames == 3  # equal sizes ran together
        stacked = seg.batch(np.stack([frames[0], frames[2]]))
        assert np.array_equal(stacked[0], singles[0]) and np.array_equal(stacked[1], singles[2])
        assert seg.batch([]) == []


# --- colours -----------------------------------------------------------------------------------

def test_colorize_and_overlay_values(segmenters):
    seg = segmenters["argmax"]
    palette = np.array(seg.palette, np.uint8)
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    colours = seg.colorize(labels)
    assert colours.shape == (2, 2, 3) and colours.dtype == np.uint8
    assert colours[0, 1].tolist() == palette[1, ::-1].tolist()  # BGR, like the frames
    assert colours[1, 0].tolist() == palette[2, ::-1].tolist()
    assert colours[1, 1].tolist() == [0, 0, 0]  # no class (the ignore label): black
    assert seg.colorize(labels.astype(np.int32)).tolist() == colours.tolist()
    frame = np.full((2, 2, 3), 100, np.uint8)
    blended = seg.overlay(frame, labels, alpha=0.25)
    expected = np.round(0.75 * 100 + 0.25 * colours.astype(np.float64))
    assert np.abs(blended.astype(int) - expected).max() <= 1
    assert np.array_equal(seg.overlay(frame, labels, alpha=0.0), frame)
    assert np.array_equal(seg.overlay(frame, labels, alpha=1.0), colours)
    with pytest.raises(InputError, match="alpha"):
        seg.overlay(frame, labels, alpha=1.5)
    with pytest.raises(InputError, match="do not match"):
        seg.overlay(frame, labels[:1])


# --- bad input ---------------------------------------------------------------------------------

BAD_FRAMES = [
    (np.zeros((4, 5, 2), np.uint8), "3 channels"),
    (np.zeros((4, 5, 3), np.float32), r"uint8.*\* 255"),
    (np.zeros((4, 5, 3), np.uint16), "16-bit"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((4, 0), np.uint8), "empty"),
    (np.zeros((2, 4, 5, 3), np.uint8), r"seg\.batch"),
    (np.zeros(7, np.uint8), "H×W×3"),
    (np.zeros((3, 40, 50), np.uint8), "channels-first"),
    (None, "None"),
    ("frame.png", "buffer-protocol"),
    (np.zeros((4, 5, 3), bool), "uint8"),
]


@pytest.mark.parametrize("frame,message", BAD_FRAMES)
def test_bad_frames_raise_input_errors_that_say_why(segmenters, frame, message):
    with pytest.raises(InputError, match=message) as info:
        segmenters["rawio_argmax"](frame)
    assert isinstance(info.value, ValueError)


def test_bad_arguments(onnx_artifact, segmenters):
    with pytest.raises(InputError, match="color"):
        Segmenter(onnx_artifact("plain"), color="hsv")
    with pytest.raises(InputError, match="profile"):
        Segmenter(onnx_artifact("plain"), profile=42)
    with pytest.raises(InputError, match="batch takes"):
        segmenters["plain"].batch(np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(InputError, match="path to an artifact"):
        Segmenter(12345)


@pytest.mark.parametrize("kind", ["plain", "rawio_argmax"])
def test_grayscale_is_replicated_and_alpha_dropped(segmenters, scene, kind):
    seg = segmenters[kind]
    frame = scene(30, 44)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    as_bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    assert np.array_equal(seg(grey), seg(as_bgr))
    assert np.array_equal(seg(grey[..., None]), seg(as_bgr))
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = np.arange(44, dtype=np.uint8)  # alpha varies: it must not matter
    assert np.array_equal(seg(bgra), seg(frame))
    assert seg.overlay(bgra, seg(bgra)).shape == (30, 44, 3)


# --- damaged and foreign models ----------------------------------------------------------------

@pytest.mark.parametrize("keep", [0.5, 0.9, 0.02])
def test_truncated_onnx_is_a_model_format_error(onnx_artifact, tmp_path, keep):
    data = onnx_artifact("plain").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ModelFormatError, match="truncated.onnx"):
        Segmenter(path)


def test_corrupt_and_foreign_onnx_files(tmp_path):
    from onnx import TensorProto, helper

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff not a protobuf " * 50)
    with pytest.raises(ModelFormatError, match="garbage.onnx"):
        Segmenter(garbage)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              foreign)
    with pytest.raises(ModelFormatError, match="not exported by fcn-edge"):
        Segmenter(foreign)
    with pytest.raises(InputError, match="no such model file"):
        Segmenter(tmp_path / "missing.onnx")
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown kind of model"):
        Segmenter(tmp_path / "model.tflite")


def test_an_engine_for_another_gpu_or_release_is_refused(onnx_artifact, tmp_path):
    meta = read_onnx_metadata(onnx_artifact("plain"))
    path = write_engine(tmp_path / "model.engine", b"\0plan" * 10, {
        "meta": meta.to_dict(), "tensorrt_version": "10.3.0.26",
        "gpu": {"name": "NVIDIA GeForce RTX 3090", "compute_capability": "8.6"},
        "onnx_file": "best.fp16.onnx"})
    header = read_engine_header(path)
    with pytest.raises(ModelFormatError, match=r"RTX 3090 \(sm_86\).*A100.*sm_80.*fcn-edge build"):
        check_engine_compatible(header, "10.3.0.26", "NVIDIA A100-SXM4-40GB", "8.0")
    with pytest.raises(ModelFormatError, match="TensorRT 10.3.0.26.*TensorRT 10.8.0"):
        check_engine_compatible(header, "10.8.0.1", "NVIDIA GeForce RTX 3090", "8.6")
    # Here TensorRT is absent: the engine is refused with the extra to install, not a crash.
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(BackendUnavailable, match=r"fcn-edge\[trt\]"):
            Segmenter(path)
    (tmp_path / "bare.plan").write_bytes(b"a plan built elsewhere")
    with pytest.raises(ModelFormatError, match="not an fcn-edge engine"):
        Segmenter(tmp_path / "bare.plan")


# --- resizing into a profile -------------------------------------------------------------------

def test_a_large_frame_is_resized_into_a_small_profile_and_mapped_back(onnx_artifact, reference,
                                                                       scene):
    frame = scene(720, 1280, seed=5)
    with Segmenter(onnx_artifact("small_profile"), profile="artifact") as seg:
        assert str(seg.profile) == "1x32x32:1x64x64:1x256x256"
        labels = seg(frame)
        assert labels.shape == (720, 1280) and seg.stats.resized == 1
    assert fit_size(720, 1280, (32, 32), (256, 256)) == (144, 256)  # aspect kept
    small = resize_frame(frame, (144, 256))
    expected = resize_labels(reference(small), (720, 1280))
    assert agreement(labels, expected) >= 0.999
    assert len(np.unique(labels)) > 1


def test_small_and_thin_frames_are_enlarged_into_the_profile(onnx_artifact, scene):
    with Segmenter(onnx_artifact("plain"), profile="32x32:64x64:256x256") as seg:
        for h, w in [(1, 1), (5, 300), (300, 5)]:
            assert seg(scene(h, w)).shape == (h, w)
        assert seg.stats.resized == 3
    assert fit_size(5, 300, (32, 32), (256, 256)) == (32, 256)  # clamped: the profile wins


def test_resize_labels_is_nearest_at_pixel_centres():
    labels = np.array([[0, 1], [2, 3]], np.uint8)
    assert resize_labels(labels, (4, 4)).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1],
                                                      [2, 2, 3, 3], [2, 2, 3, 3]]
    big = np.repeat(np.repeat(np.arange(12, dtype=np.int32).reshape(3, 4), 3, 0), 3, 1)
    assert resize_labels(big, (3, 4)).tolist() == np.arange(12).reshape(3, 4).tolist()


def test_batches_are_split_and_padded_to_the_profiles_batch_sizes(onnx_artifact, scene):
    frames = [scene(40, 40, seed=i) for i in range(5)]
    with Segmenter(onnx_artifact("plain")) as seg:
        singles = [seg(f) for f in frames]
    with Segmenter(onnx_artifact("plain"), profile="1x32x32:2x64x64:2x256x256") as seg:
        out = seg.batch(frames)
        assert seg.stats.inferences == 3  # 2 + 2 + 1
    with Segmenter(onnx_artifact("plain"), profile="2x32x32:2x64x64:4x256x256") as seg:
        one = seg(frames[0])  # padded up to the minimum batch of 2
    assert all(np.array_equal(a, b) for a, b in zip(out, singles))
    assert np.array_equal(one, singles[0])


# --- threads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["plain", "rawio_argmax", "torch"])
def test_threads_sharing_one_segmenter_get_the_serial_results(segmenters, scene, kind):
    seg = segmenters[kind]
    frames = [scene(24 + 8 * (i % 3), 40 + 4 * i, seed=i) for i in range(12)]
    serial = [seg(f) for f in frames]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(seg, frames))
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel))


class _ProbeBackend(BackendBase):
    """Records how many threads are inside ``run`` at once."""

    name = "probe"

    def __init__(self, meta, thread_safe: bool, barrier: threading.Barrier | None = None):
        self.meta, self.thread_safe, self.barrier = meta, thread_safe, barrier
        self.path = Path("probe.onnx")
        self.input_spec = InputSpec.for_meta(meta)
        self.inside = self.most = 0
        self.lock = threading.Lock()

    def _run(self, feed):
        batch = feed[self.input_spec.name]
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            if self.barrier is not None:
                self.barrier.wait()  # both threads must be inside at once, or this times out
            else:
                threading.Event().wait(0.02)
            n, h, w, _ = batch.shape
            return {self.meta.output_name: np.zeros((n, h, w), np.uint8)}
        finally:
            with self.lock:
                self.inside -= 1


def test_the_segmenter_serialises_backends_that_are_not_thread_safe(segmenters):
    meta = segmenters["rawio_argmax"].meta
    frames = [np.zeros((8, 8, 3), np.uint8)] * 8
    unsafe = _ProbeBackend(meta, thread_safe=False)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(Segmenter(unsafe), frames))
    assert unsafe.most == 1
    safe = _ProbeBackend(meta, thread_safe=True, barrier=threading.Barrier(2, timeout=10))
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(Segmenter(safe), frames[:2]))
    assert safe.most == 2


def test_a_closed_segmenter_refuses_work(onnx_artifact):
    seg = Segmenter(onnx_artifact("plain"))
    seg.close()
    with pytest.raises(FcnEdgeError, match="closed"):
        seg(np.zeros((8, 8, 3), np.uint8))
    assert repr(seg) == "Segmenter(closed)"
