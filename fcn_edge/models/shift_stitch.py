"""Shift-and-stitch (paper §3.2): dense output from a coarse net without interpolation.

For a net whose output has stride ``f``, shift the input by ``(dx, dy)`` for every
``0 ≤ dx, dy < f``, run the net on each of the f² shifted inputs, and interleave the outputs so
each prediction lands on the pixel its cell reads (up to the net's fixed cell offset). The
result equals the net with its last ``f``-strided layer made stride 1 and every later filter
rarefied (dilated by ``f``) — the paper's "filter rarefaction" — at f² times the cost of one pass, which is why the
paper prefers learned upsampling with skips (§3.3, §4.2).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def shift_and_stitch(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     factor: int) -> torch.Tensor:
    """Run ``net`` on the f² shifted copies of ``x`` and interleave the outputs.

    Args:
        net: maps N×C×H×W to N×K×h×w with output stride ``factor`` (cell i reads input
            around ``factor·i``), e.g. ``FCN.coarse_scores`` with factor 32.
        x: the input batch.
        factor: the output stride to undo.

    Returns:
        N×K×(h·f)×(w·f) for the unshifted output size h×w: cell ``(i, j)`` of the pass shifted
        by ``(dy, dx)`` goes to ``(f·i + dy, f·j + dx)``. Shifted-in pixels are zeros.
        If the net's cell ``i`` is centred on input pixel ``f·i + o`` (``o`` is the offset of
        ``chain(model.tap_geometry()[32])``), output pixel ``r`` is the prediction centred on
        input pixel ``r + o``: aligned as it is for FCN-ResNet18 (o = 0); VGG16 and AlexNet
        cells sit 15.5 and 15 pixels in, so their stitched maps are shifted by that much.
    """
    if factor < 1:
        raise ValueError(f"factor must be ≥ 1, got {factor}")
    h, w = x.shape[-2:]
    outputs = []
    for dy in range(factor):
        for dx in range(factor):
            # Shift the content up/left by (dy, dx): the pass then sees input pixel f·i + dy
            # where the unshifted pass saw f·i.
            shifted = F.pad(x[..., dy:, dx:], (0, dx, 0, dy))
            outputs.append(net(shifted))
    n, k, oh, ow = outputs[0].shape
    if any(o.shape != outputs[0].shape for o in outputs):
        raise ValueError("the net's output size changed with the shift; pad the input to a "
                         "multiple of the factor first")
    # (dy, dx, n, k, oh, ow) → (n, k, oh, dy, ow, dx) → dense map.
    stacked = torch.stack(outputs).reshape(factor, factor, n, k, oh, ow)
    return stacked.permute(2, 3, 4, 0, 5, 1).reshape(n, k, oh * factor, ow * factor)
