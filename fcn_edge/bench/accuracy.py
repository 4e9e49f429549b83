"""Accuracy of an artifact against the truth and against the PyTorch fp32 reference.

Every artifact is run the way an application runs it: frames (uint8, BGR as OpenCV gives them)
through :class:`~fcn_edge.runtime.Segmenter`, which does the same numpy pre- and
post-processing for every backend. So a ΔmIoU here is the whole deployed path's, not only the
graph's. The figures (paper §5):

* ``mean_iou`` against the ground truth, for the artifact and for the reference;
* ``delta_miou`` = artifact − reference, in points (×100), negative when the artifact is worse:
  the thresholds in ``tests/regression`` are one-sided, as mmdeploy's regression checks are;
* ``agreement``: the share of labelled pixels where the artifact's label equals the reference's.

numpy and OpenCV only (through ``fcn_edge.data``), like the runtime.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..data import open_dataset
from ..errors import InputError
# Threshold and THRESHOLDS live in metrics (the TensorRT build's gate reads them, and export may
# not import bench); they stay importable from here.
from ..metrics import THRESHOLDS, ConfusionMatrix, Threshold  # noqa: F401
from ..runtime.metadata import ArtifactMeta

Predict = Callable[[np.ndarray], np.ndarray]  # BGR uint8 frame -> H×W labels


#: ``--data none``: frames without labels (a model not trained on the procedural scenes, and no
#: data set given): latency, and agreement with the reference, but no mean IU.
UNLABELLED = "none"


@dataclass(frozen=True)
class EvalSet:
    """Labelled frames: BGR uint8 images, H×W class ids (``ignore_index`` not scored);
    ``labels`` None for unlabelled frames."""

    frames: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...] | None
    num_classes: int
    ignore_index: int | None
    description: str

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class Accuracy:
    """One artifact's figures on an :class:`EvalSet` (``reference_*`` None without one)."""

    mean_iou: float | None           # None on unlabelled frames
    pixel_accuracy: float | None
    agreement: float | None = None
    reference_miou: float | None = None

    @property
    def delta_miou(self) -> float | None:
        """Artifact − reference mean IU in points (×100); None without a reference."""
        if self.reference_miou is None or self.mean_iou is None:
            return None
        return (self.mean_iou - self.reference_miou) * 100.0


def eval_set(meta: ArtifactMeta, data: str = "synthetic", count: int = 16,
             size: tuple[int, int] | None = None, split: str = "val",
             layout: str | None = None) -> EvalSet:
    """The first ``count`` validation samples of ``data``.

    ``synthetic`` renders the checkpoint's procedural validation scenes (its difficulty) at
    ``size`` (default: the artifact's optimal size); ``none`` renders such scenes without their
    labels, for a model trained on other classes; a folder is opened with its detected (or
    the given) layout and its images are kept at their own sizes.
    """
    if count < 1:
        raise InputError(f"the evaluation needs at least one image, got count={count}")
    if data == UNLABELLED:
        size = size or (meta.shapes.opt[1], meta.shapes.opt[2])
        scenes = open_dataset("synthetic", split, num_images=count, size=size)
        frames = tuple(np.ascontiguousarray(scenes[i].image[..., ::-1]) for i in range(count))
        return EvalSet(frames, None, meta.num_classes, None,
                       f"{count} procedural scenes of {size[0]}×{size[1]}, unlabelled "
                       f"(agreement with the reference only; pass --data for mean IU)")
    if data == "synthetic":
        if size is None:
            size = (meta.shapes.opt[1], meta.shapes.opt[2])
        difficulty = meta.dataset.difficulty or "standard"
        dataset = open_dataset("synthetic", split, num_images=count, size=size,
                               difficulty=difficulty)
        what = f"{count} procedural {difficulty} validation scenes of {size[0]}×{size[1]}"
    else:
        dataset = open_dataset(data, split, layout)
        what = f"{min(count, len(dataset))} images of {data} ({split})"
    if dataset.num_classes != meta.num_classes:
        raise InputError(f"{data} has {dataset.num_classes} classes but the model predicts "
                         f"{meta.num_classes}: evaluate on data the model was trained for")
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    if not samples:
        raise InputError(f"{data} ({split}) has no images to evaluate on")
    frames = tuple(np.ascontiguousarray(s.image[..., ::-1]) for s in samples)  # RGB -> BGR
    return EvalSet(frames, tuple(s.mask for s in samples), dataset.num_classes,
                   dataset.ignore_index, what)


