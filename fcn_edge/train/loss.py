"""Per-pixel multinomial logistic loss (paper §3, §4.1) with the paper's options.

The loss of an image is the sum over its pixels of the softmax cross-entropy; pixels labelled
``ignore_index`` (VOC's object borders) do not count. Options:

* ``normalize`` — average over the counted pixels (the "paper" recipe) or sum them, as the
  reference implementation's "heavy" solver does (its learning rate, 1e-10, assumes a sum).
* ``class_weights`` — weight each class's pixels (§4.3 "class balancing"; the paper found it
  unnecessary, but skewed data sets may need it).
* ``sample_p`` — loss sampling (§3.4): each cell of the final layer's stride-32 grid is dropped
  with probability p, so the gradient sees a random subset of receptive fields, as patchwise
  training would, at whole-image cost.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255,
               normalize: bool = True, class_weights: torch.Tensor | None = None,
               sample_p: float = 0.0, cell: int = 32,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Cross-entropy of N×C×H×W ``logits`` against N×H×W ``target`` (class ids, int64)."""
    if sample_p > 0.0:
        target = _drop_cells(target, sample_p, cell, ignore_index, generator)
    losses = F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore_index,
                             reduction="none")
    total = losses.sum()
    if not normalize:
        return total
    counted = target != ignore_index
    if class_weights is not None:
        # F.cross_entropy's weighted mean divides by the summed weights of counted pixels.
        denominator = class_weights[target.clamp(min=0, max=len(class_weights) - 1)][counted].sum()
    else:
        denominator = counted.sum()
    return total / denominator.clamp(min=1)


def _drop_cells(target: torch.Tensor, p: float, cell: int, ignore_index: int,
                generator: torch.Generator | None) -> torch.Tensor:
    """Mark every pixel of a randomly dropped ``cell``×``cell`` block as ignored."""
    n, h, w = target.shape
    grid = (n, -(-h // cell), -(-w // cell))
    keep = torch.rand(grid, generator=generator, device="cpu") >= p
    keep = keep.to(target.device)
    keep = keep.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :h, :w]
    return torch.where(keep, target, torch.full_like(target, ignore_index))
