"""A checkpoint's ``meta``: parsed and checked once (``CheckpointMeta``), today's checkpoints
and older ones with fields missing load, a malformed field is one line naming it and the file."""
from __future__ import annotations

import pytest
import torch

from fcn_edge.errors import ModelFormatError
from fcn_edge.models import create_model, load_model, save_checkpoint
from fcn_edge.models.checkpoint import (META_VERSION, CheckpointMeta, TaskMeta,
                                        checkpoint_header, checkpoint_meta)
from fcn_edge.runtime.metadata import DatasetInfo

#: A two-task checkpoint's ``meta`` exactly as the trainer wrote it before CheckpointMeta
#: (``train.checkpoint.deploy_meta``: plain lists, no version).
TODAY = {
    "classes": ["sky", "ground", "thing"],
    "palette": [[0, 0, 0], [128, 0, 0], [0, 128, 0]],
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "color_order": "rgb",
    "ignore_index": 255,
    "dataset": {"spec": "synthetic-twotask", "layout": "synthetic", "image_size": [32, 32],
                "difficulty": "standard"},
    "metrics": {"mean_iou": 0.5, "pixel_accuracy": 0.75},
    "inputs": ["rgb"],
    "tasks": {"semantic": {"classes": ["sky", "ground", "thing"],
                           "palette": [[0, 0, 0], [128, 0, 0], [0, 128, 0]],
                           "metrics": {"mean_iou": 0.5}},
              "geometric": {"classes": ["horizontal", "vertical"],
                            "palette": [[0, 0, 0], [200, 0, 0]], "metrics": None}},
}
FIX = "save the checkpoint again with a corrected meta"


def small_model():
    return create_model("fcn32s", 3, "alexnet", fc_channels=16)


def test_todays_meta_parses_typed_and_writes_back_the_same():
    meta = CheckpointMeta.from_dict(TODAY, "a.pt")
    assert meta.version == META_VERSION == 1
    assert meta.classes == ("sky", "ground", "thing") and meta.palette[1] == (128, 0, 0)
    assert meta.mean == (0.485, 0.456, 0.406) and meta.metrics["mean_iou"] == 0.5
    assert meta.dataset == DatasetInfo("synthetic-twotask", "synthetic", (32, 32), "standard")
    assert meta.inputs == ("rgb",) and meta.task is None
    assert meta.task_meta("geometric") == TaskMeta(("horizontal", "vertical"),
                                                   ((0, 0, 0), (200, 0, 0)), None)
    assert meta.task_meta("depth") == TaskMeta()
    assert meta.to_dict() == TODAY | {"version": 1}


def test_missing_optional_fields_take_the_old_fallbacks():
    meta = CheckpointMeta.from_dict({"classes": ["a", "b"], "mean": [0.5, 0.5, 0.5]}, "a.pt")
    assert meta.classes == ("a", "b") and meta.palette == ()
    assert meta.mean == (0.5, 0.5, 0.5) and meta.std == (0.229, 0.224, 0.225)  # ImageNet
    assert (meta.color_order, meta.ignore_index, meta.task) == ("rgb", 255, None)
    assert meta.dataset == DatasetInfo() and meta.dataset.image_size is None
    assert meta.metrics is None and meta.tasks == {} and meta.inputs == ()
    assert CheckpointMeta.from_dict({}, "a.pt") == CheckpointMeta()
    assert CheckpointMeta().mean == (0.485, 0.456, 0.406)
    # Unknown fields (a user's own) are left alone, as before.
    assert CheckpointMeta.from_dict({"class_names": ["x"]}, "a.pt") == CheckpointMeta()


def _with(key: str, value) -> dict:
    return {**TODAY, key: value}


@pytest.mark.parametrize("meta, field, reason", [
    (_with("palette", [[0, 0, 0], [128, 0]]), "palette", "[r, g, b]"),
    (_with("mean", [0.5, 0.5]), "mean", "three numbers"),
    (_with("classes", "sky"), "classes", "list of strings"),
    (_with("color_order", "rbg"), "color_order", "rgb, bgr"),
    (_with("ignore_index", 2.5), "ignore_index", "integer"),
    (_with("dataset", {"image_size": [32]}), "dataset.image_size", "[height, width]"),
    (_with("tasks", {"geometric": {"classes": [1, 2]}}), "tasks.geometric.classes", "strings"),
    (_with("tasks", {"geometric": ["horizontal"]}), "tasks.geometric", "an object"),
    (_with("metrics", 0.5), "metrics", "an object"),
])
def test_a_malformed_field_is_one_line_naming_it_and_the_file(meta, field, reason):
    with pytest.raises(ModelFormatError) as caught:
        CheckpointMeta.from_dict(meta, "a.pt")
    message = str(caught.value)
    assert message.startswith(f"a.pt: metadata field {field!r} ") and "\n" not in message
    assert reason in message and FIX in message


def test_a_meta_that_is_not_an_object_or_from_a_newer_fcn_edge_is_refused():
    with pytest.raises(ModelFormatError, match="^a.pt: the metadata must be an object"):
        CheckpointMeta.from_dict(["classes"], "a.pt")
    with pytest.raises(ModelFormatError, match=r"^a.pt has checkpoint meta version 2; this "
                                               r"fcn-edge reads version 1: use the fcn-edge"):
        CheckpointMeta.from_dict({**TODAY, "version": 2}, "a.pt")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_model_parses_the_meta_saved_today_and_typed(tmp_path, suffix):
    model = small_model()
    as_dict = load_model(save_checkpoint(model, tmp_path / f"dict{suffix}", TODAY))
    typed = CheckpointMeta.from_dict(TODAY)
    assert as_dict.meta == typed
    again = load_model(save_checkpoint(model, tmp_path / f"typed{suffix}", typed))
    assert again.meta == typed and checkpoint_meta(again) is again.meta


def test_load_model_refuses_a_malformed_meta_naming_the_file(tmp_path):
    """A checkpoint written around save_checkpoint's check: the load says what is wrong."""
    model, path = small_model(), tmp_path / "odd.pt"
    header = checkpoint_header(model, {**TODAY, "palette": "red"})
    torch.save({**header, "state_dict": model.state_dict()}, path)
    with pytest.raises(ModelFormatError, match=f"^{path}: metadata field 'palette' "):
        load_model(path)


def test_save_checkpoint_refuses_a_malformed_meta_before_writing(tmp_path):
    with pytest.raises(ModelFormatError, match="'dataset.image_size'"):
        save_checkpoint(small_model(), tmp_path / "bad.pt", {"dataset": {"image_size": "big"}})
    assert not (tmp_path / "bad.pt").exists()


def test_models_without_a_checkpoint_have_the_default_meta(tmp_path):
    model = small_model()
    assert checkpoint_meta(model) == CheckpointMeta()
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    assert load_model(bare).meta == CheckpointMeta()
    model.meta = {"classes": ["a", "b", "c"]}  # set by hand: read the same way
    assert checkpoint_meta(model).classes == ("a", "b", "c")
