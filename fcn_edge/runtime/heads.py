"""The outputs of an artifact as tasks (paper §5, SIFT Flow: one trunk, semantic + geometric
heads): which tensor carries each task, its classes and colours, and how a multi-head result
is taken apart. A one-task artifact has one head, task ``None``: its result stays one array.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Sequence, Union

import numpy as np

from ..errors import InputError
from .metadata import ArtifactMeta
from .processing import labels_dtype

#: What a Segmenter call returns: H×W labels, or task → H×W labels for several heads.
Labels = Union[np.ndarray, Dict[str, np.ndarray]]


@dataclass(frozen=True)
class Head:
    """One output: its task (None for a one-task model), tensor name, classes and colours."""

    task: str | None
    output: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]   # RGB, one per class

    @property
    def dtype(self) -> np.dtype:
        """The labels' dtype: uint8 up to 256 classes, else int32."""
        return labels_dtype(len(self.classes))


def heads_of(meta: ArtifactMeta) -> tuple[Head, ...]:
    """The artifact's heads in order (one, task None, for a one-task artifact)."""
    if not meta.heads:
        return (Head(None, meta.output_name, meta.classes, meta.palette),)
    return tuple(Head(h.task, h.output, h.classes, h.palette) for h in meta.heads)


def tasks_of(heads: Sequence[Head]) -> tuple[str, ...]:
    """The task names; () for a one-task artifact."""
    return tuple(h.task for h in heads if h.task is not None)


def find_head(heads: Sequence[Head], task: str | None, model: str) -> Head:
    """``task``'s head (None: the first); an InputError naming the tasks there are."""
    if task is None:
        return heads[0]
    for head in heads:
        if head.task == task:
            return head
    tasks = tasks_of(heads)
    raise InputError(f"{model} has no task {task!r}; "
                     + (f"its tasks are {', '.join(tasks)}" if tasks
                        else "it has one task: leave the task out"))


def pick(labels: Labels, head: Head) -> np.ndarray:
    """``head``'s labels from a result: the array itself, or its task's entry of a dict."""
    if isinstance(labels, Mapping):
        if head.task not in labels:
            raise InputError(f"no {head.task!r} in the labels given (they hold "
                             f"{', '.join(map(str, labels))})")
        return labels[head.task]
    return labels


def result_of(labels: Mapping[str, np.ndarray], heads: Sequence[Head], i: int) -> Labels:
    """Frame ``i``'s result from output name → N×H×W labels: one array for a one-task
    artifact, task → array for several heads."""
    if heads[0].task is None:
        return labels[heads[0].output][i]
    return {h.task: labels[h.output][i] for h in heads}
