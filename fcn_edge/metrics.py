"""Segmentation metrics of FCN (Long, Shelhamer & Darrell, 2015), §5 "Results".

All four metrics come from the confusion matrix n_ij (pixels of class i predicted as
class j), with t_i = Σ_j n_ij the number of pixels of class i:

* pixel accuracy          Σ_i n_ii / Σ_i t_i
* mean accuracy           (1/n_cl) Σ_i n_ii / t_i
* mean IU                 (1/n_cl) Σ_i n_ii / (t_i + Σ_j n_ji − n_ii)
* frequency-weighted IU   (Σ_k t_k)^−1 Σ_i t_i n_ii / (t_i + Σ_j n_ji − n_ii)

Where the paper divides by n_cl, the means here run over the classes whose term is
defined, as the authors' reference ``score.py`` does with ``np.nanmean``: a class absent
from truth *and* prediction has no IU and does not count; a class with t_i = 0 has no
accuracy (0/0) and does not count in mean accuracy; a class predicted but never true has
IU 0 and *does* count in mean IU, so false positives are penalised.

The regression bounds an artifact is held to against its reference (``THRESHOLDS``, per
precision) live here too: the bench's verdict and the TensorRT build's accuracy gate both read
them, and the gate runs on edge boxes.

numpy only: evaluation must run on edge boxes that have no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fcn_edge.errors import InputError

__all__ = ["ConfusionMatrix", "SegmentationMetrics", "Threshold", "THRESHOLDS"]

# Pixels per bincount. 2**18 measured fastest (the small index array and bincount's own
# int64 copy stay in cache), and it bounds the scratch memory whatever the input size.
_CHUNK = 2**18
# Largest dense bincount over a chunk's label range; wider ranges drop ignored pixels first.
_MAX_BINS = 2**18
_MAX_SHOWN = 5  # offending values listed in an error message
_SUMMARY = (("pixel_accuracy", "pixel accuracy"), ("mean_accuracy", "mean accuracy"),
            ("mean_iou", "mean IU"), ("fw_iou", "f.w. IU"))  # (field, label in tables)


@dataclass(frozen=True, eq=False)  # eq=False: a generated __eq__ on arrays is ambiguous
class SegmentationMetrics:
    """The four §5 metrics (fractions in [0, 1]) and per-class values, NaN where undefined.

    ``accuracy[i]`` is NaN when class i never occurs in the truth (t_i = 0); ``iou[i]`` is
    NaN when it occurs in neither truth nor prediction. All four are NaN with no pixels.
    """

    pixel_accuracy: float
    mean_accuracy: float
    mean_iou: float
    fw_iou: float
    iou: np.ndarray
    accuracy: np.ndarray
    present: np.ndarray
    num_pixels: int

    def __post_init__(self) -> None:
        for array in (self.iou, self.accuracy, self.present):
            array.setflags(write=False)  # frozen means frozen, arrays included

    def _names(self, class_names: Sequence[str] | None) -> list[str]:
        if class_names is None:
            return [str(i) for i in range(len(self.iou))]
        names = [str(name) for name in class_names]
        if len(names) != len(self.iou):
            raise InputError(f"got {len(names)} class names for {len(self.iou)} classes; "
                             "pass exactly one name per class")
        return names

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Plain Python values for JSON: floats, ints, lists; NaN becomes None."""
        out: dict[str, Any] = {field: _json_float(getattr(self, field)) for field, _ in _SUMMARY}
        out.update(num_pixels=int(self.num_pixels), class_names=self._names(class_names),
                   iou=[_json_float(v) for v in self.iou],
                   accuracy=[_json_float(v) for v in self.accuracy],
                   present=[bool(v) for v in self.present])
        return out

    def format_table(self, class_names: Sequence[str] | None = None) -> str:
        """The four metrics, then per-class IoU and accuracy, in percent ("—": undefined)."""
        names = self._names(class_names)
        lines = [f"{label:<16}{_percent(getattr(self, field)):>7}" for field, label in _SUMMARY]
        lines += [f"{'pixels':<16}{self.num_pixels:>7,}", ""]
        width = max(len("class"), *map(len, names))
        lines.append(f"{'class':<{width}}  {'IoU':>6}  {'acc':>6}")
        for name, iou, acc in zip(names, self.iou, self.accuracy):
            lines.append(f"{name:<{width}}  {_percent(iou):>6}  {_percent(acc):>6}")
        return "\n".join(lines)


