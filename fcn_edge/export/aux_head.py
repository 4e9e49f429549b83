"""``fcn-edge export --aux``: a published architecture exported with its auxiliary head.

torchvision's FCNs (and jetson-inference's trainer, with ``--aux-loss``) carry a second head on
``layer3``. Exports leave it out unless asked; asked, the artifact has two heads named as
torchvision names its outputs, ``out`` and ``aux``, each with the model's classes, through the
multi-head path the paper's §5 nets use (one output per head, ``Segmenter`` returns a dict,
``fcn-edge run --head out``): the model config gains the two heads and the model answers both.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from ..errors import InputError
from ..models.checkpoint import TaskMeta, checkpoint_meta
from ..models.registry import find_architecture

#: The two heads, as torchvision's model names its outputs.
AUX_TASKS = ("out", "aux")


def with_aux_head(model: nn.Module) -> nn.Module:
    """``model`` answering ``{"out", "aux"}``, its config and meta describing both heads; a
    model without an aux head is one InputError naming what to do."""
    config = model.config
    if find_architecture(config.name) is None:
        raise InputError(f"--aux exports the auxiliary head of torchvision's and "
                         f"jetson-inference's FCNs; {config.name} has none: leave --aux out")
    if not config.aux:
        raise InputError(f"--aux: this {config.name} file holds no aux head (aux_classifier.*; "
                         f"jetson-inference's trainer saves one only with --aux-loss): leave "
                         f"--aux out")
    n = config.num_classes
    meta = checkpoint_meta(model)
    head = TaskMeta(classes=meta.classes, palette=meta.palette, metrics=meta.metrics)
    model.config = dataclasses.replace(config, heads=tuple((task, n) for task in AUX_TASKS))
    model.meta = dataclasses.replace(meta, tasks={task: head for task in AUX_TASKS})
    model.outputs_aux = True
    return model
