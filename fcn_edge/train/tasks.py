"""What a run trains on (paper §5): which tasks get a head, which modalities go in.

The paper's §5 nets differ from the PASCAL one only in what goes in and what comes out:

* SIFT Flow: one trunk, one head per labelling (semantic and geometric), the loss summed over
  the heads. A data set with ``tasks`` (task → class names) and a ``primary_task`` is
  multi-task; ``select_tasks`` picks the heads, the primary one first, so that the first
  head's metrics (which choose ``best.pt``) are the primary task's.
* NYUDv2: RGB with depth or HHA, stacked along channels (early fusion) or given to one stream
  each (late fusion). ``sample_input`` encodes a sample's modalities with the runtime's own
  ``stack_inputs``, so training, evaluation and deployment encode depth alike.

Single-task RGB data goes through the same functions unchanged: ``normalize`` for the image,
``mask`` for the labels.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from ..config import TrainConfig
from ..data import SYNTHETIC_READERS, detect_layout, normalize, open_dataset
from ..data.classes import voc_palette
from ..data.nyud import with_hha
from ..errors import InputError
from ..runtime.modalities import stack_inputs

#: Where each extra modality can come from, for the error when a data set lacks one.
MODALITY_SOURCES = {
    "depth": "--data synthetic-rgbd, or an NYUDv2 folder (modality rgbd)",
    "hha": "an NYUDv2 folder (modality hha or rgb+hha), or any data with depth (--data "
           "synthetic-rgbd): HHA is then computed from the depth",
}


def data_tasks(dataset) -> dict[str, tuple[str, ...]]:
    """task → class names of a multi-task data set; empty for a data set with one labelling."""
    return {task: tuple(names) for task, names in (getattr(dataset, "tasks", None) or {}).items()}


def select_tasks(dataset, wanted: Sequence[str] | None,
                 weights: Sequence[float] | None) -> tuple[tuple[str, ...] | None,
                                                           tuple[float, ...] | None]:
    """The tasks a run trains and their loss weights, the primary task first.

    ``wanted=None`` takes every task of a multi-task data set; ``weights`` pair with
    ``wanted`` in its order (with the data's order, primary first, when ``wanted`` is None) and
    are reordered with it. A data set with one labelling gives ``(None, weights)``.
    """
    tasks = data_tasks(dataset)
    if not tasks:
        if wanted:
            raise InputError(f"tasks {', '.join(wanted)} were asked for but {_name(dataset)} "
                             f"has one labelling; multi-task data: --data synthetic-twotask "
                             f"or a SIFT Flow folder")
        if weights is not None and len(weights) != 1:
            raise InputError(f"task_weights has {len(weights)} values but {_name(dataset)} "
                             f"has one task: give one weight or none")
        return None, None if weights is None else tuple(float(w) for w in weights)
    primary = getattr(dataset, "primary_task", None)
    names = list(wanted) if wanted is not None else _primary_first(list(tasks), primary)
    unknown = [t for t in names if t not in tasks]
    if unknown:
        raise InputError(f"{_name(dataset)} has no task {', '.join(unknown)}; its tasks: "
                         f"{', '.join(tasks)}")
    if weights is not None and len(weights) != len(names):
        raise InputError(f"task_weights has {len(weights)} values for the {len(names)} tasks "
                         f"{', '.join(names)}: give one weight per task, in the same order")
    pairs = dict(zip(names, [float(w) for w in weights] if weights is not None else
                     [1.0] * len(names)))
    ordered = tuple(_primary_first(names, primary))
    return ordered, None if weights is None else tuple(pairs[t] for t in ordered)


def configure_tasks(config: TrainConfig, dataset) -> TrainConfig:
    """``config`` with its tasks resolved (``select_tasks``) and the model's outputs set from
    the data: one head per task for two or more tasks, else ``num_classes`` of the one task."""
    tasks, weights = select_tasks(dataset, config.tasks, config.task_weights)
    if tasks is not None and len(tasks) >= 2:
        heads = tuple((t, len(data_tasks(dataset)[t])) for t in tasks)
        model = replace(config.model, heads=heads, num_classes=heads[0][1])
    else:
        task = tasks[0] if tasks else None
        model = replace(config.model, heads=(), num_classes=len(task_classes(dataset, task)))
    return replace(config, model=model, tasks=tasks, task_weights=weights)


def task_classes(dataset, task: str | None) -> tuple[str, ...]:
    """The class names of ``task`` (None: the data's own labels, ``dataset.classes``)."""
    tasks = data_tasks(dataset)
    if task is None or not tasks:
        return tuple(dataset.classes)
    if task not in tasks:
        raise InputError(f"{_name(dataset)} has no task {task!r}; its tasks: {', '.join(tasks)}")
    return tasks[task]


def task_palette(dataset, task: str | None) -> np.ndarray:
    """n×3 uint8 colours of ``task``'s classes: the data set's ``palettes[task]`` if it has
    one, its ``palette`` for the primary task (or a one-labelling set), else VOC's colours."""
    n = len(task_classes(dataset, task))
    palettes = getattr(dataset, "palettes", None) or {}
    if task in palettes:
        return np.asarray(palettes[task], np.uint8)[:n]
    if task is None or not data_tasks(dataset) or task == getattr(dataset, "primary_task", None):
        return np.asarray(dataset.palette, np.uint8)[:n]
    return voc_palette(n)


def task_mask(sample, task: str | None) -> np.ndarray:
    """H×W labels of ``task`` in ``sample`` (None: ``sample.mask``)."""
    if task is None:
        return sample.mask
    if not sample.masks or task not in sample.masks:
        raise InputError(f"sample {sample.name} has no {task!r} labels (it has "
                         f"{', '.join(sample.masks or {}) or 'only its mask'})")
    return sample.masks[task]


def sample_target(sample, tasks: Sequence[str] | None) -> np.ndarray:
    """uint8 labels of a sample passed through ``keep_used``: H×W for one task, K×H×W (head
    order) for K ≥ 2 tasks."""
    if not tasks or len(tasks) == 1:
        return sample.mask
    return np.stack([sample.masks[t] for t in tasks])


def sample_input(sample, names: Sequence[str], mean: Sequence[float],
                 std: Sequence[float]) -> np.ndarray:
    """C×H×W float32 network input: the model's modalities ``names`` in channel order (the
    rgb image as ``data.normalize`` makes it, depth and HHA as the runtime encodes them)."""
    if tuple(names) == ("rgb",):
        return normalize(sample.image, mean, std)
    arrays = {"rgb": sample.image, **(with_hha(sample, names).inputs or {})}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise missing_modality(names, missing, f"sample {sample.name}")
    return stack_inputs(arrays, names, mean, std, frame_order="rgb")[0]


def keep_used(sample, names: Sequence[str], tasks: Sequence[str] | None, dataset=None):
    """``sample`` with only the inputs and task masks a run uses (so augmentation moves no
    array for nothing); a needed modality it lacks is an error naming where to get it."""
    extra = [n for n in names if n != "rgb"]
    sample = with_hha(sample, names)
    missing = [n for n in extra if n not in (sample.inputs or {})]
    if missing:
        where = f"sample {sample.name}" + (f" of {_name(dataset)}" if dataset is not None else "")
        raise missing_modality(names, missing, where)
    masks = {t: task_mask(sample, t) for t in tasks} if tasks and len(tasks) > 1 else None
    if tasks and len(tasks) == 1:  # one task of several: its labels become the mask
        return sample._replace(mask=task_mask(sample, tasks[0]), masks=None,
                               inputs={n: sample.inputs[n] for n in extra} or None)
    return sample._replace(inputs={n: sample.inputs[n] for n in extra} or None, masks=masks)


def missing_modality(names: Sequence[str], missing: Sequence[str], where: str) -> InputError:
    sources = "; ".join(f"{m} comes with {MODALITY_SOURCES.get(m, 'no known data set')}"
                        for m in missing)
    return InputError(f"the model takes {' + '.join(names)} but {where} has no "
                      f"{', '.join(missing)}: {sources}")


def check_modalities(dataset, names: Sequence[str]) -> None:
    """Fail before training, not in a loader worker, when the data lacks a model input."""
    if tuple(names) != ("rgb",) and len(dataset):
        keep_used(dataset[0], names, None, dataset)


def open_split(spec: str, split: str, layout: str | None, inputs: Sequence[str],
               **synthetic: Any):
    """``open_dataset`` with what ``spec`` takes: a procedural set ("synthetic",
    "synthetic-rgbd", "synthetic-twotask") the ``synthetic`` options (num_images, size, seed,
    difficulty); an NYUDv2 folder the modality the model's ``inputs`` need."""
    if str(spec) in SYNTHETIC_READERS and layout in (None, str(spec)):
        return open_dataset(str(spec), split, **synthetic)
    layout = layout or detect_layout(spec)
    options = {"modality": nyud_modality(inputs)} if layout == "nyud" else {}
    return open_dataset(spec, split, layout, **options)


def nyud_modality(inputs: Sequence[str]) -> str:
    """The NYUDv2 reader's ``modality`` that provides ``inputs`` (it reads one extra at a time)."""
    extra = [n for n in inputs if n != "rgb"]
    if not extra:
        return "rgb"
    if extra == ["depth"]:
        return "rgbd"
    if extra == ["hha"]:
        return "rgb+hha" if "rgb" in inputs else "hha"
    raise InputError(f"the NYUDv2 reader gives depth or HHA, not both; choose inputs rgb,depth "
                     f"or rgb,hha (got {','.join(inputs)})")


def _primary_first(names: list[str], primary: str | None) -> list[str]:
    return ([primary] if primary in names else []) + [n for n in names if n != primary]


def _name(dataset) -> str:
    return f"the data set '{getattr(dataset, 'layout', '') or type(dataset).__name__}'"
