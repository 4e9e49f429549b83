"""Tests of fcn_edge.export.int8: ORT static QDQ quantization of a real FCN export.

The model is ResNet18 FCN-8s with random score layers (they are zero-initialised), calibrated on
procedural scenes and compared with its fp32 self on other scenes. Random score layers give
small logit margins, so label agreement here is a pessimistic figure for a trained net.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper

from fcn_edge.data import normalize, open_dataset
from fcn_edge.errors import InputError
from fcn_edge.export.int8 import CalibrationReader, fp32_nodes, quantize_int8

from support import ONNX_METADATA as METADATA
from support import export_onnx, random_score_fcn8s, raw_frames_fcn8s


def scenes(split: str, count: int, size: tuple[int, int]) -> np.ndarray:
    data = open_dataset("synthetic", split, num_images=count, size=size)
    return np.stack([data[i].image for i in range(count)])


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """fp32 export and its two int8 forms (TensorRT-style symmetric, CPU-style u8)."""
    root = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(random_score_fcn8s(), root / "fcn.onnx")
    calibration = [{"images": np.stack([normalize(im) for im in scenes("train", 16, (128, 128))])}]
    return {"fp32": fp32,
            "tensorrt": quantize_int8(fp32, root / "fcn.int8.onnx", calibration),
            "cpu": quantize_int8(fp32, root / "fcn.int8-cpu.onnx", calibration, target="cpu")}


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    return np.stack([normalize(im) for im in scenes("val", 4, (256, 256))])


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_int8_agrees_with_fp32(models, test_images, target):
    reference = session(models["fp32"]).run(None, {"images": test_images})[0]
    logits = session(models[target]).run(None, {"images": test_images})[0]
    agreement = (logits.argmax(1) == reference.argmax(1)).mean()
    delta = np.abs(logits - reference).max()
    print(f"int8 ({target}) vs fp32, 4 scenes 256×256: labels agree {agreement:.2%}, "
          f"max|Δlogits| {delta:.4f} (max|logits| {np.abs(reference).max():.4f})")
    assert logits.dtype == np.float32 and logits.shape == reference.shape
    assert agreement >= 0.90
    assert 0 < delta <= 0.1 * np.abs(reference).max()


def test_int8_graph_is_tensorrt_style_qdq(models):
    model = onnx.load(models["tensorrt"])
    assert {p.key: p.value for p in model.metadata_props} == METADATA
    values = initializers(model)
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize) >= 20
    for node in quantize:   # symmetric int8 activations: zero point 0, what TensorRT accepts
        zero_point = values[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantized = [n for n in convs if n.input[1] in producers]
    for conv in quantized:   # per-channel int8 weights, one scale per output channel
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        weights, scales = values[dq.input[0]], values[dq.input[1]]
        assert weights.dtype == np.int8 and scales.shape == (weights.shape[0],)
    # The trunk's 20 convolutions are int8; the three score layers and the head stay fp32.
    assert len(quantized) == 20
    head = {n.name for n in convs if n not in quantized}
    assert head == {"/score_fr/Conv", "/score_pool4/Conv", "/score_pool3/Conv"}
    assert all(n.input[1] in values and values[n.input[1]].dtype == np.float32
               for n in model.graph.node if n.op_type == "ConvTranspose")


def test_cpu_target_uses_uint8_activations(models):
    model = onnx.load(models["cpu"])
    assert {p.key: p.value for p in model.metadata_props} == METADATA
    values = initializers(model)
    zero_points = [values[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.uint8 for z in zero_points)


def median_ms(sess: ort.InferenceSession, images: np.ndarray, runs: int = 5) -> float:
    sess.run(None, {"images": images})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, {"images": images})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def test_report_cpu_latency(models):
    # Printed, not asserted: it depends on the CPU (VNNI or not) and on its other load.
    rng = np.random.default_rng(0)
    sessions = {name: session(path) for name, path in models.items()}
    for h, w in [(256, 256), (256, 512)]:
        images = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        line = ", ".join(f"{name} {median_ms(s, images):.1f} ms" for name, s in sessions.items())
        print(f"ORT CPU 1 thread {h}×{w}: {line}")


def test_raw_io_model_keeps_its_uint8_input_path(tmp_path):
    fp32 = export_onnx(raw_frames_fcn8s(), tmp_path / "raw.onnx", raw=True)
    frames = [np.ascontiguousarray(im[..., ::-1]) for im in scenes("train", 8, (128, 128))]
    int8 = quantize_int8(fp32, tmp_path / "raw.int8.onnx", [{"frames": f[None]} for f in frames])
    model = onnx.load(int8)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert {p.key: p.value for p in model.metadata_props} == METADATA
    # Nothing between the frames and the first convolution reads a dequantised tensor: the
    # 0..255 pixels and their normalisation stay fp32; the first conv's input is quantised.
    producers = {o: n for n in model.graph.node for o in n.output}
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    before = model.graph.node[:list(model.graph.node).index(first_conv)]
    # DeployGraph's input path: Transpose, Cast, Slice (BGR → RGB), Mul and Add (normalising).
    input_ops = ("Transpose", "Cast", "Slice", "Mul", "Add")
    assert {n.op_type for n in before} >= set(input_ops)
    for node in before:
        if node.op_type in input_ops:
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear"
                       for i in node.input), node.name
    assert producers[first_conv.input[0]].op_type == "DequantizeLinear"
    test = np.ascontiguousarray(scenes("val", 3, (128, 192))[..., ::-1])
    labels = session(int8).run(None, {"frames": test})[0]
    reference = session(fp32).run(None, {"frames": test})[0]
    assert labels.dtype == np.uint8
    assert (labels == reference).mean() >= 0.90


def test_no_files_left_behind(models, tmp_path, monkeypatch):
    work, temp, out = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "out"
    for folder in (work, temp, out):
        folder.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    images = normalize(scenes("train", 1, (64, 64))[0])[None]
    quantize_int8(models["fp32"], out / "model.onnx", [{"images": images}], method="minmax")
    assert os.listdir(out) == ["model.onnx"]
    assert os.listdir(work) == [] and os.listdir(temp) == []
    # A failure leaves neither the output nor a temporary behind.
    with pytest.raises(InputError, match="takes \\['images'\\]"):
        quantize_int8(models["fp32"], out / "other.onnx", [{"frames": images}])
    assert os.listdir(out) == ["model.onnx"] and os.listdir(temp) == []


def test_calibration_reader_crops_to_one_shape():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)
    small = rng.standard_normal((1, 3, 8, 9)).astype(np.float32)
    reader = CalibrationReader([{"images": big}, {"images": small}])
    samples = list(reader)
    assert len(reader) == 3 and [s["images"].shape for s in samples] == [(1, 3, 8, 9)] * 3
    np.testing.assert_array_equal(samples[0]["images"][0], big[0, :, 1:9, 1:10])  # centred
    np.testing.assert_array_equal(samples[2]["images"], small)
    assert reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["images"].shape == (1, 3, 8, 9)
    frames = CalibrationReader([{"frames": np.zeros((1, 6, 7, 3), np.uint8)},
                                {"frames": np.zeros((1, 5, 9, 3), np.uint8)}])
    assert {s["frames"].shape for s in frames.samples} == {(1, 5, 7, 3)}
    with pytest.raises(InputError, match="at least one image"):
        CalibrationReader([])


def test_fp32_nodes_are_the_input_path_and_the_head(models):
    names = set(fp32_nodes(onnx.load(models["fp32"])))
    # (random_score_fcn8s draws the upsampling kernels too: upscore8 stays a ConvTranspose)
    assert {"/score_fr/Conv", "/upscore2/ConvTranspose", "/upscore8/ConvTranspose"} <= names
    assert not any(n.startswith(("/conv1", "/layer")) for n in names)


def test_bad_arguments(models, tmp_path):
    with pytest.raises(InputError, match="method"):
        quantize_int8(models["fp32"], tmp_path / "x.onnx", [], method="kl")
    with pytest.raises(InputError, match="target"):
        quantize_int8(models["fp32"], tmp_path / "x.onnx", [], target="gpu")
    with pytest.raises(InputError, match="no such model"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "x.onnx", [])
    assert not (tmp_path / "x.onnx").exists()


class _Excitation(torch.nn.Module):
    """A convolution whose map is scaled by a squeeze-excitation's hard sigmoid that stays
    within a millionth of 0.5, as an untrained or saturated MobileNetV3 block's does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.score = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        scale = torch.nn.functional.hardsigmoid(1e-6 * y.mean((2, 3), keepdim=True).tanh())
        return self.score(y * scale)


@pytest.mark.parametrize("method", ["percentile", "minmax"])
@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_a_near_constant_excitation_calibrates(tmp_path, method, target):
    """ORT's histogram calibrators failed on the hard sigmoid ("Too many bins for data
    range"): the excitation's Mul is not quantized, so that tensor is not calibrated."""
    source = export_onnx(_Excitation().eval(), tmp_path / "se.onnx")
    images = np.stack([normalize(im) for im in scenes("train", 4, (32, 32))])
    out = quantize_int8(source, tmp_path / "se.int8.onnx", [{"images": im[None]} for im in images],
                        method=method, target=target)
    nodes = onnx.load(str(out)).graph.node
    excitation = {o for n in nodes if n.op_type == "HardSigmoid" for o in n.output}
    quantized = {i for n in nodes if n.op_type == "QuantizeLinear" for i in n.input}
    assert excitation and not excitation & quantized   # the scaling stays fp32 …
    assert quantized   # … the convolutions do not
    x = images[:1]
    fp32 = session(source).run(None, {"images": x})[0]
    assert np.abs(session(out).run(None, {"images": x})[0] - fp32).max() < 0.1 * np.abs(fp32).max()
