"""Exports of the paper's §5 nets: RGB-D inputs (early and late fusion) and several heads.

Each artifact has one input tensor per modality and one output per head, metadata describing
each, and is held by the exporter to the PyTorch reference on every head — here checked again
from outside, with ONNX Runtime against the model.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from fcn_edge.data.classes import voc_palette
from fcn_edge.data.procedural import PROCEDURAL_CLASSES
from fcn_edge.data.procedural_multi import GEOMETRIC_CLASSES
from fcn_edge.export import parity
from fcn_edge.export.exporter import ExportConfig, export
from fcn_edge.export.runners import ort_run
from fcn_edge.export.triton import triton_config
from fcn_edge.export.trt_options import optimisation_profile
from fcn_edge.models import create_model, load_model, save_checkpoint
from fcn_edge.runtime.metadata import ArtifactMeta, parse_shapes

SIZES = ((48, 48), (33, 47))
QUIET = {"log": lambda line: None}


def _scored(model: torch.nn.Module) -> torch.nn.Module:
    """Score layers drawn from N(0, 0.01²) (seed 0), so labels vary over the image."""
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "score" in name:
            torch.nn.init.normal_(p, std=0.01)
    return model.eval()


def _checkpoint(tmp_path, name: str, spec: str, **options):
    model = _scored(create_model("fcn16s", backbone="resnet18", **options))
    meta = {"classes": list(PROCEDURAL_CLASSES), "palette": voc_palette(8).tolist(),
            "dataset": {"spec": spec, "image_size": [48, 48]}}
    if model.config.heads:
        meta["tasks"] = {"semantic": {"classes": list(PROCEDURAL_CLASSES),
                                      "palette": voc_palette(8).tolist(),
                                      "metrics": {"mean_iou": 0.6}},
                         "geometric": {"classes": list(GEOMETRIC_CLASSES),
                                       "palette": [[0, 0, 0], [200, 0, 0], [0, 200, 0]],
                                       "metrics": {"mean_iou": 0.8}}}
    return save_checkpoint(model, tmp_path / f"{name}.pt", meta)


def _meta(path) -> ArtifactMeta:
    model = onnx.load(str(path))
    return ArtifactMeta.from_props({p.key: p.value for p in model.metadata_props})


def _io(path) -> tuple[list[str], list[str]]:
    graph = onnx.load(str(path)).graph
    return [i.name for i in graph.input], [o.name for o in graph.output]


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two_heads")
    return _checkpoint(tmp, "two", "synthetic-twotask", heads={"semantic": 8, "geometric": 3})


def test_two_heads_export_one_output_per_task_described(two_heads, tmp_path):
    result = export(ExportConfig(str(two_heads), out_dir=str(tmp_path), parity_sizes=SIZES),
                    **QUIET)
    path = result.artifacts["fp32"]
    assert _io(path) == (["images"], ["logits_semantic", "logits_geometric"])
    meta = _meta(path)
    assert [h.task for h in meta.heads] == ["semantic", "geometric"]
    assert meta.heads[1].classes == tuple(GEOMETRIC_CLASSES)
    assert meta.heads[1].palette[1] == (200, 0, 0)
    assert meta.heads[1].metrics == {"mean_iou": 0.8} and meta.inputs == ()
    assert meta.output_tensors() == (("logits_semantic", 8, "float32"),
                                     ("logits_geometric", 3, "float32"))
    # ONNX Runtime against the model, head by head, on a size parity did not use.
    model = load_model(two_heads)
    arrays = parity.scene_arrays(meta, [(40, 56)], seed=3)[0]
    outputs = ort_run(path)(parity.artifact_feed(meta, arrays))
    references = parity.reference_heads(model, arrays)
    for name, ref in zip(meta.output_names, references):
        assert np.abs(outputs[name] - ref).max() <= 1e-4 * np.abs(ref).max()
    assert len(np.unique(references[0].argmax(1))) > 1  # the check is not on constant labels


def test_two_heads_raw_io_argmax_gives_labels_per_task(two_heads, tmp_path):
    result = export(ExportConfig(str(two_heads), out_dir=str(tmp_path), raw_io=True,
                                 argmax=True, parity_sizes=SIZES), **QUIET)
    path = result.artifacts["fp32"]
    assert _io(path) == (["frames"], ["labels_semantic", "labels_geometric"])
    meta = _meta(path)
    image = parity.scenes([(45, 61)], seed=4)[0]
    outputs = ort_run(path)({"frames": np.ascontiguousarray(image[None, ..., ::-1])})
    references = parity.reference_heads(load_model(two_heads), {"rgb": image})
    for name, ref in zip(meta.output_names, references):
        assert outputs[name].dtype == np.uint8
        assert (outputs[name] == ref.argmax(1)).mean() > 0.999


def test_two_heads_fp16_and_int8_report_every_task(two_heads, tmp_path):
    result = export(ExportConfig(str(two_heads), out_dir=str(tmp_path), fp16=True, int8=True,
                                 calib="synthetic-twotask", calib_images=4, eval_images=3,
                                 parity_sizes=SIZES[:1]), **QUIET)
    for precision in ("fp16", "int8"):
        figures = result.report[precision]["dataset"]
        assert set(figures["tasks"]) == {"semantic", "geometric"}
        assert figures["tasks"]["geometric"]["images"] == 3
        assert abs(figures["tasks"]["geometric"]["delta_miou_points"]) < 5
    assert _io(result.artifacts["int8"])[1] == ["logits_semantic", "logits_geometric"]


@pytest.mark.parametrize("options, names", [
    ({"in_channels": 4}, ["images", "depth"]),
    ({"inputs": {"rgb": 3, "hha": 3}, "fusion": "late"}, ["images", "hha"]),
])
def test_rgbd_exports_take_one_tensor_per_modality(tmp_path, options, names):
    checkpoint = _checkpoint(tmp_path, "rgbd", "synthetic-rgbd", num_classes=8, **options)
    result = export(ExportConfig(str(checkpoint), out_dir=str(tmp_path), parity_sizes=SIZES),
                    **QUIET)
    path = result.artifacts["fp32"]
    assert _io(path) == (names, ["logits"])
    meta = _meta(path)
    assert [(i.name, i.layout, i.dtype) for i in meta.inputs] == \
        [(n, "NCHW", "float32") for n in names]
    if names[1] == "depth":
        assert meta.inputs[1].encoding["mean_m"] == pytest.approx(2.8)
    arrays = parity.scene_arrays(meta, [(40, 56)], seed=5)[0]
    feed = parity.artifact_feed(meta, arrays)
    reference = parity.reference_heads(load_model(checkpoint), arrays)[0]
    assert np.abs(ort_run(path)(feed)["logits"] - reference).max() <= 1e-4 * np.abs(
        reference).max()
    # The extra modality matters: another depth/HHA gives other scores.
    feed[names[1]] = np.zeros_like(feed[names[1]])
    assert np.abs(ort_run(path)(feed)["logits"] - reference).max() > 1e-3


def test_rgbd_raw_io_changes_only_the_rgb_input(tmp_path):
    checkpoint = _checkpoint(tmp_path, "rgbd", "synthetic-rgbd", num_classes=8, in_channels=4)
    result = export(ExportConfig(str(checkpoint), out_dir=str(tmp_path), raw_io=True,
                                 argmax=True, int8=True, calib="synthetic-rgbd",
                                 calib_images=4, eval_images=3, parity_sizes=SIZES[:1]),
                    **QUIET)
    meta = _meta(result.artifacts["fp32"])
    assert meta.input_tensors() == (("frames", "NHWC", 3, "uint8"), ("depth", "NCHW", 1, "float32"))
    assert result.report["int8"]["dataset"]["agreement"] > 0.95


def test_profiles_and_triton_config_cover_every_tensor(two_heads, tmp_path):
    checkpoint = _checkpoint(tmp_path, "rgbd", "synthetic-rgbd", num_classes=8, in_channels=4)
    meta = _meta(export(ExportConfig(str(checkpoint), out_dir=str(tmp_path), raw_io=True,
                                     parity_sizes=SIZES[:1]), **QUIET).artifacts["fp32"])
    profile = optimisation_profile(meta, parse_shapes("1x32x32:2x64x64:4x128x128"))
    assert profile == {"frames": ((1, 32, 32, 3), (2, 64, 64, 3), (4, 128, 128, 3)),
                       "depth": ((1, 1, 32, 32), (2, 1, 64, 64), (4, 1, 128, 128))}
    config = _triton(triton_config("rgbd", meta, "onnxruntime_onnx"))
    assert [(i.name, list(i.dims)) for i in config.input] == [
        ("frames", [-1, -1, -1, 3]), ("depth", [-1, 1, -1, -1])]
    heads = _meta(export(ExportConfig(str(two_heads), out_dir=str(tmp_path), argmax=True,
                                      parity_sizes=SIZES[:1]), **QUIET).artifacts["fp32"])
    config = _triton(triton_config("two", heads, "onnxruntime_onnx"))
    assert [o.name for o in config.output] == ["labels_semantic", "labels_geometric"]


def _triton(text: str):
    """The config parsed by Triton's own ModelConfig schema (tritonclient, the serve extra)."""
    from google.protobuf import text_format

    pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    return text_format.Parse(text, pb2.ModelConfig())
