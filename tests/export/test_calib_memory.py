"""The int8 calibration's memory bound (``calib_memory.py``, ``int8.bound_memory``): ORT's
histogram calibrator keeps every activation of every calibration image, which killed the
export of torchvision's FCN-ResNet50 (32 images × ~1.2 GiB at 512×512 on a 24 GiB box). The
estimate is checked against a graph whose activations are known, the choice (all, fewer, one
cropped) against small budgets, and a bounded calibration still quantizes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcn_edge.export.calib_memory import activation_bytes, available_bytes, fit_calibration
from fcn_edge.export.int8 import CalibrationReader, bound_memory, fp32_nodes, quantize_int8


def two_convs(path) -> str:
    """images N×3×H×W → Conv 3→8 (3×3, pad 1) → Relu → Conv 8→2 (1×1): known activations."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (2, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["images", "w1"], ["a"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["a"], ["b"], name="r1"),
             helper.make_node("Conv", ["b", "w2"], ["logits"], name="c2")]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                     ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2, "h", "w"])],
        [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return str(path)


def test_activation_bytes_counts_every_float_output(tmp_path):
    path = two_convs(tmp_path / "two.onnx")
    assert activation_bytes(path, 10, 20) == 4 * 200 * (8 + 8 + 2)  # a, b, logits
    assert activation_bytes(path, 20, 20) == 2 * activation_bytes(path, 10, 20)
    assert available_bytes() > 0


@pytest.mark.parametrize("budget, expected", [
    (10_000, (4, None)),      # 4 × 2,000 fit
    (8_000, (4, None)),       # exactly 4 × 2,000: all fit, nothing said
    (5_000, (2, None)),       # two fit
    (500, (1, (64, 64))),     # not even one: one image, cropped
])
def test_fit_keeps_what_the_budget_holds(budget, expected):
    per_sample = lambda h, w: 2_000 * (h * w) // (128 * 128)  # noqa: E731
    count, crop, message = fit_calibration([0] * 4, (128, 128), per_sample, budget)
    assert (count, crop) == expected
    assert (message is None) == (count == 4)
    if crop:
        assert per_sample(*crop) <= budget and "cropped to 64×64" in message
    elif message:
        assert message.startswith("int8: calibrating on 2 of 4 images")


def test_a_bounded_calibration_still_quantizes(tmp_path):
    path = two_convs(tmp_path / "two.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"images": rng.normal(size=(1, 3, 64, 64)).astype(np.float32)} for _ in range(6)]
    lines = []
    reader = bound_memory(CalibrationReader(feeds), path, lines.append,
                          budget=activation_bytes(path, 64, 64) * 2)
    assert len(reader) == 2 and lines[0].startswith("int8: calibrating on 2 of 6 images")
    tiny = bound_memory(CalibrationReader(feeds), path, lines.append, budget=4 * 64 * 64 * 18 // 4)
    assert len(tiny) == 1 and tiny.samples[0]["images"].shape == (1, 3, 32, 32)
    out = quantize_int8(path, tmp_path / "two.int8.onnx", tiny)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    untouched = bound_memory(CalibrationReader(feeds), path, lines.append, budget=1 << 40)
    assert len(untouched) == 6 and len(lines) == 2  # nothing said when everything fits


def test_a_published_architectures_last_classifier_conv_stays_fp32():
    # torchvision's FCNHead: classifier.0 (3×3) is trunk-sized work, quantized; classifier.4
    # (1×1 to the classes) computes the logits, kept fp32 like the paper nets' score layers.
    edges = [("/model/backbone/conv1/Conv", "x", "t1"),
             ("/model/classifier/classifier.0/Conv", "t1", "t2"),
             ("/model/classifier/classifier.2/Relu", "t2", "t3"),
             ("/model/classifier/classifier.4/Conv", "t3", "t4"),
             ("/model/Resize", "t4", "t5"),
             ("/model/aux_classifier/aux_classifier.4/Conv", "t1", "t6")]  # off the trunk
    nodes = [helper.make_node(n.rsplit("/", 1)[1], [i], [o], name=n) for n, i, o in edges]
    graph = helper.make_graph(nodes, "g", [], [])
    kept = set(fp32_nodes(helper.make_model(graph)))
    assert "/model/classifier/classifier.4/Conv" in kept and "/model/Resize" in kept
    assert "/model/aux_classifier/aux_classifier.4/Conv" in kept
    assert "/model/classifier/classifier.0/Conv" not in kept
