"""Malformed and lying metadata, as a hostile file would carry it.

Every bad value of every field, written into a real ONNX file (``metadata_props``, by the
exporter's own writer) and into a real engine file's header, must be refused when the artifact
is read: a ModelFormatError — never an OverflowError, a TypeError or numpy's text — on one line
that names the file and the field. Values that would be trusted without bounds (a size multiple
of 4096 ran a 64×96 frame at 4096×4096 for 38 s) are refused the same way.
"""
from __future__ import annotations

import json
import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fcn_edge.errors import ModelFormatError
from fcn_edge.export.onnx_props import get_metadata, set_metadata
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.backends.base import probe_feed
from fcn_edge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from fcn_edge.runtime.engine_file import (MAGIC, engine_meta, read_engine_header,
                                          write_engine)
from fcn_edge.runtime.metadata import ArtifactMeta
from fcn_edge.runtime.onnx_file import read_onnx_metadata

from support_metadata import OLD_PROPS

DEEP = "[" * 100_000 + "]" * 100_000          # nesting that overflows Python's parser
HUGE = "1" * 5000                              # past Python's int-from-text digit limit
HEAD = json.loads(OLD_PROPS["heads"])[0]
INPUT = json.loads(OLD_PROPS["inputs"])[0]


def _heads(**changes) -> str:
    return json.dumps([{**HEAD, **changes}, json.loads(OLD_PROPS["heads"])[1]])


def _inputs(**changes) -> str:
    return json.dumps([{**INPUT, **changes}, json.loads(OLD_PROPS["inputs"])[1]])


#: field → values (as ``metadata_props`` text) that must each be refused, naming the field.
BAD = {
    "model": ['""', '"' + "m" * 300 + '"'],
    "backbone": ['""', '"' + "b" * 257 + '"'],
    "num_classes": ["0", "-1", "4", "true", "2.5", '"three"', "1e9", HUGE, DEEP],
    "classes": ["[]", '"abc"', "[1, 2, 3]", '["sky", "ground"]', "[null, 1, 2]", "{bad json",
                json.dumps(["c"] * 70_000), DEEP],
    "palette": ["[[0, 0, 0], [128, 0, 0], [0, 128, 300]]", "[[0, 0, 0], [1, 1, 1]]",
                "[[0, 0, 0], [1, 1, 1], [1.5, 2, 3]]", "[[true, 0, 0], [0, 0, 0], [0, 0, 0]]",
                "[[0, 0, 0], [1, 1, 1], [-1, 0, 0]]", '"red"', "[[0, 0, 0, 0]]",
                json.dumps([[0, 0, 0]] * 70_000), HUGE, DEEP],
    "mean": ["[NaN, 0.5, 0.5]", "[Infinity, 0.5, 0.5]", "[1e308, 0.5, 0.5]", "[-0.5, 0.5, 0.5]",
             "[0.5, 0.5]", "[0.5, 0.5, 0.5, 0.5]", '"0.5"', "{}", DEEP],
    "std": ['"abc"', "[0, 0.2, 0.2]", "[-1, 1, 1]", "[NaN, 1, 1]", "[Infinity, 1, 1]",
            "[1e400, 1, 1]", '["a", "b", "c"]', "[1e-9, 1, 1]", "[1e6, 1, 1]", "[1, 1]"],
    "size_multiple": ["4096", "0", "-1", "1.5", '"8"', "true", "100", HUGE],
    "output_stride": ["0", "-8", "100000", "[8]", '"8"'],
    "color_order": ["5", '"rbg"', "null5"],
    "raw_io": ['"yes"', "1", "[true]"],
    "argmax": ['"true"', "0"],
    "precision": ['"fp64"', "16"],
    "labels_dtype": ['"float64"', '"x"', "8"],
    "ignore_index": ['"x"', "1e20", "1" + "0" * 30, "2.5"],
    "shapes": ['{"min": [1, 32, 32], "opt": [1, 64, 64], "max": [1, 1e10, 64]}',
               '{"min": [1, 32, 32], "opt": [1, 64, 64], "max": [100000, 100000, 100000]}',
               '{"min": [1.5, 32, 32], "opt": [2, 64, 64], "max": [2, 64, 64]}',
               '{"min": [true, 32, 32], "opt": [1, 64, 64], "max": [1, 64, 64]}',
               '{"min": [1, 0, 32], "opt": [1, 64, 64], "max": [1, 64, 64]}',
               '{"min": [1, 32], "opt": [1, 64, 64], "max": [1, 64, 64]}', '"x"', "[]", DEEP],
    "dataset": ["[1]", '{"image_size": [0, 64]}', '{"spec": 5}'],
    "metrics": ["[1]", '"good"'],
    "model_options": ["5"],
    "inputs": ["{bad", "[1]", '{"name": "images"}', _inputs(channels=-3),
               _inputs(channels=100_000), _inputs(channels=4), _inputs(name="frames"),
               _inputs(layout="NHWC"), _inputs(dtype="uint8"), _inputs(modality="depth"),
               _inputs(name=""), DEEP],
    "heads": ["{bad", "[1, 2]", '[{"task": 1}]', "[[]]", _heads(num_classes=2),
              _heads(task="geometric"), _heads(output="labels_geometric"),
              _heads(labels_dtype="float32"), _heads(palette=[[0, 0, 0]]),
              _heads(num_classes=300, classes=["c"] * 300, palette=[[0, 0, 0]] * 300),
              _heads(classes="sky"), DEEP],
}
CASES = [(field, value) for field, values in BAD.items() for value in values]


