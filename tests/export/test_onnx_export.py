"""Tracing to ONNX: dynamic sizes exact against PyTorch for every backbone, in-graph pre- and
post-processing checked against the runtime's numpy, and the checker's verdict."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from fcn_edge.data import render_scene
from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.export.graph import DeployGraph
from fcn_edge.export.onnx_export import check_model, simplify, trace_to_onnx
from fcn_edge.export.onnx_props import set_metadata
from fcn_edge.models import create_model
from fcn_edge.runtime.processing import frames_to_input

from support import awaken, ort_infer

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _model(backbone: str, name: str = "fcn8s"):
    torch.manual_seed(1)
    model = awaken(create_model(name, num_classes=5, backbone=backbone)).eval()
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.startswith("score"):
                param.normal_(0, 0.05) if param.ndim > 1 else param.zero_()
    return model


@pytest.mark.parametrize("backbone,name", [("resnet18", "fcn8s"), ("alexnet", "fcn16s"),
                                           ("vgg16", "fcn32s"), ("mobilenet_v3_large", "fcn8s"),
                                           ("mobilenet_v3_small", "fcn16s"),
                                           ("googlenet", "fcn8s")])
def test_dynamic_sizes_match_pytorch(backbone, name):
    model = _model(backbone, name)
    onnx_model = trace_to_onnx(DeployGraph(model), example_size=(64, 64))
    infer = ort_infer(onnx_model)
    # 1×1 and 20×30 are below AlexNet's minimum input (padded in-graph, models/padding.py).
    for n, h, w in [(1, 64, 64), (2, 31, 47), (1, 1, 1), (1, 20, 30), (1, 97, 131)]:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            ref = model(x).numpy()
        out = infer(x.numpy())
        assert out.shape == (n, 5, h, w)
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_raw_io_matches_numpy_preprocessing():
    model = _model("resnet18")
    graph = DeployGraph(model, raw_io=True, mean=MEAN, std=STD, color_order="rgb")
    infer = ort_infer(trace_to_onnx(graph))
    rgb = render_scene(np.random.default_rng(3), 70, 90)[0]
    bgr = np.ascontiguousarray(rgb[..., ::-1])[None]
    with torch.no_grad():
        ref = model(torch.from_numpy(frames_to_input(bgr, MEAN, STD, "rgb", "bgr"))).numpy()
    out = infer(bgr)
    assert out.dtype == np.float32 and out.shape == (1, 5, 70, 90)
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    # The channel order matters: feeding RGB where BGR is expected changes the answer.
    assert np.abs(infer(np.ascontiguousarray(rgb[None])) - ref).max() > 1e-3


def test_argmax_gives_uint8_labels():
    model = _model("resnet18")
    onnx_model = trace_to_onnx(DeployGraph(model, argmax=True))
    output = onnx_model.graph.output[0]
    assert output.name == "labels"
    assert output.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    x = torch.randn(2, 3, 40, 56)
    labels = ort_infer(onnx_model)(x.numpy())
    with torch.no_grad():
        ref = model(x).argmax(1).numpy()
    assert labels.dtype == np.uint8 and labels.shape == (2, 40, 56)
    assert (labels == ref).mean() >= 0.9999
    assert len(np.unique(labels)) > 1  # the test model predicts several classes


def test_many_classes_give_int32_labels():
    model = create_model("fcn32s", num_classes=300, backbone="resnet18").eval()
    onnx_model = trace_to_onnx(DeployGraph(model, argmax=True))
    assert onnx_model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32


def test_dims_are_dynamic_and_named():
    onnx_model = trace_to_onnx(DeployGraph(_model("resnet18")))
    dims = [d.dim_param for d in onnx_model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    assert onnx_model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3
    assert onnx_model.opset_import[0].version == 17


def test_opset_outside_range_is_refused():
    with pytest.raises(InputError, match="opset"):
        trace_to_onnx(DeployGraph(_model("resnet18")), opset=13)


def test_simplify_keeps_metadata_and_results():
    model = _model("resnet18")
    onnx_model = trace_to_onnx(DeployGraph(model))
    set_metadata(onnx_model, {"format": "fcn-edge/onnx", "k": "v"})
    slim = simplify(onnx_model)
    assert {p.key: p.value for p in slim.metadata_props} == {"format": "fcn-edge/onnx", "k": "v"}
    x = np.random.default_rng(0).standard_normal((1, 3, 50, 60)).astype(np.float32)
    assert np.abs(ort_infer(slim)(x) - ort_infer(onnx_model)(x)).max() < 1e-5


def test_checker_failure_is_a_clear_error():
    onnx_model = trace_to_onnx(DeployGraph(_model("resnet18")))
    onnx_model.graph.node[0].input[0] = "no_such_tensor"
    with pytest.raises(ModelFormatError, match="checker"):
        check_model(onnx_model)


def test_labels_dtype_choices():
    from fcn_edge.export.graph import head_labels_dtype

    assert head_labels_dtype(8) == np.uint8 and head_labels_dtype(256, "uint8") == np.uint8
    assert head_labels_dtype(257) == np.int32 and head_labels_dtype(8, "int32") == np.int32
    with pytest.raises(InputError, match="at most 256 classes.*--labels-dtype int32"):
        head_labels_dtype(300, "uint8")
    with pytest.raises(InputError, match="choose one of auto, uint8, int32"):
        head_labels_dtype(8, "int64")
