"""Bottom/right zero padding whose amount depends on the input size, exportable as such.

An AlexNet FCN needs inputs of at least ``minimum`` pixels (its 11×11/4 conv1 and three
stride-2 pools, see ``FCN._input_padding``), so smaller inputs are padded up to it. In eager
PyTorch that is ``max(0, minimum - H)``; a traced ONNX graph would freeze that Python ``max``
into a constant of the example's size, and a smaller input would then run a convolution on an
empty map (ONNX Runtime dies with SIGFPE). So during ONNX export this op emits the arithmetic
itself: ``Shape → Sub → Max(0) → Add(margin) → Pad``, exact for every height and width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_minimum(x: torch.Tensor, margin: int, minimum: int) -> torch.Tensor:
    """Zero-pad N×C×H×W ``x`` by ``margin + max(0, minimum - size)`` rows and columns."""
    if minimum <= 1:  # every input is already large enough: a constant pad traces exactly
        return F.pad(x, (0, margin, 0, margin)) if margin else x
    if torch.onnx.is_in_onnx_export():
        return _PadToMinimum.apply(x, margin, minimum)
    return _pad(x, margin, minimum)


def _pad(x: torch.Tensor, margin: int, minimum: int) -> torch.Tensor:
    pad_h = margin + max(0, minimum - x.shape[2])
    pad_w = margin + max(0, minimum - x.shape[3])
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


class _PadToMinimum(torch.autograd.Function):
    """One graph node during export; eager arithmetic otherwise."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, margin: int, minimum: int) -> torch.Tensor:  # noqa: D102
        return _pad(x, margin, minimum)

    @staticmethod
    def symbolic(g, x, margin: int, minimum: int):  # noqa: D102
        def const(values: list[int]):
            return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

        size = g.op("Slice", g.op("Shape", x), const([2]), const([4]))        # [H, W]
        short = g.op("Max", g.op("Sub", const([minimum, minimum]), size), const([0, 0]))
        extra = g.op("Add", short, const([margin, margin]))
        # ONNX Pad: all begins, then all ends: N, C, H, W begin at 0; H and W end at `extra`.
        pads = g.op("Concat", const([0, 0, 0, 0, 0, 0]), extra, axis_i=0)
        return g.op("Pad", x, pads, mode_s="constant")
