"""FLOPs counting: one-node graphs against the formulas worked by hand, and an exported FCN
against a count made from PyTorch forward hooks on the same input size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.export.flops import FlopCount, count_flops
from support import export_onnx, random_score_fcn8s, raw_frames_fcn8s


def _model(nodes, weights: dict, outputs=("y",), inputs=(), dtype=TensorProto.FLOAT,
           shape=("N", 3, "H", "W"), opset: int = 17) -> onnx.ModelProto:
    """A graph of ``nodes`` reading ``images`` (``shape``) and the ``weights`` initializers."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", dtype, shape), *inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_model(bias: bool = True) -> onnx.ModelProto:
    """Conv 3 → 8, 3×3, stride 2, padding 1."""
    weights = {"w": np.zeros((8, 3, 3, 3), np.float32), "b": np.zeros(8, np.float32)}
    conv = helper.make_node("Conv", ["images", "w", "b"] if bias else ["images", "w"], ["y"],
                            kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], group=1)
    return _model([conv], weights if bias else {"w": weights["w"]})


def test_conv_matches_the_formula():
    model = _conv_model()
    # 17×23 → ⌊(17 + 2 - 3) / 2⌋ + 1 = 9 by ⌊(23 + 2 - 3) / 2⌋ + 1 = 12.
    macs = 1 * 8 * 9 * 12 * 3 * 3 * 3     # N·Cout·Hout·Wout·(Cin/group)·kh·kw
    bias = 1 * 8 * 9 * 12
    count = count_flops(model, 17, 23)
    assert count == FlopCount(total=2 * macs + bias, by_op={"Conv": 2 * macs + bias})
    assert count.gflops == pytest.approx((2 * macs + bias) / 1e9)
    assert count_flops(model, 17, 23, batch=3).total == 3 * (2 * macs + bias)
    assert count_flops(_conv_model(bias=False), 17, 23).total == 2 * macs
    assert model.graph.input[0].type.tensor_type.shape.dim[2].dim_param == "H"  # not modified


@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_conv_transpose_matches_the_formula(bias):
    c, (h, w) = 6, (11, 7)
    weights = {"w1": np.zeros((c, 3, 1, 1), np.float32), "wt": np.zeros((c, 1, 4, 4), np.float32),
               "bt": np.zeros(c, np.float32)}
    nodes = [helper.make_node("Conv", ["images", "w1"], ["x"], kernel_shape=[1, 1]),
             helper.make_node("ConvTranspose", ["x", "wt", "bt"] if bias else ["x", "wt"],
                              ["y"], kernel_shape=[4, 4], strides=[2, 2], group=c)]
    count = count_flops(_model(nodes, weights), h, w)
    # N·Cin·Hin·Win·(Cout/group)·kh·kw; the output is (H - 1)·2 + 4 by (W - 1)·2 + 4.
    expected = 2 * (1 * c * h * w * 1 * 4 * 4) + (1 * c * (2 * h + 2) * (2 * w + 2) if bias else 0)
    assert count.by_op == {"Conv": 2 * c * h * w * 3, "ConvTranspose": expected}
    assert count.total == 2 * c * h * w * 3 + expected


def test_matmul_and_gemm_match_the_formula():
    h, w, batch = 5, 9, 2
    weights = {"m": np.zeros((w, 4), np.float32), "g": np.zeros((10, 3 * h * w), np.float32)}
    nodes = [helper.make_node("MatMul", ["images", "m"], ["y"]),  # (N·3 batches of) H×W @ W×4
             helper.make_node("Flatten", ["images"], ["flat"]),
             helper.make_node("Gemm", ["flat", "g"], ["z"], transB=1)]  # N×3HW @ (10×3HW)ᵀ
    count = count_flops(_model(nodes, weights, outputs=("y", "z")), h, w, batch)
    assert count.by_op == {"MatMul": 2 * (batch * 3) * h * w * 4,
                           "Gemm": 2 * batch * (3 * h * w) * 10}