class ConfusionMatrix:
    """Streaming confusion matrix ``matrix[i, j]`` = n_ij: truth i (row) predicted j (column).

    Args:
        num_classes: number of classes n_cl; labels are 0 … n_cl − 1.
        ignore_index: target label whose pixels are skipped (VOC's 255 border), or None.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        self.num_classes, self.ignore_index = _check_settings(num_classes, ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @classmethod
    def from_matrix(cls, matrix: Any, ignore_index: int | None = 255) -> ConfusionMatrix:
        """Wrap an existing square, non-negative integer matrix (copied)."""
        m = _as_int_array(matrix, "matrix", "counts.astype(np.int64)")
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise InputError(f"matrix must be square (num_classes × num_classes), got shape "
                             f"{m.shape}; pass the n_ij counts, rows = truth, columns = prediction")
        if m.size and m.min() < 0:
            raise InputError(f"matrix holds negative counts (min {int(m.min())}); "
                             "pass pixel counts, which are never negative")
        cm = cls(m.shape[0], ignore_index)
        cm.matrix += m
        return cm

    def reset(self) -> None:
        """Forget every pixel counted so far."""
        self.matrix.fill(0)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts (e.g. another worker's) in place and return self."""
        if not isinstance(other, ConfusionMatrix):
            raise InputError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise InputError(f"cannot merge {other!r} into {self!r}: num_classes and "
                             "ignore_index must match; build every worker's matrix alike")
        self.matrix += other.matrix
        return self

    def update(self, pred: Any, target: Any) -> None:
        """Count the pixels of same-shape integer maps (H×W, N×H×W or N×1×H×W).

        Raises:
            InputError: non-integer input, mismatched shapes, a target label outside
                [0, num_classes) that is not ignore_index, or a prediction outside it.
        """
        p, t = _as_label_pair(pred, target)
        # Count into scratch so that a bad value in a late chunk leaves self untouched.
        counts = np.zeros_like(self.matrix)
        for start in range(0, t.size, _CHUNK):
            self._count_chunk(p[start:start + _CHUNK], t[start:start + _CHUNK], counts)
        self.matrix += counts

    def _count_chunk(self, p: np.ndarray, t: np.ndarray, out: np.ndarray) -> None:
        nc = self.num_classes
        if p.min() < 0 or p.max() >= nc:
            bad = np.unique(p[(p < 0) | (p >= nc)])
            raise InputError(f"pred holds class ids outside [0, {nc}): {_show(bad)}; predictions "
                             f"may not contain the ignore label ({self.ignore_index}); pass the "
                             f"argmax over the {nc} class scores")
        lo, hi = int(t.min()), int(t.max())
        too_wide = (hi - lo + 1) * nc > max(nc * nc, _MAX_BINS)
        if too_wide and self.ignore_index is not None:
            # A far-off ignore label (e.g. 65535) would need a huge dense bincount, so pay
            # for a mask instead; valid labels alone span at most nc rows.
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
            if t.size == 0:
                return
            lo, hi = int(t.min()), int(t.max())
            too_wide = (hi - lo + 1) * nc > max(nc * nc, _MAX_BINS)
        if too_wide:  # only out-of-range labels can still widen the range
            self._raise_bad_target(np.unique(t[(t < 0) | (t >= nc)]))
        # Counting every label in [lo, hi], ignored ones included, skips a costly mask:
        # ignored rows are dropped afterwards and invalid rows show up as non-zero counts.
        counts = _bincount_rows(p, t, lo, hi - lo + 1, nc)
        labels = np.arange(lo, hi + 1)
        valid = (labels >= 0) & (labels < nc)
        bad = ~valid & (counts.sum(axis=1) > 0)
        if self.ignore_index is not None:
            bad &= labels != self.ignore_index
        if bad.any():
            self._raise_bad_target(labels[bad])
        out[labels[valid]] += counts[valid]

    def _raise_bad_target(self, bad: np.ndarray) -> None:
        raise InputError(f"target holds labels outside [0, {self.num_classes}) that are not "
                         f"ignore_index={self.ignore_index}: {_show(bad)}; num_classes="
                         f"{self.num_classes}: fix the label encoding or set ignore_index")

    def compute(self) -> SegmentationMetrics:
        """The §5 metrics of every pixel counted so far."""
        m = self.matrix
        n_ii = np.diag(m).astype(np.float64)
        truth = m.sum(axis=1)  # t_i
        union = truth + m.sum(axis=0) - np.diag(m)  # t_i + Σ_j n_ji − n_ii
        total = int(truth.sum())
        has_truth, present = truth > 0, union > 0
        accuracy = _ratio(n_ii, truth, has_truth)
        iou = _ratio(n_ii, union, present)
        # Classes with t_i = 0 weigh nothing in fw IU, so sum over has_truth (⊂ present).
        weighted = float(truth[has_truth] @ iou[has_truth])
        return SegmentationMetrics(
            pixel_accuracy=float(n_ii.sum()) / total if total else math.nan,
            mean_accuracy=_masked_mean(accuracy, has_truth),
            mean_iou=_masked_mean(iou, present),
            fw_iou=weighted / total if total else math.nan,
            iou=iou, accuracy=accuracy, present=present, num_pixels=total)

    def __repr__(self) -> str:
        return (f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index="
                f"{self.ignore_index}, pixels={int(self.matrix.sum()):,})")