def predict_all(predict: Predict, data: EvalSet) -> list[np.ndarray]:
    """The label map of every frame, one call each (as a video application makes them)."""
    return [np.asarray(predict(frame)) for frame in data.frames]


def score(predictions: Sequence[np.ndarray], data: EvalSet,
          reference: Sequence[np.ndarray] | None = None) -> Accuracy:
    """Mean IU and pixel accuracy of ``predictions``; with ``reference`` (the PyTorch fp32
    labels on the same frames) also its mean IU and the label agreement with it."""
    if len(predictions) != len(data):
        raise InputError(f"{len(predictions)} predictions for {len(data)} images")
    if data.labels is None:
        same = agreement(predictions, reference) if reference is not None else None
        return Accuracy(None, None, same)
    ours = _metrics(predictions, data)
    if reference is None:
        return Accuracy(ours.mean_iou, ours.pixel_accuracy)
    theirs = _metrics(reference, data)
    return Accuracy(ours.mean_iou, ours.pixel_accuracy, agreement(predictions, reference, data),
                    theirs.mean_iou)


def agreement(predictions: Sequence[np.ndarray], reference: Sequence[np.ndarray],
              data: EvalSet | None = None) -> float:
    """Share of pixels (labelled ones, when ``data`` is given) whose labels are equal."""
    same = total = 0
    for i, (ours, theirs) in enumerate(zip(predictions, reference, strict=True)):
        if ours.shape != theirs.shape:
            raise InputError(f"image {i}: prediction {ours.shape} vs reference {theirs.shape}")
        keep = np.ones(ours.shape, bool)
        if data is not None and data.ignore_index is not None and data.labels is not None:
            keep = data.labels[i] != data.ignore_index
        same += int(np.count_nonzero((ours == theirs) & keep))
        total += int(np.count_nonzero(keep))
    return same / total if total else 1.0


def _metrics(predictions: Sequence[np.ndarray], data: EvalSet):
    matrix = ConfusionMatrix(data.num_classes, data.ignore_index)
    for pred, truth in zip(predictions, data.labels):
        matrix.update(pred, truth)
    return matrix.compute()


def verdict(accuracy: Accuracy, precision: str) -> tuple[bool, str]:
    """``(passed, why)`` of ``accuracy`` against :data:`THRESHOLDS` for ``precision``."""
    if precision not in THRESHOLDS:
        raise InputError(f"no regression bound for precision {precision!r}; "
                         f"known: {', '.join(THRESHOLDS)}")
    bound = THRESHOLDS[precision]
    if accuracy.delta_miou is None and accuracy.agreement is None:
        return True, "no reference to compare with"
    problems = []
    # A drop of exactly the bound passes: the slack absorbs the rounding of (a − b) × 100.
    if accuracy.delta_miou is not None and \
            accuracy.delta_miou < -bound.max_drop_points - 1e-9:
        problems.append(f"mean IU {accuracy.delta_miou:+.2f} points vs the reference "
                        f"(allowed -{bound.max_drop_points})")
    if bound.min_agreement is not None and accuracy.agreement is not None \
            and accuracy.agreement < bound.min_agreement:
        problems.append(f"labels agree on {accuracy.agreement:.3%} of pixels "
                        f"(needed {bound.min_agreement:.1%})")
    return (not problems, "; ".join(problems) or "within bounds")
