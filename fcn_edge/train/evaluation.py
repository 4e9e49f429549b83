"""Evaluation with the paper's metrics (§5), shared by validation and ``fcn-edge eval``.

``evaluate_tasks`` scores a model — any number of heads (one matrix each, paper Table 5) and
of input modalities — and is what validation during training runs; ``evaluate_checkpoint_tasks``
is ``fcn-edge eval``: an :class:`~fcn_edge.config.EvalConfig` in, every head's metrics out
(``evaluate_checkpoint``: the first head's, from keyword arguments).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..config import EvalConfig
from ..data import write_palette_png
from ..errors import InputError
from ..metrics import ConfusionMatrix, SegmentationMetrics
from ..models import load_model
from .distributed import Context, sum_across_ranks
from .tasks import (data_tasks, keep_used, open_split, sample_input, sample_target,
                    task_classes, task_palette)


@torch.no_grad()
def evaluate_tasks(model: nn.Module, dataset, mean: Sequence[float], std: Sequence[float],
                   device: torch.device, ctx: Context | None = None, amp: bool = False,
                   task: str | None = None, predictions_dir: str | Path | None = None
                   ) -> dict[str, ConfusionMatrix]:
    """One confusion matrix per head (paper §5, Table 5 scores each SIFT Flow task apart).

    A multi-head model is scored on each of its tasks' labels, in head order; a one-head
    model on ``task``'s labels (None: the data's mask; the result is keyed by ``task`` or
    "semantic"). The input is the model's modalities (``config.inputs``: rgb, depth, hha),
    encoded as in training. Under DDP each rank scores every ``world``-th image and the
    matrices are summed, so every rank returns the metrics of the whole set.
    ``predictions_dir`` receives palette PNGs (a folder per task for several heads).
    """
    ctx = ctx or Context(device=device)
    config = getattr(model, "config", None)
    names = config.input_names if config is not None else ("rgb",)
    heads = tuple(t for t, _ in config.heads) if config is not None and config.heads else None
    keys = heads or (task or "semantic",)
    cms = {k: ConfusionMatrix(len(task_classes(dataset, k if heads else task)),
                              dataset.ignore_index) for k in keys}
    was_training = model.training
    model.eval()
    for index in range(ctx.rank, len(dataset), ctx.world):
        sample = keep_used(dataset[index], names, heads or ((task,) if task else None), dataset)
        x = torch.from_numpy(sample_input(sample, names, mean, std))[None].to(device)
        with torch.autocast(device.type, dtype=torch.float16,
                            enabled=amp and device.type == "cuda"):
            scores = model(x)
        scores = scores if isinstance(scores, dict) else {keys[0]: scores}
        target = sample_target(sample, heads)
        for k, key in enumerate(keys):
            labels = scores[key].argmax(1)[0].to(torch.uint8).cpu().numpy()
            cms[key].update(labels, target[k] if heads else target)
            if predictions_dir is not None:
                folder = Path(predictions_dir) / (key if heads else "")
                write_palette_png(folder / f"{sample.name}.png", labels,
                                  task_palette(dataset, key if heads else task))
    model.train(was_training)
    for cm in cms.values():
        cm.matrix = sum_across_ranks(cm.matrix, ctx)
    return cms


def evaluate_checkpoint(checkpoint: str | Path, data: str = "synthetic", **options: Any
                        ) -> tuple[SegmentationMetrics, list[str]]:
    """(metrics, class names) of a checkpoint's first (primary) head on ``data``; ``options``
    are :class:`EvalConfig`'s other fields (``split``, ``num_images``, ``seed``, ``device`` …).
    ``evaluate_checkpoint_tasks`` gives every head's."""
    results = evaluate_checkpoint_tasks(EvalConfig(checkpoint, data, **options))
    return next(iter(results.values()))


def evaluate_checkpoint_tasks(config: EvalConfig
                              ) -> dict[str, tuple[SegmentationMetrics, list[str]]]:
    """Score ``config.checkpoint`` per task: {task: (metrics, class names)}, in head order (one
    entry for a single-task model).

    Procedural data is regenerated as :class:`EvalConfig` says (the training run's scenes
    when seed and sizes match; 256×256 when the checkpoint records no training size). An
    NYUDv2 folder is read with the modality the checkpoint's inputs need.
    """
    path, image_size = config.checkpoint, config.image_size
    model = load_model(path)
    meta = model.meta  # a CheckpointMeta, parsed by load_model
    trained = meta.dataset
    if image_size is None:
        image_size = trained.image_size or (256, 256)
    dataset = open_split(config.data, config.split, config.data_layout,
                         model.config.input_names, num_images=config.num_images,
                         size=image_size, seed=config.seed,
                         difficulty=config.difficulty or trained.difficulty or "standard")
    task = meta.task
    _check_outputs(path, model.config, dataset, task, trained.spec)
    device = config.device
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model.to(dev)
    cms = evaluate_tasks(model, dataset, meta.mean, meta.std, dev, task=task,
                         predictions_dir=config.predictions_dir)
    out = {}
    for i, (key, cm) in enumerate(cms.items()):
        classes = meta.task_meta(key).classes or \
            (meta.classes if i == 0 else None) or \
            task_classes(dataset, key if model.config.heads else task)
        out[key] = (cm.compute(), list(classes))
    return out


def _check_outputs(path, config, dataset, task: str | None, trained_on: str | None) -> None:
    """Every head's class count must be the data's for that task."""
    hint = f"; it was trained on --data {trained_on}" if trained_on else ""
    if config.heads and not data_tasks(dataset):
        raise InputError(f"{path} has heads {', '.join(t for t, _ in config.heads)} but the "
                         f"data has one labelling{hint}")
    for name, count in config.heads or ((task, config.num_classes),):
        classes = task_classes(dataset, name)
        if len(classes) != count:
            raise InputError(f"{path} predicts {count} classes but the data has "
                             f"{len(classes)} ({', '.join(classes[:5])}, …)"
                             + (f" for task {name!r}" if name else ""))