@dataclass(frozen=True)
class Threshold:
    """How far an artifact may fall below the reference: ΔmIoU in points, and the least label
    agreement (None: not held). One-sided: being better than the reference never fails."""

    max_drop_points: float
    min_agreement: float | None = None


#: The regression bounds (tests/regression, the bench's verdict column and the TensorRT build's
#: accuracy gate). Stricter than mmdeploy's regression tolerances; fp16 and int8 are allowed to
#: move labels, so only their mean IU is held.
THRESHOLDS = {"fp32": Threshold(0.1, 0.999), "fp16": Threshold(0.5), "int8": Threshold(2.0)}


def _check_settings(num_classes: Any, ignore_index: Any) -> tuple[int, int | None]:
    """Validated (num_classes, ignore_index); bool is rejected although it is an int."""
    def is_int(x: Any) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not is_int(num_classes) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
    if ignore_index is None:
        return int(num_classes), None
    if not is_int(ignore_index):
        raise InputError(f"ignore_index must be an integer or None, got {ignore_index!r}")
    if 0 <= ignore_index < num_classes:
        raise InputError(f"ignore_index={ignore_index} is a real class id for num_classes="
                         f"{num_classes}; pick a label outside [0, {num_classes}) such as "
                         f"{255 if num_classes <= 255 else -1}, or None")
    return int(num_classes), int(ignore_index)


def _as_int_array(x: Any, name: str, hint: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} cannot be made into an array ({exc}); "
                         "pass a numpy array of integer class ids") from exc
    if a.dtype.kind not in "iu":
        raise InputError(f"{name} must hold integer class ids, got {a.dtype}; "
                         f"pass integer class ids, e.g. {hint}")
    return a


def _as_label_pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated flat (pred, target) views; an N×1×H×W channel axis is squeezed."""
    p = _as_int_array(pred, "pred", "logits.argmax(1)")
    t = _as_int_array(target, "target", "target.astype(np.int64)")
    p_flat, t_flat = _squeeze_channel(p), _squeeze_channel(t)
    if p_flat.shape != t_flat.shape:
        hint = (" (pred looks like per-class scores: take pred.argmax(1))"
                if p_flat.ndim == t_flat.ndim + 1 else "")
        raise InputError(f"pred and target shapes differ: pred {p.shape} vs target {t.shape}; "
                         f"pass label maps of one shape (H×W, N×H×W or N×1×H×W){hint}")
    # reshape copies only non-contiguous input; chunks then bound every further temporary.
    return p_flat.reshape(-1), t_flat.reshape(-1)


def _squeeze_channel(a: np.ndarray) -> np.ndarray:
    return a[:, 0] if a.ndim == 4 and a.shape[1] == 1 else a


def _bincount_rows(p: np.ndarray, t: np.ndarray, lo: int, rows: int, nc: int) -> np.ndarray:
    """Count (label, class) pairs, label in [lo, lo + rows), as a rows × nc array."""
    bins = rows * nc
    # The smallest unsigned dtype holding every index halves or quarters the memory
    # traffic; wrap-around arithmetic in it is exact because each true index is < bins.
    dtype = np.min_scalar_type(bins)
    idx = t.astype(dtype)
    if lo:
        idx -= np.asarray(lo).astype(dtype)
    idx *= nc
    idx += p.astype(dtype, copy=False)
    return np.bincount(idx, minlength=bins).reshape(rows, nc)


def _ratio(num: np.ndarray, den: np.ndarray, defined: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, math.nan)
    np.divide(num, den, out=out, where=defined)  # `where` avoids 0/0 RuntimeWarnings
    return out


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else math.nan


def _show(values: np.ndarray) -> str:
    shown = [int(v) for v in values[:_MAX_SHOWN]]
    more = f" (first {_MAX_SHOWN} of {len(values)})" if len(values) > _MAX_SHOWN else ""
    return f"{shown}{more}"


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _percent(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f}%"
