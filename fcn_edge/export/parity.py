"""Hold an exported artifact to the PyTorch fp32 reference, on real-looking images.

Two measurements, both against the reference model in PyTorch fp32 on the same pixels:

* ``check_parity``: at several sizes (the training size, one that is not a multiple of 32, one
  larger than training), the relative max |Δlogits| (max |Δ| over max |reference|) and the
  share of pixels whose label agrees. fp32 artifacts must reach ≤ 1e-4 and ≥ 99.99 %.
* ``compare_on_dataset``: on a labelled set, mean IU of the artifact and of the reference
  against the ground truth, their difference in points, and the label agreement. This is how
  FP16 and INT8 artifacts are judged: by what they change in the paper's metric.

The artifact is anything that maps its input tensors by name to its output tensors by name
(``infer``), so ONNX Runtime, the ONNX reference evaluator and TensorRT are all held to the same
test. The two sides are prepared independently: the artifact is fed as a runtime would feed it,
from the artifact's metadata (``frames.artifact_feed``); the reference is fed as training fed the model,
from the checkpoint's meta and the model's config (``reference_heads``). So metadata written
wrong — mean and std swapped, the colour order reversed — fails parity instead of passing it
on both sides at once. Models with depth or HHA inputs (paper §5) are fed procedural RGB-D
scenes; models with several heads are held to the bounds on every head.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ..data.procedural import render_scene
from ..errors import ModelFormatError
from ..metrics import ConfusionMatrix
from ..models.checkpoint import checkpoint_meta
from ..runtime.metadata import ArtifactMeta
from ..runtime.modalities import stack_inputs
# The artifact's side of every check is made without torch (the TensorRT gate needs it on boxes
# without torch); these names stay importable from here.
from .frames import Infer, artifact_feed, artifact_input, sample_arrays, scene_arrays  # noqa: F401

FP32_REL_TOL, FP32_AGREEMENT = 1e-4, 0.9999


@dataclass(frozen=True)
class SizeParity:
    """One size's figures; for several heads, the worst head's."""

    height: int
    width: int
    max_abs: float | None      # None for argmax artifacts (labels only)
    rel_max_abs: float | None
    agreement: float
    finite: bool


def parity_sizes(train_size: tuple[int, int] | None) -> list[tuple[int, int]]:
    """The training size, 97×131 (no multiple of 32 or of 8), and 1.5× / 2× training + odd."""
    h, w = train_size or (256, 256)
    return [(h, w), (97, 131), (h * 3 // 2 + 7, w * 2 + 13)]


def scenes(sizes: Iterable[tuple[int, int]], seed: int = 2024) -> list[np.ndarray]:
    """Real-looking RGB test images (procedural scenes), one per size, deterministic."""
    rng = np.random.default_rng(seed)
    return [render_scene(rng, h, w)[0] for h, w in sizes]


def reference_heads(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """PyTorch fp32 logits (1×C×H×W) per head, in the model's head order, through the numpy
    preprocessing with the normalisation and colour order of the checkpoint (``model.meta``)
    and the modalities of the model's config — never the artifact's metadata."""
    trained = checkpoint_meta(model)
    bgr = {**arrays, "rgb": arrays["rgb"][..., ::-1]}
    x = stack_inputs(bgr, model.config.input_names, trained.mean, trained.std,
                     frame_order="bgr", color_order=trained.color_order)
    with torch.no_grad():
        out = model.eval().float()(torch.from_numpy(x))
    if isinstance(out, dict):
        return [out[task].numpy() for task, _ in model.config.heads]
    return [out.numpy()]


def reference_logits(model: nn.Module, image_rgb: np.ndarray) -> np.ndarray:
    """PyTorch fp32 logits (1×C×H×W) of an RGB, one-head model for one RGB image."""
    return reference_heads(model, {"rgb": image_rgb})[0]


def compare_outputs(meta: ArtifactMeta, output: np.ndarray, reference: np.ndarray) -> SizeParity:
    """One size's figures: relative max |Δlogits| (logit artifacts) and label agreement."""
    ref_labels = reference.argmax(1)
    if meta.argmax:
        labels, max_abs, rel = output.astype(np.int64), None, None
        finite = True
    else:
        output = output.astype(np.float32)
        finite = bool(np.isfinite(output).all())
        labels = output.argmax(1)
        max_abs = float(np.abs(output - reference).max()) if finite else float("inf")
        scale = float(np.abs(reference).max())
        rel = max_abs / scale if scale > 0 else max_abs
    agreement = float((labels == ref_labels).mean()) if labels.shape == ref_labels.shape else 0.0
    return SizeParity(int(reference.shape[2]), int(reference.shape[3]), max_abs, rel, agreement,
                      finite)


