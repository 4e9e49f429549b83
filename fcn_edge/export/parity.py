"""Hold an exported artifact to the PyTorch fp32 reference, on real-looking images.

Two measurements, both against the reference model in PyTorch fp32 on the same pixels:

* ``check_parity``: at several sizes (the training size, one that is not a multiple of 32, one
  larger than training), the relative max |Δlogits| (max |Δ| over max |reference|) and the
  share of pixels whose label agrees. fp32 artifacts must reach ≤ 1e-4 and ≥ 99.99 %.
* ``compare_on_dataset``: on a labelled set, mean IU of the artifact and of the reference
  against the ground truth, their difference in points, and the label agreement. This is how
  FP16 and INT8 artifacts are judged: by what they change in the paper's metric.

The artifact is anything callable on the artifact's input array (``infer``), so ONNX Runtime,
the ONNX reference evaluator and TensorRT are all held to the same test.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..data.procedural import render_scene
from ..errors import ModelFormatError
from ..metrics import ConfusionMatrix
from ..runtime.metadata import ArtifactMeta
from ..runtime.processing import frames_to_input

Infer = Callable[[np.ndarray], np.ndarray]
FP32_REL_TOL, FP32_AGREEMENT = 1e-4, 0.9999


@dataclass(frozen=True)
class SizeParity:
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


def artifact_input(meta: ArtifactMeta, image_rgb: np.ndarray) -> np.ndarray:
    """What the artifact takes for one RGB image: BGR uint8 frames (raw IO) or the normalised
    N×3×H×W float32 batch, made by the runtime's own preprocessing."""
    bgr = np.ascontiguousarray(image_rgb[..., ::-1])[None]
    if meta.raw_io:
        return bgr
    return frames_to_input(bgr, meta.mean, meta.std, meta.color_order, frame_order="bgr")


def reference_logits(model: nn.Module, meta: ArtifactMeta, image_rgb: np.ndarray) -> np.ndarray:
    """PyTorch fp32 logits (1×C×H×W) for one RGB image, through the same numpy preprocessing."""
    bgr = np.ascontiguousarray(image_rgb[..., ::-1])[None]
    batch = frames_to_input(bgr, meta.mean, meta.std, meta.color_order, frame_order="bgr")
    with torch.no_grad():
        return model.eval().float()(torch.from_numpy(batch)).numpy()


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


def check_parity(model: nn.Module, infer: Infer, meta: ArtifactMeta,
                 sizes: Iterable[tuple[int, int]], *, rel_tol: float | None = FP32_REL_TOL,
                 min_agreement: float = FP32_AGREEMENT, label: str = "fp32") -> list[SizeParity]:
    """Run both at each size; raise ModelFormatError when a figure is out of tolerance."""
    sizes = list(sizes)
    results = []
    for image in scenes(sizes):
        output = infer(artifact_input(meta, image))
        results.append(compare_outputs(meta, output, reference_logits(model, meta, image)))
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
                       samples: Iterable) -> dict[str, float]:
    """Mean IU (and agreement) of artifact and reference on labelled ``samples``."""
    ours = ConfusionMatrix(meta.num_classes, meta.ignore_index)
    theirs = ConfusionMatrix(meta.num_classes, meta.ignore_index)
    agree = total = count = 0
    for sample in samples:
        count += 1
        reference = reference_logits(model, meta, sample.image)
        output = infer(artifact_input(meta, sample.image))
        if not meta.argmax and not np.isfinite(output).all():
            raise ModelFormatError(f"the {meta.precision} artifact gives NaN or Inf on "
                                   f"{sample.name} (overflow)")
        labels = output[0] if meta.argmax else output[0].argmax(0)
        ref_labels = reference[0].argmax(0)
        ours.update(labels, sample.mask)
        theirs.update(ref_labels, sample.mask)
        agree += int((labels == ref_labels).sum())
        total += labels.size
    mine, ref = ours.compute(), theirs.compute()
    return {"mean_iou": mine.mean_iou, "reference_mean_iou": ref.mean_iou,
            "delta_miou_points": 100.0 * (mine.mean_iou - ref.mean_iou),
            "agreement": agree / max(total, 1), "images": count}


def as_dicts(results: list[SizeParity]) -> list[dict]:
    return [asdict(r) for r in results]
