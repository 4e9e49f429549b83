"""The artifact metadata schema: round trips, validation, and refusals that say what to do."""
from __future__ import annotations

import json

import pytest

from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.runtime.metadata import (FORMAT, ArtifactMeta, DatasetInfo, HeadInfo, InputInfo,
                                       Shapes, default_shapes, parse_shapes)

from support_metadata import OLD_PROPS

def _meta(**changes) -> ArtifactMeta:
    base = dict(model="fcn8s", backbone="resnet18", num_classes=3, classes=("bg", "a", "b"),
                palette=((0, 0, 0), (128, 0, 0), (0, 128, 0)), mean=(0.5, 0.5, 0.5),
                std=(0.25, 0.25, 0.25))
    return ArtifactMeta(**{**base, **changes})


def test_props_round_trip_every_field():
    meta = _meta(raw_io=True, argmax=True, precision="fp16", source_sha256="0123",
                 fcn_edge_version="1.2", shapes=parse_shapes("1x32x32:2x64x96:4x128x256"),
                 parity={"sizes": [{"height": 5, "agreement": 1.0}]}, metrics={"mean_iou": 0.7},
                 dataset=DatasetInfo("synthetic", "synthetic", (64, 96), "hard"))
    props = meta.to_props()
    assert all(isinstance(v, str) for v in props.values())
    assert props["format"] == FORMAT and json.loads(props["classes"]) == ["bg", "a", "b"]
    assert json.loads(props["dataset"]) == {"spec": "synthetic", "layout": "synthetic",
                                            "image_size": [64, 96], "difficulty": "hard"}
    assert ArtifactMeta.from_props(props) == meta


def test_numeric_looking_strings_stay_strings():
    meta = _meta(source_sha256="1234", fcn_edge_version="2")
    back = ArtifactMeta.from_props(meta.to_props())
    assert back.source_sha256 == "1234" and back.fcn_edge_version == "2"


def test_names_follow_the_options():
    assert (_meta().input_name, _meta().output_name) == ("images", "logits")
    assert (_meta(raw_io=True, argmax=True).input_name,
            _meta(raw_io=True, argmax=True).output_name) == ("frames", "labels")


def test_foreign_and_future_artifacts_are_refused():
    with pytest.raises(ModelFormatError, match="not exported by fcn-edge"):
        ArtifactMeta.from_props({"producer": "someone else"})
    props = _meta().to_props() | {"format_version": "99"}
    with pytest.raises(ModelFormatError, match="format 99"):
        ArtifactMeta.from_props(props)
    props = _meta().to_props()
    del props["classes"]
    with pytest.raises(ModelFormatError, match="classes"):
        ArtifactMeta.from_props(props)


def test_inconsistent_metadata_is_refused():
    with pytest.raises(ModelFormatError, match="3 classes but 2 names"):
        _meta(classes=("a", "b"))
    with pytest.raises(ModelFormatError, match="precision"):
        _meta(precision="int4")


def test_parse_shapes_forms_and_errors():
    assert parse_shapes("256x256:512x512:1024x1024") == Shapes(
        (1, 256, 256), (1, 512, 512), (1, 1024, 1024))
    assert parse_shapes("1x64x64:4x128x128:8x256x256").max == (8, 256, 256)
    for bad in ("256x256", "a:b:c", "256x256:128x128:512x512", "0x0:1x1:2x2",
                "1x64x64:2x64x64:1x64x64"):
        with pytest.raises(InputError):
            parse_shapes(bad)


def test_shapes_cover_and_multiples():
    shapes = parse_shapes("32x32:64x64:128x256")
    assert shapes.covers(1, 100, 200) and not shapes.covers(1, 16, 64)
    assert not shapes.covers(2, 64, 64)
    shapes.check_multiple(32)
    with pytest.raises(InputError, match="multiple of 32"):
        parse_shapes("32x32:64x64:100x100").check_multiple(32)
    assert str(shapes) == "1x32x32:1x64x64:1x128x256"


def test_default_shapes_round_the_training_size_up_to_the_stride():
    shapes = default_shapes((100, 130))
    assert shapes.opt == (1, 128, 160) and shapes.min == (1, 32, 32)
    assert default_shapes(None).opt == (1, 512, 512)