def compare_heads(meta: ArtifactMeta, outputs: Mapping[str, np.ndarray],
                  references: list[np.ndarray]) -> SizeParity:
    """``compare_outputs`` for every head; the worst figure of each kind."""
    each = [compare_outputs(meta, outputs[name], ref)
            for name, ref in zip(meta.output_names, references)]
    if len(each) == 1:
        return each[0]
    worst = lambda values: None if None in values else max(values)  # noqa: E731
    return SizeParity(each[0].height, each[0].width, worst([r.max_abs for r in each]),
                      worst([r.rel_max_abs for r in each]), min(r.agreement for r in each),
                      all(r.finite for r in each))


def check_parity(model: nn.Module, infer: Infer, meta: ArtifactMeta,
                 sizes: Iterable[tuple[int, int]], *, rel_tol: float | None = FP32_REL_TOL,
                 min_agreement: float = FP32_AGREEMENT, label: str = "fp32") -> list[SizeParity]:
    """Run both at each size; raise ModelFormatError when a figure is out of tolerance."""
    results = []
    for arrays in scene_arrays(meta, list(sizes)):
        outputs = infer(artifact_feed(meta, arrays))
        results.append(compare_heads(meta, outputs, reference_heads(model, arrays)))
    for r in results:
        where = f"{label} artifact at {r.height}×{r.width}"
        if not r.finite:
            raise ModelFormatError(f"{where}: the output has NaN or Inf (overflow)")
        if rel_tol is not None and r.rel_max_abs is not None and r.rel_max_abs > rel_tol:
            raise ModelFormatError(f"{where}: relative max |Δlogits| {r.rel_max_abs:.2e} "
                                   f"exceeds {rel_tol:.0e} against PyTorch")
        if r.agreement < min_agreement:
            raise ModelFormatError(f"{where}: labels agree with PyTorch on {r.agreement:.4%} "
                                   f"of pixels, below {min_agreement:.2%}")
    return results


def compare_on_dataset(model: nn.Module, infer: Infer, meta: ArtifactMeta,
                       samples: Iterable) -> dict:
    """Mean IU (and agreement) of artifact and reference on labelled ``samples``; for several
    heads, the first head's figures plus ``tasks``: every head's, by task."""
    tasks = list(meta.tasks) or [None]
    counts = [h.num_classes for h in meta.heads] or [meta.num_classes]
    ours = [ConfusionMatrix(n, meta.ignore_index) for n in counts]
    theirs = [ConfusionMatrix(n, meta.ignore_index) for n in counts]
    agree, total, count = [0] * len(tasks), 0, 0
    for sample in samples:
        count += 1
        arrays = sample_arrays(sample, meta.modalities)
        references = reference_heads(model, arrays)
        outputs = infer(artifact_feed(meta, arrays))
        for i, (task, name) in enumerate(zip(tasks, meta.output_names)):
            output = outputs[name]
            if not meta.argmax and not np.isfinite(output).all():
                raise ModelFormatError(f"the {meta.precision} artifact gives NaN or Inf on "
                                       f"{sample.name} (overflow)")
            labels = output[0] if meta.argmax else output[0].argmax(0)
            ref_labels = references[i][0].argmax(0)
            truth = sample.mask if task is None else (sample.masks or {})[task]
            ours[i].update(labels, truth)
            theirs[i].update(ref_labels, truth)
            agree[i] += int((labels == ref_labels).sum())
        total += references[0][0, 0].size
    figures = [_figures(o.compute(), t.compute(), a / max(total, 1), count)
               for o, t, a in zip(ours, theirs, agree)]
    if tasks == [None]:
        return figures[0]
    return {**figures[0], "tasks": dict(zip(tasks, figures))}


def _figures(mine, ref, agreement: float, count: int) -> dict[str, float]:
    return {"mean_iou": mine.mean_iou, "reference_mean_iou": ref.mean_iou,
            "delta_miou_points": 100.0 * (mine.mean_iou - ref.mean_iou),
            "agreement": agreement, "images": count}


def as_dicts(results: list[SizeParity]) -> list[dict]:
    return [asdict(r) for r in results]
