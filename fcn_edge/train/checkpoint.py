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
from typing import Any

from torch import nn

from ..config import TrainConfig
from ..errors import ModelFormatError
from ..io import atomic_path
from ..metrics import SegmentationMetrics
from ..models import save_checkpoint
from ..models.weights import read_weights


def deploy_meta(config: TrainConfig, dataset, metrics: SegmentationMetrics | None) -> dict:
    """What a deployed model needs to describe itself: classes, colours, preprocessing."""
    return {
        "classes": list(dataset.classes),
        "palette": [[int(c) for c in rgb] for rgb in dataset.palette[:dataset.num_classes]],
        "mean": list(config.mean), "std": list(config.std), "color_order": "rgb",
        "ignore_index": int(dataset.ignore_index),
        "dataset": {"spec": config.data, "layout": dataset.layout,
                    "image_size": _train_size(config),
                    **({"difficulty": config.difficulty} if config.data == "synthetic" else {})},
        "metrics": metrics.to_dict(list(dataset.classes)) if metrics is not None else None,
    }


def _train_size(config: TrainConfig) -> list[int] | None:
    """The input size the model saw in training (the exporter's optimal shape), if one."""
    size = config.crop or (config.image_size if config.data == "synthetic" else None)
    return list(size) if size else None


def save_training_checkpoint(path: Path, model: nn.Module, config: TrainConfig, dataset,
                             metrics: SegmentationMetrics | None, state: dict[str, Any]) -> Path:
    return save_checkpoint(model, path, deploy_meta(config, dataset, metrics),
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