def _check(message: str, source: str, field: str) -> None:
    assert "\n" not in message and len(message) < 400, message
    assert source in message and f"'{field}" in message, message


def _tiny_onnx(path, props) -> None:
    """A real ONNX graph (1×1 convolution, then argmax) carrying ``props``."""
    weight = np.ones((3, 3, 1, 1), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "weight"], ["scores"]),
         helper.make_node("ArgMax", ["scores"], ["labels"], axis=1, keepdims=0)], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"])],
        [onnx.numpy_helper.from_array(weight, "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    set_metadata(model, props)
    onnx.save(model, str(path))


@pytest.mark.parametrize("field, value", CASES, ids=[f"{f}-{i}" for i, (f, _) in
                                                     enumerate(CASES)])
def test_bad_metadata_props_in_an_onnx_file_are_one_line(tmp_path, field, value):
    path = tmp_path / "bad.onnx"
    _tiny_onnx(path, OLD_PROPS | {field: value})
    with pytest.raises(ModelFormatError) as caught:
        read_onnx_metadata(path)
    _check(str(caught.value), "bad.onnx", field)


@pytest.mark.parametrize("field, value", [c for c in CASES if c[1] not in (DEEP, HUGE)],
                         ids=lambda v: str(v)[:20])
def test_bad_metadata_in_an_engine_header_is_one_line(tmp_path, field, value):
    meta = ArtifactMeta.from_props(OLD_PROPS).to_dict()
    try:
        meta[field] = json.loads(value)
    except ValueError:
        meta[field] = value  # kept as the text a careless writer would store
    header = {"meta": meta, "tensorrt_version": "10.3.0.26",
              "gpu": {"name": "GPU", "compute_capability": "8.6"}}
    path = write_engine(tmp_path / "bad.engine", b"plan", header)
    with pytest.raises(ModelFormatError) as caught:
        engine_meta(read_engine_header(path), path)
    _check(str(caught.value), "bad.engine", field)


def _raw_engine(path, blob: bytes):
    path.write_bytes(MAGIC + struct.pack("<I", len(blob)) + blob + b"plan")
    return path


@pytest.mark.parametrize("header, field", [
    ('{"format": "fcn-edge/engine", "format_version": 1, "meta": {}, "tensorrt_version": "10",'
     ' "gpu": [1, 2], "plan_bytes": 4}', "gpu"),
    ('{"format": "fcn-edge/engine", "format_version": 1, "meta": {}, "tensorrt_version": "10",'
     ' "gpu": {"name": "GPU", "compute_capability": "sm_x"}, "plan_bytes": 4}',
     "gpu.compute_capability"),
    ('{"format": "fcn-edge/engine", "format_version": 1, "meta": {}, "tensorrt_version": 10,'
     ' "gpu": {"name": "GPU", "compute_capability": "8.6"}, "plan_bytes": 4}',
     "tensorrt_version"),
    ('{"format": "fcn-edge/engine", "format_version": 1, "meta": {}, "tensorrt_version": "10",'
     ' "gpu": {"name": "GPU", "compute_capability": "8.6"}, "plan_bytes": -4}', "plan_bytes"),
    ('{"format": "fcn-edge/engine", "format_version": 1, "meta": {}, "tensorrt_version": "10",'
     ' "gpu": {"name": "GPU", "compute_capability": "8.6"}, "plan_bytes": true}', "plan_bytes"),
    ('{"format": "fcn-edge/engine", "plan_bytes": ' + HUGE + "}", "JSON"),
    (DEEP, "JSON"),
])
def test_a_garbled_engine_header_is_one_line(tmp_path, header, field):
    path = _raw_engine(tmp_path / "bad.engine", header.encode())
    with pytest.raises(ModelFormatError) as caught:
        read_engine_header(path)
    message = str(caught.value)
    assert "\n" not in message and "bad.engine" in message and field in message, message


def test_a_size_multiple_of_4096_is_refused_when_a_real_artifact_opens(onnx_artifact,
                                                                       tmp_path):
    """It made a 64×96 frame run at 4096×4096 (38 s); now the artifact does not open."""
    source = onnx_artifact("plain")
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    set_metadata(model, props | {"size_multiple": "4096"})
    path = tmp_path / "multiple.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFormatError) as caught:
        Segmenter(path, "onnxruntime:cpu", threads=1)
    _check(str(caught.value), "multiple.onnx", "size_multiple")


# --- metadata that lies about the classes: refused, never labels without a name ------------

def _relabel(source, path, classes: int):
    """A copy of the real artifact ``source`` whose metadata — written by the exporter's own
    writer — lists only its first ``classes`` classes."""
    model = onnx.load(str(source))
    meta = ArtifactMeta.from_props(get_metadata(model))
    meta = meta.with_(num_classes=classes, classes=meta.classes[:classes],
                      palette=meta.palette[:classes])
    set_metadata(model, meta.to_props())
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def label_range(onnx_artifact, scene):
    """``(p, q, frame)`` of the real argmax artifact: the highest label of the probe each
    backend runs when it opens, and the higher one a real frame gets."""
    with OnnxRuntimeBackend(onnx_artifact("argmax"), threads=1) as backend:
        probe = probe_feed(backend.input_specs, backend.meta.shapes)
        p = int(backend.run(probe)["labels"].max())
    frame = scene(64, 96, seed=1)
    with Segmenter(onnx_artifact("argmax"), threads=1) as seg:
        q = int(seg(frame).max())
    assert q > p  # else this frame shows nothing the probe does not
    return p, q, frame


def test_an_argmax_artifact_listing_too_few_classes_is_refused_when_it_opens(
        onnx_artifact, label_range, tmp_path):
    p, _, _ = label_range
    path = _relabel(onnx_artifact("argmax"), tmp_path / "few.onnx", p)
    with pytest.raises(ModelFormatError) as caught:
        Segmenter(path, "onnxruntime:cpu", threads=1)
    message = str(caught.value)
    assert message.startswith(f"{path}: output 'labels' gave label {p} but its metadata lists "
                              f"{p} classes") and "\n" not in message
    assert message.endswith("export it again with `fcn-edge export`")


def test_a_label_the_probe_missed_fails_the_call_not_silently(onnx_artifact, label_range,
                                                             tmp_path):
    p, q, frame = label_range
    path = _relabel(onnx_artifact("argmax"), tmp_path / "few.onnx", p + 1)
    with Segmenter(path, "onnxruntime:cpu", threads=1) as seg:  # the probe sees no lie
        with pytest.raises(ModelFormatError) as caught:
            seg(frame)
    message = str(caught.value)
    assert f"few.onnx: output 'labels' gave label {q} but its metadata lists {p + 1} " \
           f"classes" in message and "\n" not in message


def test_a_logits_artifact_listing_too_few_classes_is_refused_by_its_graph(onnx_artifact,
                                                                          tmp_path):
    path = _relabel(onnx_artifact("plain"), tmp_path / "few.onnx", 3)
    with pytest.raises(ModelFormatError, match=r"few\.onnx: output 'logits' has 8 channels but "
                                               r"its metadata lists 3 classes \(background, "):
        Segmenter(path, "onnxruntime:cpu", threads=1)


def test_a_tensorrt_engine_listing_too_few_classes_is_refused(fake_tensorrt, onnx_artifact,
                                                              label_range, tmp_path):
    p, q, frame = label_range
    few = fake_tensorrt.engine(_relabel(onnx_artifact("argmax"), tmp_path / "a.onnx", p),
                               name="few.engine")
    with pytest.raises(ModelFormatError, match=rf"few\.engine: output 'labels' gave label {p} "
                                               r".*rebuild it with `fcn-edge build`"):
        Segmenter(few)
    assert fake_tensorrt.cudart.live == {}  # what the probe allocated is freed
    more = fake_tensorrt.engine(_relabel(onnx_artifact("argmax"), tmp_path / "b.onnx", p + 1),
                                name="more.engine")
    with Segmenter(more) as seg, pytest.raises(ModelFormatError, match=f"gave label {q}"):
        seg(frame)
    logits = fake_tensorrt.engine(_relabel(onnx_artifact("plain"), tmp_path / "c.onnx", 3),
                                  name="logits.engine")
    with pytest.raises(ModelFormatError, match="'logits' has 8 channels"):
        Segmenter(logits)


def test_a_checkpoint_whose_meta_lists_too_few_classes_names_the_checkpoint(tmp_path):
    from fcn_edge.models import create_model, save_checkpoint

    model = create_model("fcn32s", num_classes=8, backbone="resnet18")
    path = save_checkpoint(model, tmp_path / "few.pt", {"classes": ["a", "b", "c"]})
    with pytest.raises(ModelFormatError) as caught:
        Segmenter(path, "torch:cpu", threads=1)
    message = str(caught.value)
    assert message.startswith(f"{path}: 8 classes but 3 names") and "\n" not in message
