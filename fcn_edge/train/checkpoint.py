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
from ..models.checkpoint import CheckpointMeta, DatasetInfo, TaskMeta
from ..models.weights import read_weights
from .tasks import task_classes, task_palette


def deploy_meta(config: TrainConfig, dataset, metrics: SegmentationMetrics | None,
                task_metrics: Mapping[str, SegmentationMetrics] | None = None
                ) -> CheckpointMeta:
    """What a deployed model needs to describe itself: classes, colours, preprocessing.

    ``config`` is the trainer's (tasks resolved by ``configure_tasks``). The top-level classes,
    palette and ``metrics`` are the first head's — the primary task's; a multi-task model also
    gets ``tasks`` (task → classes, palette, metrics: the exporter's per-head metadata), a
    single task chosen from a multi-task set ``task``. ``inputs`` names the modalities.
    """
    tasks = config.tasks or ()
    first = tasks[0] if tasks else None
    classes = task_classes(dataset, first)
    heads = {}
    if len(tasks) >= 2:
        for task in tasks:
            names, scores = task_classes(dataset, task), (task_metrics or {}).get(task)
            heads[task] = TaskMeta(classes=tuple(names), palette=_palette(dataset, task),
                                   metrics=scores.to_dict(list(names)) if scores else None)
    return CheckpointMeta(
        classes=tuple(classes), palette=_palette(dataset, first), mean=tuple(config.mean),
        std=tuple(config.std), color_order="rgb", ignore_index=int(dataset.ignore_index),
        dataset=DatasetInfo(spec=config.data, layout=dataset.layout,
                            image_size=_train_size(config),
                            difficulty=config.difficulty
                            if config.data in SYNTHETIC_READERS else None),
        metrics=metrics.to_dict(list(classes)) if metrics is not None else None,
        inputs=tuple(config.model.input_names),
        task=first if len(tasks) == 1 else None, tasks=heads)


def _palette(dataset, task: str | None) -> tuple[tuple[int, int, int], ...]:
    return tuple(tuple(int(c) for c in rgb) for rgb in task_palette(dataset, task))


def _train_size(config: TrainConfig) -> tuple[int, int] | None:
    """The input size the model saw in training (the exporter's optimal shape), if one."""
    size = config.crop or (config.image_size if config.data in SYNTHETIC_READERS else None)
    return tuple(size) if size else None


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


def remove_unfinished_writes(out_dir: Path) -> list[Path]:
    """Remove what checkpoint writes that never finished left in ``out_dir`` (kill -9, a power
    cut: atomic_path's ``.last.pt.XXXX.tmp``). None is ever read as a checkpoint, but each is
    as large as one, and a preemptible job restarted many times would fill the disk."""
    stale = [path for name in ("last.pt", "best.pt") for path in out_dir.glob(f".{name}.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def copy_checkpoint(source: Path, target: Path) -> None:
    """Copy atomically: a crash mid-copy leaves the old ``target`` intact."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)

