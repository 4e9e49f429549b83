"""Every kind of artifact fcn-edge exports passes the TensorRT 8.6, 10 and 11 compatibility
check, with no finding at all: every backbone and layout, raw IO and argmax (uint8 and int32
labels), several heads and inputs, fp16 and int8 (TensorRT's scheme). The graphs come out of
the exporter's own steps (trace, onnxslim, parity, the fp16 converter, the int8 quantizer);
the real ``fcn-edge export`` runs its check on them before writing (test_exporter_tensorrt).
VGG16 and AlexNet are built with ``fc_channels=256`` instead of the paper's 4096: the same
operators, types and dynamic dims at a tenth of the size (and of the test's minutes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from fcn_edge.export.artifact_meta import artifact_meta
from fcn_edge.export.exporter import ExportConfig, export_fp32
from fcn_edge.export.fp16 import convert_with_report
from fcn_edge.export.int8 import quantize_int8
from fcn_edge.export.onnx_export import save_onnx
from fcn_edge.export.onnx_props import set_metadata
from fcn_edge.export.parity import artifact_feed, scene_arrays
from fcn_edge.export.trt_compat import check_tensorrt_targets
from fcn_edge.export.trt_support import TRT_VERSIONS
from fcn_edge.models import load_model
from support import make_checkpoint
from support_multi_io import make_multi_checkpoint

SIZE = 48


def _fp32(checkpoint: Path, **options) -> tuple[onnx.ModelProto, object]:
    """The exporter's fp32 graph (traced, simplified, parity-checked), not written."""
    config = ExportConfig(str(checkpoint), parity_sizes=((SIZE, SIZE),), **options)
    model = load_model(checkpoint).eval()
    meta = artifact_meta(model, checkpoint, raw_io=config.raw_io, argmax=config.argmax,
                         shapes=None, options={}, labels_dtype=config.labels_dtype)
    return export_fp32(model, meta, config, log=lambda line: None)


def _fp16(fp32: onnx.ModelProto, meta) -> onnx.ModelProto:
    fp16, _ = convert_with_report(fp32)
    set_metadata(fp16, meta.with_(precision="fp16").to_props())
    return fp16


def _int8(fp32: onnx.ModelProto, meta, tmp_path: Path) -> onnx.ModelProto:
    source, out = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    save_onnx(fp32, source)
    feeds = [artifact_feed(meta, arrays) for arrays in scene_arrays(meta, [(SIZE, SIZE)] * 2)]
    quantize_int8(source, out, feeds, target="tensorrt")
    int8 = onnx.load(str(out))
    set_metadata(int8, meta.with_(precision="int8").to_props())
    return int8


def _assert_builds(model: onnx.ModelProto, what: str) -> None:
    for report in check_tensorrt_targets(model, TRT_VERSIONS):
        assert not report.findings, (what, report.tensorrt, [f.text() for f in report.findings])


def _narrow(path: Path, backbone: str, name: str, layout: str = "edge") -> Path:
    import torch

    from fcn_edge.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model(name, num_classes=5, backbone=backbone, layout=layout,
                         fc_channels=256).eval()
    return save_checkpoint(model, path, {"classes": [f"c{i}" for i in range(5)]})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trt_compat")
    return {
        "resnet18": make_checkpoint(tmp / "r18.pt", backbone="resnet18", name="fcn8s"),
        "alexnet": _narrow(tmp / "alex.pt", "alexnet", "fcn16s"),
        # the released nets' layout (100-pixel pad, crops): the paper's own net
        "vgg16_reference": _narrow(tmp / "vgg.pt", "vgg16", "fcn8s", "reference"),
        "two_heads": make_multi_checkpoint(tmp / "heads.pt", inputs=(("rgb", 3),)),
        "rgbd": make_multi_checkpoint(tmp / "rgbd.pt", heads=()),
        "rgb_hha_late": make_multi_checkpoint(tmp / "hha.pt", inputs=(("rgb", 3), ("hha", 3)),
                                              fusion="late", heads=()),
        # The edge backbones: hardswish, squeeze-excitation (global pooling, hard sigmoid, a
        # broadcast Mul), depthwise convolutions; GoogLeNet's inception concatenations and
        # ceil-mode pools; each with several heads and inputs too.
        "mobilenet_v3_large": make_checkpoint(tmp / "mnl.pt", backbone="mobilenet_v3_large"),
        "mobilenet_v3_small": make_checkpoint(tmp / "mns.pt", backbone="mobilenet_v3_small",
                                              name="fcn16s"),
        "googlenet": make_checkpoint(tmp / "goog.pt", backbone="googlenet"),
        "mobilenet_two_heads_rgbd": make_multi_checkpoint(tmp / "mn_multi.pt",
                                                          backbone="mobilenet_v3_large"),
        "googlenet_hha_late": make_multi_checkpoint(
            tmp / "goog_hha.pt", inputs=(("rgb", 3), ("hha", 3)), fusion="late", heads=(),
            backbone="googlenet"),
    }