# --- inputs and heads: typed, read once, written back as they were -------------------------
def test_old_format_props_load_typed_and_write_back_the_same():
    meta = ArtifactMeta.from_props(OLD_PROPS, "old.onnx")
    assert meta.inputs[1] == InputInfo("depth", "depth", 1, "NCHW", "float32",
                                       {"mean_m": 2.8, "std_m": 1.4, "invalid": 0.0})
    assert meta.heads[1] == HeadInfo("geometric", "labels_geometric", 2,
                                     ("horizontal", "vertical"), ((0, 0, 0), (200, 0, 0)),
                                     "int32", {})
    assert meta.modalities == ("rgb", "depth") and list(meta.tasks) == ["semantic", "geometric"]
    assert meta.input_tensors() == (("images", "NCHW", 3, "float32"),
                                    ("depth", "NCHW", 1, "float32"))
    assert meta.output_tensors() == (("labels_semantic", 3, "uint8"),
                                     ("labels_geometric", 2, "int32"))
    assert meta.to_props() == OLD_PROPS


def test_heads_written_before_their_own_labels_dtype_take_the_artifacts():
    heads = json.loads(OLD_PROPS["heads"])
    for head in heads:
        del head["labels_dtype"]
    props = OLD_PROPS | {"heads": json.dumps(heads), "labels_dtype": "int32"}
    meta = ArtifactMeta.from_props(props)
    assert [h.labels_dtype for h in meta.heads] == ["int32", "int32"]
    assert meta.output_tensors()[0] == ("labels_semantic", 3, "int32")


def _with_head(index: int, **changes) -> dict[str, str]:
    heads = json.loads(OLD_PROPS["heads"])
    heads[index].update(changes)
    return {"heads": json.dumps(heads)}


def _without_input_field(index: int, key: str) -> dict[str, str]:
    inputs = json.loads(OLD_PROPS["inputs"])
    del inputs[index][key]
    return {"inputs": json.dumps(inputs)}


@pytest.mark.parametrize("changes, field, reason", [
    (_with_head(1, palette=[[0, 0, 0], [200, 0]]), "heads[1].palette", "[r, g, b]"),
    (_with_head(0, num_classes="3"), "heads[0].num_classes", "integer"),
    (_with_head(1, classes=["horizontal"]), "heads[1]", "2 classes but 1 names"),
    (_without_input_field(1, "layout"), "inputs[1].layout", "is missing"),
    ({"inputs": '[{"name": "depth", "modality": "depth", "channels": 1, "layout": "NWHC", '
                '"dtype": "float32"}]'}, "inputs[0].layout", "NCHW, NHWC"),
    ({"heads": '{"task": "semantic"}'}, "heads", "must be a list"),
    ({"palette": "[[0, 0, 0], [128, 0, 0], [0, 128, 300]]"}, "palette", "0..255"),
    ({"raw_io": '"yes"'}, "raw_io", "true or false"),
    ({"mean": "[0.5, 0.5]"}, "mean", "three numbers"),
    ({"dataset": '{"spec": "synthetic", "image_size": [0, 64]}'}, "dataset.image_size",
     "positive integer"),
    ({"shapes": '{"min": [1, 64, 64], "opt": [1, 32, 32], "max": [1, 64, 64]}'}, "shapes",
     "min ≤ opt ≤ max"),
])
def test_a_malformed_field_is_one_line_naming_it_and_the_file(changes, field, reason):
    with pytest.raises(ModelFormatError) as caught:
        ArtifactMeta.from_props(OLD_PROPS | changes, "old.onnx")
    message = str(caught.value)
    assert message.startswith("old.onnx: metadata field ") and "\n" not in message
    assert repr(field) in message and reason in message
    assert message.endswith("export it again with `fcn-edge export`")


def test_fields_that_disagree_name_the_file():
    with pytest.raises(ModelFormatError, match="^old.onnx: 3 classes but 2 names"):
        ArtifactMeta.from_props(OLD_PROPS | {"classes": '["sky", "ground"]'}, "old.onnx")


def test_inputs_and_heads_are_typed_not_dicts():
    head = json.loads(OLD_PROPS["heads"])[0]
    with pytest.raises(TypeError, match="HeadInfo"):
        _meta(heads=(head,))
    with pytest.raises(TypeError, match="DatasetInfo"):
        _meta(dataset={"spec": "synthetic"})
    typed = ArtifactMeta.from_props(OLD_PROPS)
    assert _meta(heads=typed.heads, inputs=typed.inputs).output_names == (
        "labels_semantic", "labels_geometric")
