"""The module that is traced into ONNX: the FCN plus, optionally, its pre- and post-processing.

``--raw-io`` moves preprocessing into the graph: the artifact takes the N×H×W×3 uint8 BGR frames
OpenCV delivers, and casts, reorders channels, normalises and transposes inside, where an
accelerator does it for free instead of the host's numpy. ``--argmax`` moves the last step of
postprocessing in: N×H×W labels come out instead of N×C×H×W float scores, C times less to copy
back. Both are checked against ``fcn_edge.runtime.processing``, the numpy definition the
runtime uses for plain artifacts.

Models with several inputs (paper §5, RGB-D) take one tensor per modality, in the model's
channel order, concatenated inside the graph; depth and HHA arrive already encoded
(``runtime.modalities``), raw IO only changes the RGB input. Models with several heads give one
output per task, in head order.

Both in-graph steps are written the way TensorRT's ONNX parser can build them (checked on every
TensorRT-bound export by ``trt_compat``): a uint8 network input may feed only a Cast (no other
TensorRT layer takes uint8), so frames are cast to float *before* the NHWC → NCHW transpose;
and TensorRT converts uint8 only to and from float32/float16, so ArgMax's integer labels reach
uint8 through float32 (exact: every label is below 256). Labels wider than uint8 (more than
256 classes, or ``labels_dtype="int32"``) are cast straight to int32.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..runtime.metadata import input_tensor_name, output_tensor_name
from ..errors import InputError
from ..runtime.processing import labels_dtype, normalization_affine

_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.int32): torch.int32}
LABELS_DTYPES = ("auto", "uint8", "int32")


def head_labels_dtype(num_classes: int, requested: str = "auto") -> np.dtype:
    """The labels dtype of a head with ``num_classes`` classes: ``auto`` is uint8 while every
    label fits (≤ 256 classes), else int32; ``int32`` on request (e.g. a consumer that reads
    int32 only); ``uint8`` is refused when the labels cannot fit."""
    if requested not in LABELS_DTYPES:
        raise InputError(f"labels dtype {requested!r}: choose one of {', '.join(LABELS_DTYPES)}")
    fits = labels_dtype(num_classes)
    if requested == "uint8" and fits != np.uint8:
        raise InputError(f"uint8 labels hold at most 256 classes and this model has "
                         f"{num_classes}: export with --labels-dtype int32 (or auto)")
    return np.dtype(np.int32) if requested == "int32" else fits


class DeployGraph(nn.Module):
    """``model`` wrapped with in-graph preprocessing (``raw_io``) and argmax (``argmax``)."""

    def __init__(self, model: nn.Module, *, raw_io: bool = False, argmax: bool = False,
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), color_order: str = "rgb",
                 labels_dtype: str = "auto") -> None:
        super().__init__()
        self.model, self.raw_io, self.argmax = model, raw_io, argmax
        self.flip_channels = color_order == "rgb"  # frames arrive BGR
        scale, bias = normalization_affine(mean, std)
        self.register_buffer("scale", torch.from_numpy(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("bias", torch.from_numpy(bias).view(1, 3, 1, 1), persistent=False)
        config = model.config
        self.modalities = config.input_names
        self.tasks = tuple(task for task, _ in config.heads)
        counts = [n for _, n in config.heads] or [int(config.num_classes)]
        self.labels_dtypes = [_TORCH_DTYPES[head_labels_dtype(n, labels_dtype)] for n in counts]
        self.input_names = [input_tensor_name(m, raw_io) for m in self.modalities]
        self.output_names = [output_tensor_name(t, argmax) for t in self.tasks] or \
            [output_tensor_name(None, argmax)]

    def forward(self, *inputs: torch.Tensor):
        parts = [self._rgb(x) if m == "rgb" else x for m, x in zip(self.modalities, inputs)]
        scores = self.model(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
        heads = [scores[t] for t in self.tasks] if self.tasks else [scores]
        if self.argmax:
            heads = [_labels(s.argmax(1), dtype) for s, dtype in zip(heads, self.labels_dtypes)]
        return heads[0] if len(heads) == 1 else tuple(heads)

    def _rgb(self, x: torch.Tensor) -> torch.Tensor:
        if not self.raw_io:
            return x
        x = x.float().permute(0, 3, 1, 2)  # Cast first: TensorRT's uint8 input feeds a Cast only
        if self.flip_channels:
            x = x.flip(1)
        return x * self.scale + self.bias


def _labels(indices: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ArgMax's int64 indices as ``dtype``: uint8 through float32 (TensorRT casts uint8 only
    to and from float; exact, as every label < 256), int32 directly."""
    if dtype == torch.uint8:
        return indices.to(torch.float32).to(torch.uint8)
    return indices.to(dtype)
