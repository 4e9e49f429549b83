"""The artifact metadata schema: round trips, validation, and refusals that say what to do."""
from __future__ import annotations

import json

import pytest

from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.runtime.metadata import (FORMAT, ArtifactMeta, Shapes, default_shapes,
                                       parse_shapes)


def _meta(**changes) -> ArtifactMeta:
    base = dict(model="fcn8s", backbone="resnet18", num_classes=3, classes=("bg", "a", "b"),
                palette=((0, 0, 0), (128, 0, 0), (0, 128, 0)), mean=(0.5, 0.5, 0.5),
                std=(0.25, 0.25, 0.25))
    return ArtifactMeta(**{**base, **changes})


def test_props_round_trip_every_field():
    meta = _meta(raw_io=True, argmax=True, precision="fp16", source_sha256="0123",
                 fcn_edge_version="1.2", shapes=parse_shapes("1x32x32:2x64x96:4x128x256"),
                 parity={"sizes": [{"height": 5, "agreement": 1.0}]}, metrics={"mean_iou": 0.7})
    props = meta.to_props()
    assert all(isinstance(v, str) for v in props.values())
    assert props["format"] == FORMAT and json.loads(props["classes"]) == ["bg", "a", "b"]
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