def test_quantized_convolutions_count_as_conv():
    weights = {"w8": np.zeros((8, 3, 3, 3), np.int8), "s": np.float32(0.1), "u": np.uint8(0),
               "i": np.int8(0), "b32": np.zeros(8, np.int32)}
    # QDQ: a plain Conv whose weight comes through DequantizeLinear.
    qdq = [helper.make_node("QuantizeLinear", ["images", "s", "u"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "u"], ["x"]),
           helper.make_node("DequantizeLinear", ["w8", "s", "i"], ["w"]),
           helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                            pads=[1, 1, 1, 1])]
    qlinear = [helper.make_node("QuantizeLinear", ["images", "s", "u"], ["q"]),
               helper.make_node("QLinearConv", ["q", "s", "u", "w8", "s", "i", "s", "u", "b32"],
                                ["yq"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
               helper.make_node("DequantizeLinear", ["yq", "s", "u"], ["y"])]
    plain = count_flops(_conv_model(), 17, 23).total
    assert count_flops(_model(qdq, weights), 17, 23).total == plain - 8 * 9 * 12  # no bias
    assert count_flops(_model(qlinear, weights), 17, 23).by_op == {"QLinearConv": plain}


# --- a real FCN -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fcn(tmp_path_factory):
    """ResNet18 FCN-8s (8 classes), its ONNX export and its raw-IO (uint8 frames) export."""
    folder = tmp_path_factory.mktemp("flops")
    model = random_score_fcn8s()
    return (model, export_onnx(model, folder / "fcn8s.onnx"),
            export_onnx(raw_frames_fcn8s(), folder / "frames.onnx", raw=True))


def _hooked_flops(model: torch.nn.Module, height: int, width: int) -> int:
    """The FLOPs of ``model``'s convolutions on a 1×3×H×W input, from their actual tensors.

    torch's exporter folds each (eval-mode) BatchNorm into the convolution before it, which
    thereby gets a bias: one add per output element. So each BatchNorm2d counts one FLOP per
    element here, and the two counts agree exactly."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.BatchNorm2d):
            total += output.numel()
            return
        slid = inputs[0] if isinstance(module, torch.nn.ConvTranspose2d) else output
        # weight[0]: (Cin/group)·kh·kw for Conv2d, (Cout/group)·kh·kw for ConvTranspose2d
        total += 2 * slid.numel() * module.weight[0].numel()
        total += output.numel() if module.bias is not None else 0

    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.BatchNorm2d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, height, width))
    finally:
        for handle in handles:
            handle.remove()
    return total


@pytest.mark.parametrize("size", [(256, 512), (97, 131)])  # 97×131: crops with odd sizes
def test_fcn_count_equals_pytorch_hooks(fcn, size):
    model, path, _ = fcn
    count = count_flops(path, *size)
    assert count.total == _hooked_flops(model, *size)
    assert set(count.by_op) == {"Conv", "ConvTranspose"}


def test_fcn_flops_scale_with_pixels_and_ignore_raw_io(fcn):
    _, path, frames = fcn
    small, large = count_flops(path, 256, 512), count_flops(path, 512, 1024)
    assert 3.9 <= large.total / small.total <= 4.1
    # The raw-IO graph adds only normalisation (Mul/Add) and ArgMax, which are not counted:
    # the counts are in fact equal.
    assert count_flops(frames, 256, 512).total == pytest.approx(small.total, rel=1e-3)


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{"height": 0}, {"width": -3}, {"batch": 0},
                                    {"height": 2.5}, {"height": True}])
def test_bad_sizes_are_input_errors(kwargs):
    args = {"height": 17, "width": 23, **kwargs}
    with pytest.raises(InputError, match=next(iter(kwargs))):
        count_flops(_conv_model(), **args)


def test_unreadable_or_unsized_models_are_format_errors(tmp_path: Path):
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\xff\xfe this is not an ONNX model")
    with pytest.raises(ModelFormatError, match="model.onnx"):
        count_flops(garbage, 17, 23)
    with pytest.raises(ModelFormatError, match="missing.onnx"):
        count_flops(tmp_path / "missing.onnx", 17, 23)
    # A weight fed as an input of unknown shape: the message names the node and the tensor.
    unsized = _model([helper.make_node("Conv", ["images", "w"], ["y"], name="conv1")], {},
                     inputs=[helper.make_tensor_value_info("w", TensorProto.FLOAT, None)])
    with pytest.raises(ModelFormatError, match="Conv node 'conv1'.*weight 'w' is unknown"):
        count_flops(unsized, 17, 23)
    with pytest.raises(ModelFormatError, match="rank 2"):
        count_flops(_model([], {}, outputs=(), shape=("N", 3)), 17, 23)