IO = {"plain": {}, "raw_argmax": {"raw_io": True, "argmax": True},
      "raw_argmax_int32": {"raw_io": True, "argmax": True, "labels_dtype": "int32"},
      "argmax": {"argmax": True}}


@pytest.mark.parametrize("name, io", [
    ("resnet18", "plain"), ("resnet18", "raw_argmax"), ("resnet18", "raw_argmax_int32"),
    ("alexnet", "plain"), ("alexnet", "raw_argmax"), ("vgg16_reference", "raw_argmax"),
    ("two_heads", "raw_argmax"), ("two_heads", "plain"),
    ("rgbd", "raw_argmax"), ("rgb_hha_late", "argmax"),
    ("mobilenet_v3_large", "plain"), ("mobilenet_v3_large", "raw_argmax"),
    ("mobilenet_v3_small", "raw_argmax_int32"), ("googlenet", "plain"),
    ("googlenet", "raw_argmax"), ("mobilenet_two_heads_rgbd", "raw_argmax"),
    ("googlenet_hha_late", "argmax"),
])
def test_fp32_and_fp16_artifacts_build_everywhere(checkpoints, name, io):
    fp32, meta = _fp32(checkpoints[name], **IO[io])
    _assert_builds(fp32, f"{name} {io} fp32")
    _assert_builds(_fp16(fp32, meta), f"{name} {io} fp16")


@pytest.mark.parametrize("name, io", [("resnet18", "raw_argmax"), ("resnet18", "plain"),
                                      ("two_heads", "raw_argmax"), ("rgbd", "plain"),
                                      ("mobilenet_v3_large", "raw_argmax"),
                                      ("mobilenet_v3_small", "plain"), ("googlenet", "plain"),
                                      ("mobilenet_two_heads_rgbd", "plain")])
def test_int8_for_tensorrt_builds_everywhere(checkpoints, name, io, tmp_path):
    fp32, meta = _fp32(checkpoints[name], **IO[io])
    int8 = _int8(fp32, meta, tmp_path)
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # explicit: what TensorRT 11 needs
    _assert_builds(int8, f"{name} {io} int8")


def test_the_labels_route_is_exact(checkpoints):
    """uint8 labels pass through float32 for TensorRT: the same labels as int32 ones."""
    from fcn_edge.export.runners import ort_run

    uint8, meta = _fp32(checkpoints["resnet18"], raw_io=True, argmax=True)
    int32, _ = _fp32(checkpoints["resnet18"], raw_io=True, argmax=True, labels_dtype="int32")
    feed = artifact_feed(meta, scene_arrays(meta, [(SIZE, 64)])[0])
    a, b = ort_run(uint8)(feed)["labels"], ort_run(int32)(feed)["labels"]
    assert (a.dtype, b.dtype) == (np.uint8, np.int32) and len(np.unique(a)) > 1
    assert np.array_equal(a, b)
