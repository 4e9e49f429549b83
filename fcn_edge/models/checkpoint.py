"""fcn-edge checkpoints: weights plus everything needed to rebuild and deploy the model.

A checkpoint is a dict of plain data and tensors — loadable with ``weights_only=True`` — or a
``.safetensors`` file whose metadata holds the same header as JSON. Writes are atomic.

Its ``meta`` (class names, palette, normalisation, what it was trained on, validation metrics)
is read once, by ``CheckpointMeta.from_dict`` when ``load_model`` loads the file: that one
parser checks every field and fills in what older checkpoints lack, and everything after it
reads typed attributes. ``CheckpointMeta`` lives here, with the models, and not in
``runtime/metadata.py`` next to ``ArtifactMeta``: only the models side reads a checkpoint's
meta (``load_model``, evaluation, the exporter's ``artifact_meta``). The runtime's torch
backend never reads it — it runs a checkpoint through the model code and describes it with the
``ArtifactMeta`` an export of it would carry — so the deployed runtime need not know the
training side's schema. What the two share comes from the runtime: the field checks
(``runtime/fields.py``: one way to read self-describing metadata, for artifacts and checkpoints
alike) and ``DatasetInfo``, which a checkpoint records and its artifacts carry on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .. import __version__
from ..errors import InputError, ModelFormatError
from ..io import atomic_path
from ..runtime.fields import FieldReader, integer, names, obj, one_of, palette, text, \
    three_floats
from ..runtime.metadata import DatasetInfo
from ..runtime.processing import IMAGENET_MEAN, IMAGENET_STD
from .weights import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, WeightsFile

#: The version of ``meta``'s fields, bumped when they change incompatibly. Checkpoints
#: written before it was recorded are version 1.
META_VERSION = 1
#: What to do about a malformed ``meta``.
_FIX = "save the checkpoint again with a corrected meta (CheckpointMeta, docs/python-api.md)"

Colours = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class TaskMeta:
    """One head of a multi-task model (paper §5): its classes, colours and metrics."""

    classes: tuple[str, ...] = ()
    palette: Colours = ()
    metrics: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "palette": [list(c) for c in self.palette],
                "metrics": self.metrics}

    @classmethod
    def read(cls, read: FieldReader) -> "TaskMeta":
        return cls(classes=read("classes", names, ()), palette=read("palette", palette, ()),
                   metrics=read("metrics", obj, None))


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's ``meta``: what a deployed model needs to describe itself.

    Empty ``classes``/``palette`` mean "not recorded" (a bare state dict): the exporter names
    the classes ``class_0`` … and colours them with the VOC palette. The top-level classes,
    palette and metrics are the first head's; ``tasks`` describes every head of a multi-task
    model, ``task`` the one task a single-head model was trained for on multi-task data.
    """

    classes: tuple[str, ...] = ()
    palette: Colours = ()
    mean: tuple[float, float, float] = IMAGENET_MEAN   # what the backbones were trained with
    std: tuple[float, float, float] = IMAGENET_STD
    color_order: str = "rgb"
    ignore_index: int = 255
    dataset: DatasetInfo = field(default_factory=DatasetInfo)
    metrics: dict | None = None          # SegmentationMetrics.to_dict of the validation
    inputs: tuple[str, ...] = ()         # the input modalities, in channel order
    task: str | None = None
    tasks: dict[str, TaskMeta] = field(default_factory=dict)
    version: int = META_VERSION

    def task_meta(self, task: str | None) -> TaskMeta:
        """``task``'s head description (an empty one when the checkpoint has none)."""
        return self.tasks.get(task) or TaskMeta()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``weights_only``-loadable, JSON for safetensors)."""
        data = {"version": self.version, "classes": list(self.classes),
                "palette": [list(c) for c in self.palette], "mean": list(self.mean),
                "std": list(self.std), "color_order": self.color_order,
                "ignore_index": self.ignore_index, "dataset": self.dataset.to_json(),
                "metrics": self.metrics, "inputs": list(self.inputs)}
        if self.task is not None:
            data["task"] = self.task
        if self.tasks:
            data["tasks"] = {task: info.to_dict() for task, info in self.tasks.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "the checkpoint"
                  ) -> "CheckpointMeta":
        """Parse and check a checkpoint's ``meta``; what a field lacks takes its default,
        unknown fields are ignored, a malformed one is a ModelFormatError naming it."""
        read = FieldReader(data, source, _FIX)
        version = read("version", integer, 1)
        if version != META_VERSION:
            raise ModelFormatError(f"{source} has checkpoint meta version {version}; this "
                                   f"fcn-edge reads version {META_VERSION}: use the fcn-edge "
                                   f"that wrote it, or retrain")
        default = cls()
        tasks = read.nested("tasks")
        return cls(
            classes=read("classes", names, ()), palette=read("palette", palette, ()),
            mean=read("mean", three_floats, default.mean),
            std=read("std", three_floats, default.std),
            color_order=read("color_order", one_of("rgb", "bgr"), default.color_order),
            ignore_index=read("ignore_index", integer, default.ignore_index),
            dataset=DatasetInfo.read(read.nested("dataset")),
            metrics=read("metrics", obj, None), inputs=read("inputs", names, ()),
            task=read("task", text, None),
            tasks={task: TaskMeta.read(tasks.nested(task)) for task in tasks.data})


def read_meta(weights: WeightsFile) -> CheckpointMeta:
    """The parsed ``meta`` of a weights file (the defaults for a bare state dict)."""
    if weights.checkpoint is None:
        return CheckpointMeta()
    return CheckpointMeta.from_dict(weights.checkpoint.get("meta") or {}, str(weights.path))


def checkpoint_meta(model: nn.Module) -> CheckpointMeta:
    """``model.meta`` as ``load_model`` set it; the defaults for a model built in code."""
    meta = getattr(model, "meta", None)
    if meta is None:
        return CheckpointMeta()
    if isinstance(meta, CheckpointMeta):
        return meta
    return CheckpointMeta.from_dict(meta, "model.meta")  # a dict set by hand


def checkpoint_header(model: nn.Module, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plain-data part of a checkpoint: format, versions, model config and ``meta``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "fcn_edge_version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-safe
        "model_config": model.config.to_dict(),
        "meta": dict(meta or {}),
    }


def save_checkpoint(model: nn.Module, path: str | Path,
                    meta: CheckpointMeta | Mapping[str, Any] | None = None,
                    **extra: Any) -> Path:
    """Write ``model`` (and ``meta``: class names, palette, normalisation …) atomically.

    ``meta`` is a ``CheckpointMeta`` or a mapping of its fields, checked here (so that a
    checkpoint that saves also loads) and stored as given. ``extra`` entries (optimizer
    state, epoch …) go into a ``.pt`` checkpoint as they are; safetensors holds tensors only,
    so they are refused there.
    """
    path = Path(path)
    if isinstance(meta, CheckpointMeta):
        meta = meta.to_dict()
    CheckpointMeta.from_dict(meta or {}, f"the meta for {path}")
    header = checkpoint_header(model, meta)
    clash = sorted(set(extra) & (set(header) | {"state_dict"}))
    if clash:
        raise InputError(f"extra checkpoint entries {clash} would overwrite the header; rename them")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            if extra:
                raise InputError(f"safetensors checkpoints hold weights only; drop {sorted(extra)}"
                                 f" or save to a .pt path")
            from safetensors.torch import save_file
            save_file(state, str(tmp), metadata={"format": CHECKPOINT_FORMAT,
                                                 "fcn_edge": json.dumps(header)})
        else:
            torch.save({**header, **extra, "state_dict": state}, tmp)
    return path
