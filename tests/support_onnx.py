"""Small foreign segmentation ONNX models built with ``onnx.helper`` (no torch): a few
convolutions to a coarse score grid, like jetson-inference's FCN-ResNet18 exports, for the
import and zoo tests: ``from support_onnx import coarse_model``."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _conv(name: str, x: str, out: str, cin: int, cout: int, stride: int, rng) -> tuple:
    w = rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)
    w = numpy_helper.from_array(w.astype(np.float32), name + "_w")
    node = helper.make_node("Conv", [x, w.name], [out], strides=[stride, stride],
                            pads=[1, 1, 1, 1], name=name)
    return node, w


def coarse_model(classes: int = 21, width: int = 16,
                 inputs: tuple[str, ...] = ("input",)) -> onnx.ModelProto:
    """N×3×H×W float in (dynamic size), N×classes×H/4×W/4 scores out (``scores``); several
    ``inputs`` are summed first (a multi-input model)."""
    rng = np.random.default_rng(0)
    x = inputs[0]
    nodes = []
    if len(inputs) > 1:
        nodes.append(helper.make_node("Add", list(inputs), ["summed"], name="sum"))
        x = "summed"
    c1, w1 = _conv("c1", x, "h", 3, width, 2, rng)
    relu = helper.make_node("Relu", ["h"], ["r"], name="relu")
    c2, w2 = _conv("c2", "r", "scores", width, classes, 2, rng)
    graph = helper.make_graph(
        [*nodes, c1, relu, c2], "coarse",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3, "H", "W"])
         for n in inputs],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes, "h", "w"])],
        [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
