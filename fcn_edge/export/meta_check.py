"""An artifact's written metadata held to the checkpoint, field by field, before it is written.

Parity (``parity.py``) proves the graph computes what the model computes when it is fed as the
metadata says. This proves the metadata says what training did: every expected value comes
from the checkpoint's meta (``model.meta``: classes, palette, mean/std, colour order) and the
model's config (classes, heads, inputs in channel order), never from the code that wrote the
metadata, and the metadata is read back from the ONNX model as a runtime will read it. A bug
in the writer (mean and std swapped, the colour order reversed, a class dropped, an extra
modality out of order) fails the export with one line naming the field, instead of passing
parity on both sides at once and reaching a deployment.
"""
from __future__ import annotations

from typing import Any, Iterator

import onnx
from torch import nn

from ..errors import ModelFormatError
from ..models.checkpoint import CheckpointMeta, checkpoint_meta
from ..runtime.metadata import ArtifactMeta, input_tensor_name, output_tensor_name
from ..runtime.modalities import get_modality
from .onnx_props import get_metadata

#: One expected value: (field, what is written, what it must be, where that comes from).
Expectation = tuple[str, Any, Any, str]


def written_meta(onnx_model: onnx.ModelProto, precision: str) -> ArtifactMeta:
    """The metadata of ``onnx_model`` as a runtime reads it from the file."""
    return ArtifactMeta.from_props(get_metadata(onnx_model), f"the {precision} artifact")


def check_written_meta(onnx_model: onnx.ModelProto, model: nn.Module,
                       precision: str) -> ArtifactMeta:
    """Read the metadata back from ``onnx_model`` and hold every field to ``model``'s
    checkpoint and config and to the graph's own tensors; a ModelFormatError names the first
    field that differs. Returns the metadata read."""
    meta = written_meta(onnx_model, precision)
    graph = ([i.name for i in onnx_model.graph.input], [o.name for o in onnx_model.graph.output])
    for field, written, expected, source in _expectations(meta, model, graph, precision):
        if written != expected:
            raise ModelFormatError(
                f"the {precision} artifact's metadata field '{field}' is {written!r} but "
                f"{source} says {expected!r}: fcn-edge wrote it wrong (please report this "
                f"bug); nothing was written")
    return meta


def _expectations(meta: ArtifactMeta, model: nn.Module, graph: tuple[list, list],
                  precision: str) -> Iterator[Expectation]:
    trained, config = checkpoint_meta(model), model.config
    ckpt, cfg = "the checkpoint", "the checkpoint's model config"
    yield "precision", meta.precision, precision, "the export"
    yield "model", meta.model, config.name, cfg
    yield "backbone", meta.backbone, config.backbone, cfg
    yield "output_stride", meta.output_stride, config.output_stride, cfg
    yield "num_classes", meta.num_classes, config.num_classes, cfg
    yield from _named_classes("", meta.classes, meta.palette, trained.classes, trained.palette)
    yield "mean", tuple(meta.mean), tuple(trained.mean), ckpt
    yield "std", tuple(meta.std), tuple(trained.std), ckpt
    yield "color_order", meta.color_order, trained.color_order, ckpt
    yield "ignore_index", meta.ignore_index, trained.ignore_index, ckpt
    yield "inputs", _inputs(meta), _expected_inputs(config, trained, meta.raw_io), cfg
    yield "heads", _heads(meta), tuple((task, n, output_tensor_name(task, meta.argmax))
                                       for task, n in config.heads), cfg
    for head in meta.heads:
        info = trained.task_meta(head.task)
        yield from _named_classes(f"heads[{head.task}].", head.classes, head.palette,
                                  info.classes, info.palette)
    yield "inputs", list(meta.input_names), graph[0], "the graph"
    yield "heads", list(meta.output_names), graph[1], "the graph"


def _named_classes(prefix: str, classes, palette, trained_classes, trained_palette
                   ) -> Iterator[Expectation]:
    """Class names and colours, where the checkpoint records them (a bare state dict does
    not: the exporter then names and colours them itself)."""
    if trained_classes:
        yield prefix + "classes", tuple(classes), tuple(trained_classes), "the checkpoint"
    if trained_palette:
        n = len(classes)
        yield (prefix + "palette", tuple(map(tuple, palette[:n])),
               tuple(map(tuple, trained_palette[:n])), "the checkpoint")


def _inputs(meta: ArtifactMeta) -> tuple:
    """Each input's modality, channels, tensor and (extra modalities) encoding, in order."""
    return tuple((i.modality, i.channels, i.name,
                  None if i.modality == "rgb" else i.encoding) for i in meta.inputs)


def _expected_inputs(config, trained: CheckpointMeta, raw_io: bool) -> tuple:
    """What ``_inputs`` must be: none for an RGB model, else the config's inputs in channel
    order (the checkpoint's own list of them must agree), encoded as the registry says."""
    modalities = tuple(m for m, _ in config.inputs)
    if trained.inputs and tuple(trained.inputs) != modalities:
        raise ModelFormatError(f"the checkpoint's meta lists inputs {list(trained.inputs)} but "
                               f"its model takes {list(modalities)}: save it again with the "
                               f"inputs in the model's channel order")
    if modalities == ("rgb",):
        return ()
    return tuple((m, c, input_tensor_name(m, raw_io),
                  None if m == "rgb" else get_modality(m).encoding or None)
                 for m, c in config.inputs)


def _heads(meta: ArtifactMeta) -> tuple:
    return tuple((h.task, h.num_classes, h.output) for h in meta.heads)
