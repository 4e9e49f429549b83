"""Training checkpoints: a deployable model checkpoint plus the state to resume exactly.

The model part is ``fcn_edge.models.save_checkpoint``'s format (config, weights, ``meta`` with
classes, palette, normalisation, metrics) so that ``load_model``, ``fcn-edge eval`` and the
exporter read a training checkpoint like any other. ``train_config`` and ``train_state``
(optimizer, schedule, epoch, RNG states, history) ride along; everything is plain data and
tensors, loadable with ``weights_only=True``.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..config import TrainConfig
from ..data import SYNTHETIC_READERS
from ..errors import ModelFormatError
from ..io import atomic_path
from ..metrics import SegmentationMetrics
from ..models import save_checkpoint
from ..models.weights import read_weights
from .tasks import task_classes, task_palette


def deploy_meta(config: TrainConfig, dataset, metrics: SegmentationMetrics | None,
                task_metrics: Mapping[str, SegmentationMetrics] | None = None) -> dict:
    """What a deployed model needs to describe itself: classes, colours, preprocessing.

    ``config`` is the trainer's (tasks resolved by ``configure_tasks``). The top-level classes,
    palette and ``metrics`` are the first head's — the primary task's; a multi-task model also
    gets ``tasks`` (task → classes, palette, metrics: the exporter's per-head metadata), a
    single task chosen from a multi-task set ``task``. ``inputs`` names the modalities.
    """
    tasks = config.tasks or ()
    first = tasks[0] if tasks else None
    classes = list(task_classes(dataset, first))
    meta = {
        "classes": classes,
        "palette": _palette(dataset, first),
        "mean": list(config.mean), "std": list(config.std), "color_order": "rgb",
        "ignore_index": int(dataset.ignore_index),
        "dataset": {"spec": config.data, "layout": dataset.layout,
                    "image_size": _train_size(config),
                    **({"difficulty": config.difficulty}
                       if config.data in SYNTHETIC_READERS else {})},
        "metrics": metrics.to_dict(classes) if metrics is not None else None,
        "inputs": list(config.model.input_names),
    }
    if len(tasks) == 1:
        meta["task"] = first
    if len(tasks) >= 2:
        meta["tasks"] = {}
        for task in tasks:
            names, scores = list(task_classes(dataset, task)), (task_metrics or {}).get(task)
            meta["tasks"][task] = {"classes": names, "palette": _palette(dataset, task),
                                   "metrics": scores.to_dict(names) if scores else None}
    return meta


def _palette(dataset, task: str | None) -> list[list[int]]:
    return [[int(c) for c in rgb] for rgb in task_palette(dataset, task)]


def _train_size(config: TrainConfig) -> list[int] | None:
    """The input size the model saw in training (the exporter's optimal shape), if one."""
    size = config.crop or (config.image_size if config.data in SYNTHETIC_READERS else None)
    return list(size) if size else None


def save_training_checkpoint(path: Path, model: nn.Module, config: TrainConfig, dataset,
                             metrics: SegmentationMetrics | None, state: dict[str, Any],
                             task_metrics: Mapping[str, SegmentationMetrics] | None = None
                             ) -> Path:
    return save_checkpoint(model, path, deploy_meta(config, dataset, metrics, task_metrics),
                           train_config=config.to_dict(), train_state=state)


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The resumable state of a training checkpoint written by ``save_training_checkpoint``."""
    weights = read_weights(path)
    ckpt = weights.checkpoint
    if ckpt is None or "train_state" not in ckpt or "train_config" not in ckpt:
        raise ModelFormatError(f"{path} is not a training checkpoint (no optimizer state): "
                               f"--resume takes a last.pt written by fcn-edge train; to start "
                               f"from its weights use --init-from")
    return {**ckpt["train_state"], "train_config": ckpt["train_config"],
            "state_dict": weights.state_dict}


def copy_checkpoint(source: Path, target: Path) -> None:
    """Copy atomically: a crash mid-copy leaves the old ``target`` intact."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)

